// Package bgp decides which BGP sessions this node holds and which paths it
// advertises (Plan), and makes the embedded GoBGP speaker match (Speaker).
package bgp

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	bgpconfig "routeagent.io/route-agent/bgp/config"

	"routeagent.io/route-agent/cluster/snapshot"
	"routeagent.io/route-agent/secret"
)

// Desired is the BGP state one node should have. The zero value means no
// BGP at all: the speaker is stopped.
type Desired struct {
	Global Global
	// Peers sorted by address.
	Peers []Peer
	// Paths sorted by prefix.
	Paths []Path
}

// Global is the speaker-wide configuration. Changing it restarts the speaker.
type Global struct {
	ASN      uint32
	RouterID netip.Addr
}

// Peer is one session. It is comparable: a changed field means the session
// is re-created.
type Peer struct {
	Address netip.Addr
	Port    uint16
	ASN     uint32
	// LocalASN is the ASN this node presents to the peer (the config's my-asn).
	LocalASN      uint32
	HoldTime      time.Duration
	KeepaliveTime time.Duration
	// SourceAddress is the local address of the session; zero lets the kernel
	// choose.
	SourceAddress netip.Addr
	Password      secret.Value
	EBGPMultihop  bool
}

// Path is one advertised prefix. It is comparable, and the speaker keys
// paths by prefix: a path whose next hop or attributes change is replaced
// in place, one UPDATE, never withdrawn and announced again.
type Path struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
	Attrs   Attrs
}

// Attrs are a path's optional attributes.
type Attrs struct {
	// LocalPref is sent to iBGP peers; 0 leaves it out, so the peer's
	// default (100) applies.
	LocalPref uint32
	// Communities are classic communities in canonical form (see
	// NewCommunities), so that equal sets compare equal.
	Communities Communities
}

// Communities is a set of classic (RFC 1997) communities in canonical form:
// "AA:NN" values sorted numerically, without duplicates, space separated.
// A string keeps Path comparable.
type Communities string

// NewCommunities returns the canonical set of cs.
func NewCommunities(cs ...bgpconfig.Community) Communities {
	vals := make([]uint32, 0, len(cs))
	for _, c := range cs {
		vals = append(vals, uint32(c.ASN)<<16|uint32(c.Value))
	}
	slices.Sort(vals)
	vals = slices.Compact(vals)
	parts := make([]string, len(vals))
	for i, v := range vals {
		parts[i] = bgpconfig.Community{ASN: uint16(v >> 16), Value: uint16(v)}.String()
	}
	return Communities(strings.Join(parts, " "))
}

// Values returns the communities as 32-bit values, as BGP carries them.
func (c Communities) Values() []uint32 {
	var out []uint32
	for _, f := range strings.Fields(string(c)) {
		asn, val, _ := strings.Cut(f, ":")
		a, _ := strconv.ParseUint(asn, 10, 16)
		v, _ := strconv.ParseUint(val, 10, 16)
		out = append(out, uint32(a)<<16|uint32(v))
	}
	return out
}

