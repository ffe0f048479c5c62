package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"

	bgpconfig "routeagent.io/route-agent/bgp/config"
	"routeagent.io/route-agent/cluster/snapshot"
	"routeagent.io/route-agent/engine"
	masqconfig "routeagent.io/route-agent/masq/config"
)

// BGPConfigKey is the ConfigMap key holding the bgp-config YAML, as in MetalLB.
const BGPConfigKey = "config.yaml"

// IPMasqConfigKey is the ip-masq-agent ConfigMap's key, as in Cilium and
// kubernetes-sigs/ip-masq-agent.
const IPMasqConfigKey = "config"

// WatchOptions says what to watch.
type WatchOptions struct {
	Client   kubernetes.Interface
	NodeName string
	// BGPConfig is the namespace and name of the bgp-config ConfigMap; a
	// zero Name watches none: BGP is off on this node, and the snapshot's
	// BGP section stays zero (Source empty).
	BGPConfig types.NamespacedName
	// IPMasqConfig is the ip-masq-agent ConfigMap; a zero Name watches
	// none.
	IPMasqConfig types.NamespacedName
	Logger       *slog.Logger
	// StateDir, when set, keeps the last good bgp-config across restarts
	// of the agent (see lastgood.go).
	StateDir string
	// Events, when set, records a Warning event on the bgp-config or
	// ip-masq-agent ConfigMap for each content the agent rejects, so
	// `kubectl describe` shows it.
	Events events.EventRecorder
}

// Watch runs informers for Nodes, Services, EndpointSlices and the
// configuration ConfigMaps and calls publish with a fresh snapshot after
// the caches have synced and after every change. Bursts of events are
// coalesced: publish always gets the latest state, never a backlog.
// publish runs on Watch's goroutine; Watch returns when ctx ends.
func Watch(ctx context.Context, opts WatchOptions, publish func(*snapshot.Cluster)) error {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	// No informer resync: the caches stay current through the watch, and
	// the agent's reconcile loop re-applies the desired state on its own
	// period.
	factory := informers.NewSharedInformerFactory(opts.Client, 0)
	dirty := engine.NewTrigger()
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { dirty.Fire() },
		UpdateFunc: func(any, any) { dirty.Fire() },
		DeleteFunc: func(any) { dirty.Fire() },
	}
	nodeInformer := factory.Core().V1().Nodes()
	// Every agent caches every Node: slimNode keeps only what it reads,
	// so a large cluster stays cheap.
	if err := nodeInformer.Informer().SetTransform(slimNode); err != nil {
		return fmt.Errorf("watching nodes: %w", err)
	}
	if _, err := nodeInformer.Informer().AddEventHandler(handler); err != nil {
		return fmt.Errorf("watching nodes: %w", err)
	}
	// A Node heartbeat or a ConfigMap edit leaves the Services as they
	// were: only an event of theirs makes build read 10,000 of them again.
	servicesChanged := &atomic.Bool{}
	servicesChanged.Store(true)
	markServices := func() { servicesChanged.Store(true); dirty.Fire() }
	services, err := watchServices(factory, cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { markServices() },
		UpdateFunc: func(any, any) { markServices() },
		DeleteFunc: func(any) { markServices() },
	})
	if err != nil {
		return err
	}
	factories := []informers.SharedInformerFactory{factory}
	// Only the one ConfigMap each: the agent's RBAC allows no more, and
	// every node watching all ConfigMaps of kube-system would load the API
	// server.
	watchConfigMap := func(ref types.NamespacedName) (corelisters.ConfigMapLister, error) {
		f := informers.NewSharedInformerFactoryWithOptions(opts.Client, 0,
			informers.WithNamespace(ref.Namespace),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("metadata.name", ref.Name).String()
			}))
		inf := f.Core().V1().ConfigMaps()
		if _, err := inf.Informer().AddEventHandler(handler); err != nil {
			return nil, fmt.Errorf("watching configmap %s: %w", ref, err)
		}
		factories = append(factories, f)
		return inf.Lister(), nil
	}
	b := builder{opts: opts, log: log, nodes: nodeInformer.Lister(), services: services, servicesChanged: servicesChanged}
	if opts.BGPConfig.Name != "" {
		b.bgp = &configWatch[bgpconfig.Config]{
			what: "bgp-config", key: BGPConfigKey, ref: opts.BGPConfig, parse: bgpconfig.Parse,
			summary:      func(c *bgpconfig.Config) []any { return []any{"peers", len(c.Peers)} },
			lastGoodFile: lastGoodFile, stateDir: opts.StateDir, node: opts.NodeName, events: opts.Events, log: log,
		}
		b.bgp.state.Source = opts.BGPConfig.String()
		if b.bgp.lister, err = watchConfigMap(opts.BGPConfig); err != nil {
			return err
		}
	}
	if opts.IPMasqConfig.Name != "" {
		b.masq = &configWatch[masqconfig.Config]{
			what: "ip-masq-agent config", key: IPMasqConfigKey, ref: opts.IPMasqConfig, parse: masqconfig.Parse,
			summary: func(c *masqconfig.Config) []any {
				return []any{"nonMasqueradeCIDRs", len(c.NonMasqueradeCIDRs), "masqLinkLocal", c.MasqLinkLocal}
			},
			lastGoodFile: ipMasqLastGoodFile, stateDir: opts.StateDir, node: opts.NodeName, events: opts.Events, log: log,
		}
		b.masq.state.Source = opts.IPMasqConfig.String()
		if b.masq.lister, err = watchConfigMap(opts.IPMasqConfig); err != nil {
			return err
		}
	}
	for _, f := range factories {
		f.Start(ctx.Done())
		defer f.Shutdown()
	}

	log.Info("waiting for informer caches")
	for _, f := range factories {
		for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
			if !ok {
				return fmt.Errorf("cache for %v did not sync: %w", typ, ctx.Err())
			}
		}
	}

	dirty.Fire()
	var last *snapshot.Cluster
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-dirty.C():
			// Most Node updates are kubelet heartbeats that change
			// nothing the agent reads; only a change is published.
			if c := b.build(); !c.Same(last) {
				publish(c)
				last = c
			}
		}
	}
}

