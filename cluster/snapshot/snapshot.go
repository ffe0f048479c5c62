// Package snapshot holds the immutable view of the world that every planner
// reads. It imports no client-go, so a planner links no informer: the
// informer side (package cluster) and the non-Kubernetes inputs (routes
// learned from BGP peers) fill its sections, and the engine publishes the
// combination.
package snapshot

import (
	"maps"
	"net/netip"
	"slices"

	bgpconfig "routeagent.io/route-agent/bgp/config"
	masqconfig "routeagent.io/route-agent/masq/config"
)

// Snapshot is everything the planners may look at. It is never modified after
// it is published; a change produces a new snapshot. Each section has one
// source that replaces it whole.
type Snapshot struct {
	// Cluster is what the Kubernetes watches saw; its fields are promoted,
	// so planners write s.Self and s.BGP.
	Cluster
	// Secrets are the passwords a bgp-config peer may name (secrets.go).
	Secrets Secrets
	// Announce is what the agent's flags let this node advertise; it is
	// set once, at start.
	Announce Announce
	// Learned holds the best paths received from BGP peers, as the speaker
	// last reported them.
	Learned []LearnedRoute
	// LearnedSettled is false until the speaker has had its configuration
	// and every peer's initial table (or has given up waiting). Until then
	// Learned is incomplete: an agent that just restarted must not remove
	// the routes its previous run installed because a peer has not resent
	// them yet.
	LearnedSettled bool
	// Version increases with every published snapshot.
	Version uint64
}

// Cluster is the section built from the Kubernetes informers. The zero value
// means the caches have not synced yet: no part may act on it, or it would
// remove everything for nodes it has not seen.
type Cluster struct {
	// Synced is true once the informer caches have synced.
	Synced bool
	// NodeName is the name of the node this agent runs on.
	NodeName string
	// Self is this node, nil until its Node object has been seen.
	Self *Node
	// Nodes holds every node, sorted by name.
	Nodes []Node
	// BGP is the bgp-config ConfigMap; its Source is empty when BGP is
	// disabled on this node (--bgp-config "").
	BGP BGPConfig
	// IPMasq is the ip-masq-agent ConfigMap; its Source is empty when the
	// agent does not watch one.
	IPMasq IPMasqConfig
	// Services holds the Services of type LoadBalancer, sorted by
	// namespace, then name. Other types are left out: no planner reads
	// them, and every change to a snapshot wakes every part.
	Services []Service
}

// Announce holds the agent's --bgp-announce-* flags. The zero value is
// their default: pod CIDRs and LoadBalancer IPs are both announced.
type Announce struct {
	// PodCIDRsOff is --bgp-announce-pod-cidr=false.
	PodCIDRsOff bool
	// LBIPsOff is --bgp-announce-lb-ip=false.
	LBIPsOff bool
}

// Node is the part of a Kubernetes Node the agent uses.
type Node struct {
	Name   string
	Labels map[string]string
	// InternalIPs are the node's InternalIP addresses in the order of
	// status.addresses.
	InternalIPs []netip.Addr
	// PodCIDRs are spec.podCIDRs, with spec.podCIDR as a fallback for
	// clusters that only set the singular field.
	PodCIDRs []netip.Prefix
}

