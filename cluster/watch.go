package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"

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
)

// BGPConfigKey is the ConfigMap key holding the bgp-config YAML, as in MetalLB.
const BGPConfigKey = "config.yaml"

// WatchOptions says what to watch.
type WatchOptions struct {
	Client   kubernetes.Interface
	NodeName string
	// BGPConfig is the namespace and name of the bgp-config ConfigMap.
	BGPConfig types.NamespacedName
	Logger    *slog.Logger
	// StateDir, when set, keeps the last good bgp-config across restarts
	// of the agent (see lastgood.go).
	StateDir string
	// Events, when set, records a Warning event on the bgp-config ConfigMap
	// for each content the agent rejects, so `kubectl describe` shows it.
	Events events.EventRecorder
}

// Watch runs informers for Nodes and the bgp-config ConfigMap and calls
// publish with a fresh snapshot after the caches have synced and after every
// change. Bursts of events are coalesced: publish always gets the latest
// state, never a backlog. publish runs on Watch's goroutine; Watch returns
// when ctx ends.
func Watch(ctx context.Context, opts WatchOptions, publish func(*snapshot.Cluster)) error {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	// No informer resync: the caches stay current through the watch, and
	// the agent's reconcile loop re-applies the desired state on its own
	// period.
	nodeFactory := informers.NewSharedInformerFactory(opts.Client, 0)
	// Only the one ConfigMap: the agent's RBAC allows no more, and every
	// node watching all ConfigMaps of kube-system would load the API server.
	cmFactory := informers.NewSharedInformerFactoryWithOptions(opts.Client, 0,
		informers.WithNamespace(opts.BGPConfig.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", opts.BGPConfig.Name).String()
		}))

	dirty := engine.NewTrigger()
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { dirty.Fire() },
		UpdateFunc: func(any, any) { dirty.Fire() },
		DeleteFunc: func(any) { dirty.Fire() },
	}
	nodeInformer := nodeFactory.Core().V1().Nodes()
	cmInformer := cmFactory.Core().V1().ConfigMaps()
	// Every agent caches every Node; drop the bulky fields it never reads
	// (image lists, managed fields) so a large cluster stays cheap.
	if err := nodeInformer.Informer().SetTransform(trimNode); err != nil {
		return fmt.Errorf("watching nodes: %w", err)
	}
	if _, err := nodeInformer.Informer().AddEventHandler(handler); err != nil {
		return fmt.Errorf("watching nodes: %w", err)
	}
	if _, err := cmInformer.Informer().AddEventHandler(handler); err != nil {
		return fmt.Errorf("watching configmap %s: %w", opts.BGPConfig, err)
	}
	nodeFactory.Start(ctx.Done())
	cmFactory.Start(ctx.Done())
	defer nodeFactory.Shutdown()
	defer cmFactory.Shutdown()

	log.Info("waiting for informer caches")
	for typ, ok := range nodeFactory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("cache for %v did not sync: %w", typ, ctx.Err())
		}
	}
	for typ, ok := range cmFactory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("cache for %v did not sync: %w", typ, ctx.Err())
		}
	}

	b := builder{opts: opts, log: log, nodes: nodeInformer.Lister(), configMaps: cmInformer.Lister()}
	b.cfg.Source = opts.BGPConfig.String()
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

// builder assembles snapshots from the informer caches. It remembers the
// last good bgp-config so that a bad edit keeps the previous one in force.
type builder struct {
	opts       WatchOptions
	log        *slog.Logger
	nodes      corelisters.NodeLister
	configMaps corelisters.ConfigMapLister
	cfg        snapshot.BGPConfig
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
	s.BGP = b.bgpConfig()
	return s
}

func (b *builder) bgpConfig() snapshot.BGPConfig {
	cm, err := b.configMaps.ConfigMaps(b.opts.BGPConfig.Namespace).Get(b.opts.BGPConfig.Name)
	if apierrors.IsNotFound(err) {
		if b.cfg.Present {
			b.log.Info("bgp-config deleted: no peers", "configmap", b.cfg.Source)
		}
		b.cfg = snapshot.BGPConfig{Source: b.cfg.Source}
		b.forgetLastGood()
		return b.cfg
	}
	if err != nil {
		b.log.Error("reading bgp-config from cache", "configmap", b.cfg.Source, "err", err)
		return b.cfg
	}
	b.cfg.Present = true
	rv := cm.ResourceVersion
	if rv == b.cfg.AppliedVersion || rv == b.cfg.ErrVersion {
		return b.cfg
	}
	cfg, err := parseConfigMap(cm)
	if err != nil && b.cfg.Config == nil {
		// Nothing in force yet in this process: fall back to what an
		// earlier run of the agent last applied.
		saved, savedRV, lerr := b.loadLastGood()
		if lerr != nil {
			b.log.Warn("reading the last good bgp-config", "err", lerr)
		}
		if saved != nil {
			b.cfg.Config, b.cfg.AppliedVersion = saved, savedRV
			b.log.Info("running the last good bgp-config saved by an earlier run", "configmap", b.cfg.Source,
				"resourceVersion", savedRV, "peers", len(saved.Peers))
		}
	}
	if err != nil {
		b.cfg.Err, b.cfg.ErrVersion = err, rv
		b.log.Error("bgp-config rejected; the last good configuration stays in force",
			"configmap", b.cfg.Source, "resourceVersion", rv, "appliedResourceVersion", b.cfg.AppliedVersion, "err", err)
		if b.opts.Events != nil {
			kept := "no configuration is in force"
			if b.cfg.AppliedVersion != "" {
				kept = "resourceVersion " + b.cfg.AppliedVersion + " stays in force"
			}
			b.opts.Events.Eventf(cm, nil, corev1.EventTypeWarning, "InvalidConfig", "ParseConfig",
				"route-agent on node %s rejected resourceVersion %s (%s): %v", b.opts.NodeName, rv, kept, err)
		}
		return b.cfg
	}
	b.cfg.Config, b.cfg.AppliedVersion = cfg, rv
	b.cfg.Err, b.cfg.ErrVersion = nil, ""
	b.saveLastGood(rv, cm.Data[BGPConfigKey])
	b.log.Info("bgp-config loaded", "configmap", b.cfg.Source, "resourceVersion", rv, "peers", len(cfg.Peers))
	return b.cfg
}

func parseConfigMap(cm *corev1.ConfigMap) (*bgpconfig.Config, error) {
	data, ok := cm.Data[BGPConfigKey]
	if !ok {
		return nil, fmt.Errorf("configmap %s/%s has no key %q", cm.Namespace, cm.Name, BGPConfigKey)
	}
	return bgpconfig.Parse([]byte(data))
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

func trimNode(obj any) (any, error) {
	if n, ok := obj.(*corev1.Node); ok {
		n.ManagedFields = nil
		n.Status.Images = nil
	}
	return obj, nil
}