// The files in the state directory holding the last good configurations.
const (
	lastGoodFile       = "bgp-config.last-good.json"
	ipMasqLastGoodFile = "ip-masq-agent.last-good.json"
)

// builder assembles snapshots from the informer caches.
type builder struct {
	opts     WatchOptions
	log      *slog.Logger
	nodes    corelisters.NodeLister
	services *serviceWatch
	bgp      *configWatch[bgpconfig.Config]  // nil when BGP is off
	masq     *configWatch[masqconfig.Config] // nil when not watched

	// servicesChanged is set by every Service and EndpointSlice event;
	// until the next, build reuses lastServices (snapshots are never
	// modified, so they can share it).
	servicesChanged *atomic.Bool
	lastServices    []snapshot.Service
}

func (b *builder) build() *snapshot.Cluster {
	s := &snapshot.Cluster{Synced: true, NodeName: b.opts.NodeName}
	objs, err := b.nodes.List(labels.Everything())
	if err != nil { // the cache lister never fails; keep the snapshot empty if it does
		b.log.Error("listing nodes from cache", "err", err)
	}
	for _, o := range objs {
		s.Nodes = append(s.Nodes, nodeFrom(o, b.log))
	}
	slices.SortFunc(s.Nodes, func(a, b snapshot.Node) int { return strings.Compare(a.Name, b.Name) })
	for i := range s.Nodes {
		if s.Nodes[i].Name == b.opts.NodeName {
			s.Self = &s.Nodes[i]
		}
	}
	// Cleared before reading: an event during the read comes back.
	if b.servicesChanged.Swap(false) {
		services, warnings, err := b.services.read()
		if err != nil { // as for nodes: never with a cache lister
			b.log.Error("reading services", "err", err)
		}
		for _, w := range warnings {
			b.log.Warn(w)
		}
		b.lastServices = services
	}
	s.Services = b.lastServices
	if b.bgp != nil {
		s.BGP = b.bgp.read()
	}
	if b.masq != nil {
		s.IPMasq = b.masq.read()
	}
	return s
}

// configWatch follows one configuration ConfigMap and keeps its state:
// the last content that parsed stays in force through bad edits.
type configWatch[T any] struct {
	what         string // "bgp-config", for messages
	key          string // the ConfigMap's data key
	ref          types.NamespacedName
	parse        func([]byte) (*T, error)
	summary      func(*T) []any // log attributes of a loaded configuration
	lastGoodFile string         // in stateDir; "" keeps nothing across restarts
	stateDir     string
	node         string
	events       events.EventRecorder
	log          *slog.Logger
	lister       corelisters.ConfigMapLister
	state        snapshot.ConfigMapState[T]
}

