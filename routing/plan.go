package routing

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"routeagent.io/route-agent/cluster/snapshot"
	"routeagent.io/route-agent/routing/tunnel"
)

// Kind says why the agent wants a route.
type Kind string

const (
	// KindDirect is a route to another node's pod CIDR via that node's
	// address, which is on-link from here (autoDirectNodeRoutes).
	KindDirect Kind = "direct"
	// KindBGP is a prefix learned from a BGP peer.
	KindBGP Kind = "bgp"
	// KindTunnel is a route to another node's pod CIDR through the
	// overlay (tunnel mode), for a node not routed directly.
	KindTunnel Kind = "tunnel"
)

// tunnelLink stands for the tunnel device's index in planned routes until
// the device exists; Part.Reconcile puts the real index in.
const tunnelLink = -1

// KeptUntilSettled is what a route is for when the agent keeps an earlier
// run's route until its BGP peers have resent their tables.
const KeptUntilSettled = "kept until BGP settles"

// PlanOptions are the routing flags.
type PlanOptions struct {
	// AutoDirectNodeRoutes installs podCIDR via nodeIP for every other node
	// whose address is on-link.
	AutoDirectNodeRoutes bool
	// InstallDefaultRoute allows a learned default route into the kernel.
	InstallDefaultRoute bool
	// Tunnel, when set (--routing-mode tunnel), carries the traffic to
	// every other node's pods that no direct route carries.
	Tunnel *TunnelOptions
}

// TunnelOptions choose the overlay.
type TunnelOptions struct {
	Protocol tunnel.Protocol
	// Port is the UDP port; 0 is the protocol's default.
	Port int
	VNI  uint32
}

// Facts is what the planner needs to know of the kernel: its routing table
// without the agent's own routes (so that a route the agent installed never
// decides where the agent's routes go), and the links.
type Facts struct {
	// Routes are the main table's unicast routes of other protocols,
	// connected routes included.
	Routes []FactRoute
	// Links maps link index to name and state.
	Links map[int]Link
	// Own are the agent's routes in the main table now (an earlier run's,
	// after a restart).
	Own []Route
}

// FactRoute is one route of the kernel's table.
type FactRoute struct {
	Dst netip.Prefix
	// Gw is zero for a route on the link (a connected route).
	Gw        netip.Addr
	LinkIndex int
	// Metric orders routes of equal prefix length; lower wins.
	Metric int
}

// Link is a network device.
type Link struct {
	Name string
	Up   bool
}

// Planned is one route the agent wants, with why, and whether the plan
// refused it.
type Planned struct {
	// Route is what goes into the kernel; for a refused route only Dst
	// (and Gw, when known) are set.
	Route Route
	Kind  Kind
	// For is what the route serves: the node name for a direct route, the
	// peer's address for a BGP route.
	For string
	// Refused, when not empty, says why the route is not installed.
	Refused string
}

// Desired is the routing part's plan.
type Desired struct {
	// Routes are sorted by prefix, then kind.
	Routes []Planned
	// Tunnel is the overlay device and its peers; no Device in native
	// mode, which removes an earlier tunnel.
	Tunnel tunnel.Desired
}

// bindTunnel puts the tunnel device's index into the routes through it, or
// refuses them when the device could not be made.
func (d *Desired) bindTunnel(index int, err error) {
	for i := range d.Routes {
		r := &d.Routes[i]
		if r.Route.LinkIndex != tunnelLink {
			continue
		}
		switch {
		case index > 0:
			r.Route.LinkIndex = index
		case err != nil:
			r.Route.LinkIndex, r.Refused = 0, "no tunnel device: "+err.Error()
		default:
			r.Route.LinkIndex, r.Refused = 0, "no tunnel device"
		}
	}
}

// Kernel returns the routes to install: those not refused.
func (d Desired) Kernel() []Route {
	out := make([]Route, 0, len(d.Routes))
	for _, p := range d.Routes {
		if p.Refused == "" {
			out = append(out, p.Route)
		}
	}
	return out
}

