package lbipam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"routeagent.io/route-agent/bgp/config"
	"routeagent.io/route-agent/bgp/lbipam/allocator"
)

// DefaultLeaseName is the Lease the agents compete for.
const DefaultLeaseName = "route-agent-lbipam"

// Options configures a Controller.
type Options struct {
	// Namespace holds the Lease; the agent's own namespace.
	Namespace string
	// LeaseName defaults to DefaultLeaseName.
	LeaseName string
	// Identity names this agent in the Lease: its node name.
	Identity string
	// Recorder receives the Events on Services. When nil, Run sends
	// them to the API server.
	Recorder record.EventRecorder
	Logger   *slog.Logger
}

// leaseTiming holds the leader-election periods; tests shorten them.
type leaseTiming struct {
	duration, renewDeadline, retryPeriod time.Duration
}

// Controller allocates LoadBalancer addresses while it holds the Lease.
type Controller struct {
	client   kubernetes.Interface
	opts     Options
	log      *slog.Logger
	timing   leaseTiming
	workers  int
	recorder record.EventRecorder

	// termMu is held for a whole term of leadership, so that two terms
	// of this process never overlap.
	termMu sync.Mutex

	mu         sync.Mutex
	pools      []config.Pool
	inForce    bool
	poolsKnown bool
	leader     string
	term       *term                    // nil unless leading
	results    map[string]*serviceState // by namespace/name; this term only
}

// term is what exists while the controller leads.
type term struct {
	alloc  *allocator.Allocator
	queue  workqueue.TypedRateLimitingInterface[string]
	lister corelisters.ServiceLister
}

// serviceState is the outcome for one Service and the last Event sent
// about it, so that resyncs do not repeat Events.
type serviceState struct {
	ServiceStatus
	lastEvent string
}

// Status is the controller's state, for routectl.
type Status struct {
	// Leader is the identity of the agent holding the Lease, as last
	// observed; empty if none was seen yet.
	Leader string
	// Leading is true when this agent allocates.
	Leading bool
	// ConfigInForce is false while there is no bgp-config.
	ConfigInForce bool
	// Services holds the outcome for each Service the agent serves,
	// sorted by name. Only the leader knows them.
	Services []ServiceStatus
}

// ServiceStatus is the outcome for one Service.
type ServiceStatus struct {
	Service string // namespace/name
	Addrs   []netip.Addr
	Pool    string
	// Orphaned is true when the Service keeps addresses that no
	// configured pool holds any more.
	Orphaned bool
	// Pending says why the Service has no address, or, when it has
	// Addrs, why the change it asks for cannot be made.
	Pending string
	// Reason classifies Pending; see allocator.Reason.
	Reason allocator.Reason
}

// New returns a Controller. It allocates nothing until Run wins the Lease
// and SetPools has been called once.
func New(client kubernetes.Interface, opts Options) (*Controller, error) {
	if client == nil {
		return nil, errors.New("lbipam: no Kubernetes client")
	}
	if opts.Namespace == "" {
		return nil, errors.New("lbipam: Options.Namespace (the Lease's namespace) is empty")
	}
	if opts.Identity == "" {
		return nil, errors.New("lbipam: Options.Identity (the node name) is empty")
	}
	if opts.LeaseName == "" {
		opts.LeaseName = DefaultLeaseName
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Controller{
		client:   client,
		opts:     opts,
		log:      log.With("lease", opts.Namespace+"/"+opts.LeaseName),
		timing:   leaseTiming{duration: 15 * time.Second, renewDeadline: 10 * time.Second, retryPeriod: 2 * time.Second},
		workers:  2,
		recorder: opts.Recorder,
	}, nil
}

// SetPools installs the address pools of a new bgp-config. inForce is
// false when there is no bgp-config: nothing new is allocated, and
// Services keep what they have. Assignments from pools that disappear are
// kept until their Services go.
func (c *Controller) SetPools(pools []config.Pool, inForce bool) {
	c.mu.Lock()
	c.pools, c.inForce, c.poolsKnown = slices.Clone(pools), inForce, true
	t := c.term
	if t != nil {
		t.alloc.SetPools(c.pools)
	}
	c.mu.Unlock()
	if t != nil {
		c.enqueueAll(t)
	}
}

// Status returns a copy of the controller's state.
func (c *Controller) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := Status{Leader: c.leader, Leading: c.term != nil, ConfigInForce: c.inForce}
	for _, s := range c.results {
		ss := s.ServiceStatus
		ss.Addrs = slices.Clone(ss.Addrs)
		st.Services = append(st.Services, ss)
	}
	slices.SortFunc(st.Services, func(a, b ServiceStatus) int { return strings.Compare(a.Service, b.Service) })
	return st
}

// Run competes for the Lease and allocates while it holds it, until ctx
// ends. A lost Lease sends it back to competing.
func (c *Controller) Run(ctx context.Context) error {
	if c.recorder == nil {
		b := record.NewBroadcaster(record.WithContext(ctx))
		b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
		defer b.Shutdown()
		c.recorder = b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "route-agent", Host: c.opts.Identity})
	}
	for ctx.Err() == nil {
		if err := c.campaign(ctx); err != nil {
			return err
		}
	}
	return nil
}

// campaign runs one leader election until the Lease is lost or ctx ends.
func (c *Controller) campaign(ctx context.Context) error {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: c.opts.Namespace, Name: c.opts.LeaseName},
		Client:     c.client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: c.opts.Identity},
	}
	// The election runs on its own context so that, on shutdown, the
	// Lease is released only after this agent stopped writing: the next
	// leader never works alongside it.
	electCtx, stopElect := context.WithCancel(context.WithoutCancel(ctx))
	defer stopElect()
	var started atomic.Bool
	termDone := make(chan struct{})
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		Name:            c.opts.LeaseName,
		LeaseDuration:   c.timing.duration,
		RenewDeadline:   c.timing.renewDeadline,
		RetryPeriod:     c.timing.retryPeriod,
		ReleaseOnCancel: true,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(leadCtx context.Context) {
				started.Store(true)
				defer close(termDone)
				workCtx, cancel := context.WithCancel(leadCtx)
				defer cancel()
				defer context.AfterFunc(ctx, cancel)()
				c.lead(workCtx)
			},
			OnStoppedLeading: func() {},
			OnNewLeader: func(id string) {
				c.mu.Lock()
				c.leader = id
				c.mu.Unlock()
				c.log.Info("LoadBalancer address allocation leader", "leader", id, "self", id == c.opts.Identity)
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election on lease %s/%s: %w", c.opts.Namespace, c.opts.LeaseName, err)
	}
	go func() {
		select {
		case <-ctx.Done():
		case <-electCtx.Done():
			return
		}
		if started.Load() {
			<-termDone
		}
		stopElect()
	}()
	le.Run(electCtx)
	return nil
}
