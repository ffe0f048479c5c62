// Package cluster turns what the agent watches in Kubernetes into immutable
// snapshots. No other part of the agent reads the Kubernetes API.
package cluster

import (
	"net/netip"

	bgpconfig "routeagent.io/route-agent/bgp/config"
)

// Snapshot is everything the planners may look at. It is never modified after
// it is published; a change produces a new snapshot.
type Snapshot struct {
	// NodeName is the name of the node this agent runs on.
	NodeName string
	// Self is this node, nil until its Node object has been seen.
	Self *Node
	// Nodes holds every node, sorted by name.
	Nodes []Node
	BGP   BGPConfig
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

// BGPConfig is the state of the bgp-config ConfigMap.
type BGPConfig struct {
	// Source is namespace/name of the ConfigMap.
	Source string
	// Present reports whether the ConfigMap exists.
	Present bool
	// Config is the configuration in force: the last content that parsed.
	// It is nil when no content has parsed yet or the ConfigMap was deleted.
	Config *bgpconfig.Config
	// AppliedVersion is the resourceVersion Config was parsed from.
	AppliedVersion string
	// Err is the parse error of the current content; Config then still
	// holds the last good configuration.
	Err error
	// ErrVersion is the resourceVersion Err belongs to.
	ErrVersion string
}