// Plan computes the kernel routes this node should have: a direct route to
// each other node's pod CIDRs when that node is on-link, and every prefix
// learned over BGP via its next hop, resolved through the kernel's table as
// a router would. It does no I/O.
//
// Import guards for learned prefixes: a default route only when asked; never
// a prefix equal to or inside this node's own pod CIDRs, nor one equal to a
// connected prefix; and a direct route wins over a learned one for the same
// prefix.
func Plan(s *snapshot.Snapshot, f Facts, o PlanOptions) (Desired, []string) {
	var d Desired
	var warnings []string
	if s.Self == nil {
		return d, nil
	}
	r := resolver{facts: f, memo: map[netip.Addr]resolved{}}
	taken := map[netip.Prefix]bool{}
	own := s.Self.PodCIDRs

	tun := planTunnel(s, f, o, &warnings)
	for i := range s.Nodes {
		n := &s.Nodes[i]
		if n.Name == s.Self.Name {
			continue
		}
		for _, c := range n.PodCIDRs {
			var p Planned
			var peer tunnel.Peer
			if ip, ok := n.InternalIP(c.Addr().Is6()); ok && o.AutoDirectNodeRoutes {
				if link, onLink := r.onLink(ip); onLink {
					// seed 004: only nodes on this L2 segment get a direct route
					p = Planned{Route: Route{Dst: c, Gw: ip, LinkIndex: link}, Kind: KindDirect, For: n.Name}
				}
			}
			if p.Kind == "" && tun.on {
				var why string
				if peer, why = tun.peer(n, c); why != "" {
					warnings = append(warnings, why)
					continue
				}
				p = Planned{Route: Route{Dst: c, Gw: peer.Gateway, LinkIndex: tunnelLink, OnLink: true, Encap: tun.encap(peer)}, Kind: KindTunnel, For: n.Name}
			}
			if p.Kind == "" {
				continue // the fabric carries it, by a learned route or the default
			}
			if slices.ContainsFunc(own, func(o netip.Prefix) bool { return o.Overlaps(c) }) {
				warnings = append(warnings, fmt.Sprintf("node %s's pod CIDR %s overlaps this node's %v: no route", n.Name, c, own))
				continue
			}
			if taken[c] {
				warnings = append(warnings, fmt.Sprintf("pod CIDR %s of node %s is claimed by another node too: no second route", c, n.Name))
				continue
			}
			taken[c] = true
			d.Routes = append(d.Routes, p)
			if p.Kind == KindTunnel {
				d.Tunnel.Peers = append(d.Tunnel.Peers, peer)
			}
		}
	}
	d.Tunnel.Device = tun.device

	learned := map[netip.Prefix]bool{}
	for _, l := range s.Learned {
		if learned[l.Prefix] {
			continue // one best path per prefix; a second is the other family's twin of nothing
		}
		learned[l.Prefix] = true
		p := Planned{Route: Route{Dst: l.Prefix.Masked(), Gw: l.NextHop}, Kind: KindBGP, For: l.Peer.String()}
		switch {
		case taken[p.Route.Dst]:
			continue // the direct route to that node wins; nothing to show
		case l.Prefix.Bits() == 0 && !o.InstallDefaultRoute:
			p.Refused = "learned default route (--install-default-route is off)"
		case slices.ContainsFunc(own, func(c netip.Prefix) bool { return c.Overlaps(l.Prefix) && c.Bits() <= l.Prefix.Bits() }):
			p.Refused = "inside this node's own pod CIDR"
		case r.connected(l.Prefix):
			p.Refused = "connected on this node"
		default:
			gw, link, why := r.resolve(l.NextHop, s.Learned)
			if why != "" {
				p.Refused = why
			} else {
				p.Route.Gw, p.Route.LinkIndex = gw, link
			}
		}
		d.Routes = append(d.Routes, p)
	}
	if !s.LearnedSettled {
		// Peers have not resent their tables yet: what an earlier run
		// installed stays until they have, rather than go and come back.
		planned := map[netip.Prefix]bool{}
		for _, p := range d.Routes {
			planned[p.Route.Dst] = true
		}
		for _, r := range f.Own {
			if !planned[r.Dst] && r.Table == 0 {
				d.Routes = append(d.Routes, Planned{Route: r, Kind: KindBGP, For: KeptUntilSettled})
			}
		}
	}
	slices.SortFunc(d.Routes, func(a, b Planned) int {
		return cmp.Or(comparePrefix(a.Route.Dst, b.Route.Dst), cmp.Compare(a.Kind, b.Kind))
	})
	return d, warnings
}