// read brings the state up to date with the ConfigMap in the cache.
func (w *configWatch[T]) read() snapshot.ConfigMapState[T] {
	cm, err := w.lister.ConfigMaps(w.ref.Namespace).Get(w.ref.Name)
	if apierrors.IsNotFound(err) {
		if w.state.Present {
			w.log.Info(w.what+" deleted", "configmap", w.state.Source)
		}
		w.state = snapshot.ConfigMapState[T]{Source: w.state.Source}
		w.forgetLastGood()
		return w.state
	}
	if err != nil {
		w.log.Error("reading "+w.what+" from cache", "configmap", w.state.Source, "err", err)
		return w.state
	}
	w.state.Present = true
	rv := cm.ResourceVersion
	if rv == w.state.AppliedVersion || rv == w.state.ErrVersion {
		return w.state
	}
	cfg, err := w.parseConfigMap(cm)
	if err != nil && w.state.Config == nil {
		// Nothing in force yet in this process: fall back to what an
		// earlier run of the agent last applied.
		saved, savedRV, lerr := w.loadLastGood()
		if lerr != nil {
			w.log.Warn("reading the last good "+w.what, "err", lerr)
		}
		if saved != nil {
			w.state.Config, w.state.AppliedVersion = saved, savedRV
			w.log.Info("running the last good "+w.what+" saved by an earlier run",
				append([]any{"configmap", w.state.Source, "resourceVersion", savedRV}, w.summary(saved)...)...)
		}
	}
	if err != nil {
		w.state.Err, w.state.ErrVersion = err, rv
		w.log.Error(w.what+" rejected; the last good configuration stays in force",
			"configmap", w.state.Source, "resourceVersion", rv, "appliedResourceVersion", w.state.AppliedVersion, "err", err)
		if w.events != nil {
			kept := "no configuration is in force"
			if w.state.AppliedVersion != "" {
				kept = "resourceVersion " + w.state.AppliedVersion + " stays in force"
			}
			w.events.Eventf(cm, nil, corev1.EventTypeWarning, "InvalidConfig", "ParseConfig",
				"route-agent on node %s rejected resourceVersion %s (%s): %v", w.node, rv, kept, err)
		}
		return w.state
	}
	w.state.Config, w.state.AppliedVersion = cfg, rv
	w.state.Err, w.state.ErrVersion = nil, ""
	w.saveLastGood(rv, cm.Data[w.key])
	w.log.Info(w.what+" loaded", append([]any{"configmap", w.state.Source, "resourceVersion", rv}, w.summary(cfg)...)...)
	return w.state
}

func (w *configWatch[T]) parseConfigMap(cm *corev1.ConfigMap) (*T, error) {
	data, ok := cm.Data[w.key]
	if !ok {
		return nil, fmt.Errorf("configmap %s/%s has no key %q", cm.Namespace, cm.Name, w.key)
	}
	return w.parse([]byte(data))
}

func nodeFrom(o *corev1.Node, log *slog.Logger) snapshot.Node {
	// A copy: snapshots outlive the informer's objects and must never
	// alias the cache.
	n := snapshot.Node{Name: o.Name, Labels: maps.Clone(o.Labels)}
	for _, a := range o.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil {
			log.Warn("ignoring node address", "node", o.Name, "address", a.Address, "err", err)
			continue
		}
		n.InternalIPs = append(n.InternalIPs, ip)
	}
	cidrs := o.Spec.PodCIDRs
	if len(cidrs) == 0 && o.Spec.PodCIDR != "" {
		cidrs = []string{o.Spec.PodCIDR}
	}
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			log.Warn("ignoring pod CIDR", "node", o.Name, "podCIDR", c, "err", err)
			continue
		}
		n.PodCIDRs = append(n.PodCIDRs, p.Masked())
	}
	return n
}

// slimNode keeps of a Node only what nodeFrom reads and the informer's
// identity fields: every agent caches every Node, and a Node's status
// (conditions, capacity, images, nodeInfo) is most of it.
func slimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return dropManagedFields(obj)
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion, Labels: n.Labels},
		Spec:       corev1.NodeSpec{PodCIDR: n.Spec.PodCIDR, PodCIDRs: n.Spec.PodCIDRs},
		Status:     corev1.NodeStatus{Addresses: n.Status.Addresses},
	}, nil
}
