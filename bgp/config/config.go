// Package config reads the MetalLB v0.12 bgp-config ConfigMap (key
// config.yaml) that route-agent consumes. Parsing is strict: unknown keys,
// wrong types and unsupported features are errors, and every problem in a
// document is reported at once so that users can fix a config in one pass.
package config

import (
	"net/netip"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"routeagent.io/route-agent/secret"
)

// Config is a parsed and validated bgp-config.
type Config struct {
	Peers []Peer
	Pools []Pool
	// Communities are the named communities of bgp-communities.
	Communities map[string]Community
}

// Peer is one BGP session to establish from matching nodes.
type Peer struct {
	// Index is the position in the peers list, used in messages.
	Index   int
	Address netip.Addr
	Port    uint16
	ASN     uint32
	MyASN   uint32
	// HoldTime is zero when keepalives are disabled.
	HoldTime      time.Duration
	KeepaliveTime time.Duration
	// RouterID and SourceAddress are the zero Addr when not configured.
	RouterID      netip.Addr
	SourceAddress netip.Addr
	// Password is the TCP MD5 signature key.
	Password secret.Value
	// PasswordSecret names the Secret, in the agent's own namespace, whose
	// key "password" holds the TCP MD5 key; "" when not set. At most one
	// of Password and PasswordSecret is set.
	PasswordSecret string
	EBGPMultihop   bool
	// DualStack (dual-stack-address-family) makes the session carry IPv4
	// and IPv6 unicast, whatever the family of its peer address, where the
	// peer agrees; otherwise it carries its address's family only.
	DualStack bool
	// IPv4NextHop and IPv6NextHop, when set, are the next hop of the paths
	// of their family sent to this peer, instead of the node's InternalIP
	// of that family. Each is set only for a family the session carries.
	IPv4NextHop netip.Addr
	IPv6NextHop netip.Addr
	// NodeSelectors are ORed; empty means every node.
	NodeSelectors []labels.Selector
}

// Carries reports whether the session carries unicast paths of the family
// of a (IPv6 when ipv6 is true).
func (p Peer) Carries(ipv6 bool) bool {
	return p.DualStack || p.Address.Is6() == ipv6
}

// NextHop returns the configured next hop for paths of the family, or
// the zero Addr.
func (p Peer) NextHop(ipv6 bool) netip.Addr {
	if ipv6 {
		return p.IPv6NextHop
	}
	return p.IPv4NextHop
}

// MatchesNode reports whether the peer applies to a node with these labels:
// true if there are no selectors, else if any selector matches (MetalLB
// semantics: selectors are ORed).
func (p Peer) MatchesNode(nodeLabels map[string]string) bool {
	if len(p.NodeSelectors) == 0 {
		return true
	}
	set := labels.Set(nodeLabels)
	for _, s := range p.NodeSelectors {
		if s != nil && s.Matches(set) {
			return true
		}
	}
	return false
}

// Protocols of an address pool.
const (
	ProtocolBGP    = "bgp"
	ProtocolLayer2 = "layer2"
)

// Pool is an address pool.
type Pool struct {
	Name     string
	Protocol string
	// Prefixes holds the addresses in configuration order, ranges
	// converted to the minimal list of prefixes covering them.
	Prefixes      []netip.Prefix
	AutoAssign    bool
	AvoidBuggyIPs bool
	// Advertisements is never empty for a bgp pool: as in MetalLB, a pool
	// without bgp-advertisements gets one with the defaults.
	Advertisements []Advertisement
}

// Advertisement describes how addresses of a pool are announced.
type Advertisement struct {
	AggregationLength   int
	AggregationLengthV6 int
	LocalPref           uint32
	// Communities are resolved values, in configuration order, without
	// duplicates.
	Communities []Community
}

// Community is a classic (RFC 1997) BGP community.
type Community struct{ ASN, Value uint16 }

// String returns the community as "AA:NN".
func (c Community) String() string {
	return strconv.Itoa(int(c.ASN)) + ":" + strconv.Itoa(int(c.Value))
}