// InternalIP returns the node's first InternalIP of the given family.
func (n *Node) InternalIP(ipv6 bool) (netip.Addr, bool) {
	for _, a := range n.InternalIPs {
		if a.Is6() == ipv6 {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// Service is the part of a Kubernetes Service, and of its EndpointSlices,
// that deciding whether to announce its load-balancer addresses needs.
type Service struct {
	Namespace string
	Name      string
	// LoadBalancer is true for spec.type LoadBalancer.
	LoadBalancer bool
	// Class is spec.loadBalancerClass, "" when unset.
	Class string
	// ExternalTrafficPolicyLocal is true when external traffic must stay
	// on the node it arrives at, so only nodes with an endpoint may
	// attract it.
	ExternalTrafficPolicyLocal bool
	// Ingress are the IPs of status.loadBalancer.ingress, in that order;
	// entries with only a hostname are left out.
	Ingress []netip.Addr
	// Pool is the address pool the Service asked for by annotation. It is
	// informational: what is announced follows the pool that holds each
	// address.
	Pool string
	// ReadyNodes are the names of the nodes with an endpoint that counts
	// as ready, sorted, without duplicates. As kube-proxy does, an
	// endpoint whose ready condition is unset counts as ready; when no
	// endpoint of the Service is ready, the endpoints that are both
	// serving and terminating count instead, so that a Service whose
	// pods are all shutting down keeps taking traffic until they are gone.
	// (kube-proxy makes that fallback per node for Local Services; it is
	// made per Service here, which only ever announces fewer nodes.)
	ReadyNodes []string
	// HasReady reports whether any endpoint counts as ready, on a node or
	// not.
	HasReady bool
}

// ConfigMapState is the state of a configuration ConfigMap (bgp-config,
// ip-masq-agent): the content in force and the last rejection. A bad edit
// never replaces a good configuration.
type ConfigMapState[T any] struct {
	// Source is namespace/name of the ConfigMap.
	Source string
	// Present reports whether the ConfigMap exists.
	Present bool
	// Config is the configuration in force: the last content that parsed.
	// It is nil when no content has parsed yet or the ConfigMap was deleted.
	Config *T
	// AppliedVersion is the resourceVersion Config was parsed from.
	AppliedVersion string
	// Err is the parse error of the current content; Config then still
	// holds the last good configuration.
	Err error
	// ErrVersion is the resourceVersion Err belongs to.
	ErrVersion string
}

// BGPConfig is the state of the bgp-config ConfigMap.
type BGPConfig = ConfigMapState[bgpconfig.Config]

// IPMasqConfig is the state of the ip-masq-agent ConfigMap.
type IPMasqConfig = ConfigMapState[masqconfig.Config]

// InForce reports whether the agent knows what to do: a configuration is
// in force, or there is knowingly none (no ConfigMap). A ConfigMap that
// exists but has never parsed is not knowing.
func (c ConfigMapState[T]) InForce() bool { return c.Config != nil || !c.Present }

// LearnedRoute is a best path received from a BGP peer.
type LearnedRoute struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
	// Peer is the address of the neighbour the path came from.
	Peer   netip.Addr
	ASPath []uint32
	// Communities are the path's classic communities as "AA:NN", in the
	// order received.
	Communities []string
}

// Same reports whether two Cluster sections hold the same view: what
// planners read. (Not Equal: go-cmp would take that for deep equality.) A source publishes only a changed section, since every
// publish wakes every part (a kubelet's status heartbeat changes nothing
// here).
func (c *Cluster) Same(o *Cluster) bool {
	if c == nil || o == nil {
		return c == o
	}
	return c.Synced == o.Synced && c.NodeName == o.NodeName &&
		slices.EqualFunc(c.Nodes, o.Nodes, func(a, b Node) bool { return a.Same(&b) }) &&
		(c.Self == nil) == (o.Self == nil) && c.BGP.Same(o.BGP) && c.IPMasq.Same(o.IPMasq) &&
		sameServices(c.Services, o.Services)
}

// sameServices is true at once for one slice in two snapshots (the watch
// reuses its last read until a Service changes), so a Node heartbeat does
// not compare 10,000 Services.
func sameServices(a, b []Service) bool {
	if len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0]) {
		return true
	}
	return slices.EqualFunc(a, b, func(x, y Service) bool { return x.Same(&y) })
}

// Same reports whether two Services are the same for the planners.
func (s *Service) Same(o *Service) bool {
	return s.Namespace == o.Namespace && s.Name == o.Name && s.LoadBalancer == o.LoadBalancer &&
		s.Class == o.Class && s.ExternalTrafficPolicyLocal == o.ExternalTrafficPolicyLocal &&
		slices.Equal(s.Ingress, o.Ingress) && s.Pool == o.Pool &&
		slices.Equal(s.ReadyNodes, o.ReadyNodes) && s.HasReady == o.HasReady
}

// Same reports whether two nodes are the same for the planners.
func (n *Node) Same(o *Node) bool {
	return n.Name == o.Name && maps.Equal(n.Labels, o.Labels) &&
		slices.Equal(n.InternalIPs, o.InternalIPs) && slices.Equal(n.PodCIDRs, o.PodCIDRs)
}

// Same reports whether two configuration states are the same. A parsed
// Config is never modified, so the same one is the same pointer.
func (c ConfigMapState[T]) Same(o ConfigMapState[T]) bool {
	errText := func(err error) string {
		if err == nil {
			return ""
		}
		return err.Error()
	}
	return c.Source == o.Source && c.Present == o.Present && c.Config == o.Config &&
		c.AppliedVersion == o.AppliedVersion && c.ErrVersion == o.ErrVersion && errText(c.Err) == errText(o.Err)
}
