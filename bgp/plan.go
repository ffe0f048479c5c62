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
	// DualStack makes the session carry IPv4 and IPv6 unicast (MP-BGP,
	// where the peer agrees); otherwise it carries the family of Address.
	DualStack bool
	// IPv4NextHop and IPv6NextHop, when valid, replace the next hop of the
	// paths of their family sent to this peer.
	IPv4NextHop netip.Addr
	IPv6NextHop netip.Addr
}

// carries reports whether the session carries paths of the family of a
// prefix (IPv6 when ipv6 is true).
func (p Peer) carries(ipv6 bool) bool {
	return p.DualStack || p.Address.Is6() == ipv6
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
	return canonicalValues(vals)
}

// canonicalValues returns the canonical set of 32-bit community values. It
// sorts vals in place.
func canonicalValues(vals []uint32) Communities {
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
// warnings for problems that do not stop the plan. It does no I/O. With no
// bgp-config in force, or BGP off on this node, it is the zero Desired.
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

	selected, warnings := selectedPeers(s.BGP.Config, self)
	if w := waitingForSecrets(s, selected); w != "" {
		// Only right after start. Waiting costs nothing then, while
		// adding these sessions after the others would keep them out of
		// a graceful restart.
		return Desired{}, append(warnings, w)
	}
	var routerID netip.Addr
	keepASN, keepRouterID := false, false
	for _, p := range selected {
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
		peer := Peer{
			Address:       p.Address,
			Port:          p.Port,
			ASN:           p.ASN,
			LocalASN:      p.MyASN,
			HoldTime:      p.HoldTime,
			KeepaliveTime: p.KeepaliveTime,
			SourceAddress: p.SourceAddress,
			Password:      p.Password,
			EBGPMultihop:  p.EBGPMultihop,
			DualStack:     p.DualStack,
			IPv4NextHop:   p.IPv4NextHop,
			IPv6NextHop:   p.IPv6NextHop,
		}
		if p.PasswordSecret != "" {
			pw, err := s.Secrets.Password(p.PasswordSecret)
			if err != nil {
				// This session only: the others keep running. The peer
				// still counted above, so that a Secret coming or going
				// never changes the speaker's ASN or router-id.
				warnings = append(warnings, PeerSecretProblem{Peer: p, Err: err}.String())
				continue
			}
			peer.Password = pw
		}
		d.Peers = append(d.Peers, peer)
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

	podCIDRs := self.PodCIDRs
	if s.Announce.PodCIDRsOff {
		podCIDRs = nil
	}
	for _, c := range podCIDRs {
		nh, ok := self.InternalIP(c.Addr().Is6())
		if !ok {
			warnings = append(warnings, fmt.Sprintf("pod CIDR %s not advertised: node %s has no InternalIP of its family", c, self.Name))
			continue
		}
		// The path stays planned so that a peer carrying its family gets
		// it when it comes.
		if !slices.ContainsFunc(d.Peers, func(p Peer) bool { return p.carries(c.Addr().Is6()) }) {
			warnings = append(warnings, fmt.Sprintf("pod CIDR %s reaches no peer: no selected peer carries its family (%s)", c, carriersHint(c.Addr())))
		}
		d.Paths = append(d.Paths, Path{Prefix: c, NextHop: nh})
	}
	if !s.Announce.LBIPsOff {
		lb := planLB(s)
		d.Paths = append(d.Paths, lb.paths...)
		warnings = append(warnings, lb.warnings...)
		warnings = append(warnings, lbFamilyWarnings(lb.paths, d.Peers)...)
	}
	slices.SortFunc(d.Peers, func(a, b Peer) int { return a.Address.Compare(b.Address) })
	slices.SortFunc(d.Paths, func(a, b Path) int { return comparePrefixes(a.Prefix, b.Prefix) })
	return d, warnings
}

// selectedPeers returns the peers of cfg that select the node, in config
// order, the first of each peer-address only, and warnings about the
// others.
func selectedPeers(cfg *bgpconfig.Config, self *snapshot.Node) ([]bgpconfig.Peer, []string) {
	var out []bgpconfig.Peer
	var warnings []string
	seen := map[netip.Addr]int{}
	for _, p := range cfg.Peers {
		if !p.MatchesNode(self.Labels) {
			continue
		}
		if first, dup := seen[p.Address]; dup {
			warnings = append(warnings, fmt.Sprintf("peers[%d] and peers[%d] both select this node with peer-address %s; using peers[%d]",
				first, p.Index, p.Address, first))
			continue
		}
		seen[p.Address] = p.Index
		out = append(out, p)
	}
	return out, warnings
}

// waitingForSecrets says why the node waits when one of the selected
// peers names a password-secret and the Secrets have not been read yet;
// "" when it need not wait.
func waitingForSecrets(s *snapshot.Snapshot, selected []bgpconfig.Peer) string {
	if s.Secrets.Synced {
		return ""
	}
	for _, p := range selected {
		if p.PasswordSecret != "" {
			return fmt.Sprintf("waiting for the Secrets of namespace %s to be read (the agent needs get, list and watch on secrets there): peers[%d] names password-secret %s",
				s.Secrets.Namespace, p.Index, p.PasswordSecret)
		}
	}
	return ""
}

// PeerSecretProblem is a peer selecting this node whose password-secret
// cannot serve, so that its session is not configured.
type PeerSecretProblem struct {
	Peer bgpconfig.Peer
	// Err says why, naming the Secret and never its content.
	Err error
}

func (p PeerSecretProblem) String() string {
	return fmt.Sprintf("peers[%d] (peer-address %s) not configured: password-secret: %v", p.Peer.Index, p.Peer.Address, p.Err)
}

// PeerSecretProblems lists, in config order, the peers Plan leaves out
// because of their password-secret. Before the Secrets have been read
// there are none: Plan waits then. It does no I/O.
func PeerSecretProblems(s *snapshot.Snapshot) []PeerSecretProblem {
	if s.Self == nil || s.BGP.Config == nil || !s.Secrets.Synced {
		return nil
	}
	selected, _ := selectedPeers(s.BGP.Config, s.Self)
	var out []PeerSecretProblem
	for _, p := range selected {
		if p.PasswordSecret == "" {
			continue
		}
		if _, err := s.Secrets.Password(p.PasswordSecret); err != nil {
			out = append(out, PeerSecretProblem{Peer: p, Err: err})
		}
	}
	return out
}

// carriersHint says which peers carry the family of a.
func carriersHint(a netip.Addr) string {
	return "a peer-address of " + ipFamily(a) + ", or dual-stack-address-family: true"
}

// ConfigCheck is the readiness condition of the bgp-config: a
// configuration is in force, or there is knowingly none. A ConfigMap that
// exists but has never parsed leaves the node not ready, which also halts a
// rolling update that would spread the problem. With BGP off (no bgp-config
// watched: an empty Source) there is nothing to wait for.
func ConfigCheck(s *snapshot.Snapshot) string {
	if s.BGP.Source == "" {
		return ""
	}
	if !s.BGP.InForce() {
		msg := "bgp-config " + s.BGP.Source + " exists but no version of it has been valid"
		if s.BGP.Err != nil {
			msg += " (resourceVersion " + s.BGP.ErrVersion + " rejected; routectl status shows why)"
		}
		return msg
	}
	// BGP cannot start before the Secrets its peers name are read; past
	// start-up, that means the agent may not read them.
	if s.Self != nil && s.BGP.Config != nil {
		selected, _ := selectedPeers(s.BGP.Config, s.Self)
		return waitingForSecrets(s, selected)
	}
	return ""
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