func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

// resolver answers next-hop questions from the facts. A table of many
// prefixes has few next hops, so each is resolved once.
type resolver struct {
	facts Facts
	memo  map[netip.Addr]resolved
}

type resolved struct {
	gw   netip.Addr
	link int
	why  string
}

// lookup is the kernel's longest-prefix match over the facts.
func (r resolver) lookup(a netip.Addr) (FactRoute, bool) {
	var best FactRoute
	found := false
	for _, fr := range r.facts.Routes {
		if !fr.Dst.Contains(a) {
			continue
		}
		if !found || fr.Dst.Bits() > best.Dst.Bits() || fr.Dst.Bits() == best.Dst.Bits() && fr.Metric < best.Metric {
			best, found = fr, true
		}
	}
	return best, found
}

// onLink reports whether a is reachable without a gateway, as the kernel
// would route it, and on which link.
func (r resolver) onLink(a netip.Addr) (int, bool) {
	fr, ok := r.lookup(a)
	if !ok || fr.Gw.IsValid() || !r.up(fr.LinkIndex) {
		return 0, false
	}
	return fr.LinkIndex, true
}

func (r resolver) up(link int) bool {
	l, ok := r.facts.Links[link]
	return !ok || l.Up // an unknown link is the kernel's business
}

// connected reports whether p is exactly a connected prefix of this node.
func (r resolver) connected(p netip.Prefix) bool {
	for _, fr := range r.facts.Routes {
		if fr.Dst == p && !fr.Gw.IsValid() {
			return true
		}
	}
	return false
}

// resolve finds how to reach a BGP next hop: on-link directly; else through
// another learned prefix whose own next hop is on-link (a ToR passing on an
// iBGP next hop it learned elsewhere); else through the kernel's table (the
// default route, say). It returns the gateway to install and its link, or
// why the next hop is unreachable.
func (r resolver) resolve(nh netip.Addr, learned []snapshot.LearnedRoute) (netip.Addr, int, string) {
	if m, ok := r.memo[nh]; ok {
		return m.gw, m.link, m.why
	}
	gw, link, why := r.resolveOnce(nh, learned)
	r.memo[nh] = resolved{gw, link, why}
	return gw, link, why
}

func (r resolver) resolveOnce(nh netip.Addr, learned []snapshot.LearnedRoute) (netip.Addr, int, string) {
	if !nh.IsValid() || nh.IsUnspecified() {
		return netip.Addr{}, 0, "no next hop"
	}
	if link, ok := r.onLink(nh); ok {
		return nh, link, ""
	}
	// The most specific learned prefix covering the next hop, one level
	// deep, as a router resolves a recursive next hop.
	var via *snapshot.LearnedRoute
	for i := range learned {
		l := &learned[i]
		if l.Prefix.Contains(nh) && l.NextHop != nh && (via == nil || l.Prefix.Bits() > via.Prefix.Bits()) {
			via = l
		}
	}
	if via != nil {
		if link, ok := r.onLink(via.NextHop); ok {
			return via.NextHop, link, ""
		}
	}
	fr, ok := r.lookup(nh)
	if !ok {
		return netip.Addr{}, 0, fmt.Sprintf("next hop %s unreachable: no route to it", nh)
	}
	if !r.up(fr.LinkIndex) {
		return netip.Addr{}, 0, fmt.Sprintf("next hop %s unreachable: link %s is down", nh, r.facts.Links[fr.LinkIndex].Name)
	}
	if !fr.Gw.IsValid() {
		return nh, fr.LinkIndex, ""
	}
	if link, ok := r.onLink(fr.Gw); ok {
		return fr.Gw, link, ""
	}
	return netip.Addr{}, 0, fmt.Sprintf("next hop %s unreachable: its route via %s is not on-link", nh, fr.Gw)
}