// Plan computes the desired BGP state of the snapshot's node. It returns
// warnings for problems that do not stop the plan. It does no I/O.
//
// running is the speaker's Global now. Changing the speaker's ASN or
// router-id restarts it and drops every session, so Plan keeps both while
// they are still valid choices for the selected peers; otherwise it takes
// the first selected peer's my-asn and router-id (or the node's IPv4
// InternalIP), in config order.
func Plan(s *snapshot.Snapshot, running Global) (Desired, []string) {
	var d Desired
	var warnings []string
	if s.Self == nil || s.BGP.Config == nil {
		return d, nil
	}
	self := s.Self

	seen := map[netip.Addr]int{}
	var routerID netip.Addr
	keepASN, keepRouterID := false, false
	for _, p := range s.BGP.Config.Peers {
		if !p.MatchesNode(self.Labels) {
			continue
		}
		if first, dup := seen[p.Address]; dup {
			warnings = append(warnings, fmt.Sprintf("peers[%d] and peers[%d] both select this node with peer-address %s; using peers[%d]",
				first, p.Index, p.Address, first))
			continue
		}
		seen[p.Address] = p.Index
		if d.Global.ASN == 0 {
			d.Global.ASN = p.MyASN
		}
		keepASN = keepASN || (running.ASN != 0 && p.MyASN == running.ASN)
		keepRouterID = keepRouterID || (running.RouterID.IsValid() && p.RouterID == running.RouterID)
		if p.RouterID.IsValid() {
			if !routerID.IsValid() {
				routerID = p.RouterID
			} else if routerID != p.RouterID {
				warnings = append(warnings, fmt.Sprintf("peers[%d].router-id %s differs from the router-id %s already chosen; one speaker has one router-id, keeping %s",
					p.Index, p.RouterID, routerID, routerID))
			}
		}
		d.Peers = append(d.Peers, Peer{
			Address:       p.Address,
			Port:          p.Port,
			ASN:           p.ASN,
			LocalASN:      p.MyASN,
			HoldTime:      p.HoldTime,
			KeepaliveTime: p.KeepaliveTime,
			SourceAddress: p.SourceAddress,
			Password:      p.Password,
			EBGPMultihop:  p.EBGPMultihop,
		})
	}
	if len(d.Peers) == 0 {
		return Desired{}, warnings
	}
	if !routerID.IsValid() {
		routerID, _ = self.InternalIP(false)
		keepRouterID = routerID.IsValid() && routerID == running.RouterID
	}
	if !routerID.IsValid() {
		warnings = append(warnings, fmt.Sprintf("node %s has no IPv4 InternalIP and no selected peer sets router-id; BGP stays down", self.Name))
		return Desired{}, warnings
	}
	d.Global.RouterID = routerID
	if keepASN {
		d.Global.ASN = running.ASN
	}
	if keepRouterID {
		d.Global.RouterID = running.RouterID
	}

	for _, c := range self.PodCIDRs {
		nh, ok := self.InternalIP(c.Addr().Is6())
		if !ok {
			warnings = append(warnings, fmt.Sprintf("pod CIDR %s not advertised: node %s has no InternalIP of its family", c, self.Name))
			continue
		}
		// A session carries the family of its peer address only; the path
		// stays planned so that a peer of its family gets it when it comes.
		if !slices.ContainsFunc(d.Peers, func(p Peer) bool { return p.Address.Is6() == c.Addr().Is6() }) {
			warnings = append(warnings, fmt.Sprintf("pod CIDR %s reaches no peer: no selected peer has an address of its family", c))
		}
		d.Paths = append(d.Paths, Path{Prefix: c, NextHop: nh})
	}
	lb := planLB(s)
	d.Paths = append(d.Paths, lb.paths...)
	warnings = append(warnings, lb.warnings...)
	warnings = append(warnings, lbFamilyWarnings(lb.paths, d.Peers)...)
	slices.SortFunc(d.Peers, func(a, b Peer) int { return a.Address.Compare(b.Address) })
	slices.SortFunc(d.Paths, func(a, b Path) int { return comparePrefixes(a.Prefix, b.Prefix) })
	return d, warnings
}

// ConfigCheck is the readiness condition of the bgp-config: a
// configuration is in force, or there is knowingly none. A ConfigMap that
// exists but has never parsed leaves the node not ready, which also halts a
// rolling update that would spread the problem.
func ConfigCheck(s *snapshot.Snapshot) string {
	if s.BGP.InForce() {
		return ""
	}
	msg := "bgp-config " + s.BGP.Source + " exists but no version of it has been valid"
	if s.BGP.Err != nil {
		msg += " (resourceVersion " + s.BGP.ErrVersion + " rejected; routectl status shows why)"
	}
	return msg
}

func comparePrefixes(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

// compareAddrStrings orders addresses as GoBGP reports them (strings) by
// their numeric value.
func compareAddrStrings(a, b string) int {
	pa, _ := netip.ParseAddr(a)
	pb, _ := netip.ParseAddr(b)
	return pa.Compare(pb)
}
