package bgp

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	bgpconfig "routeagent.io/route-agent/bgp/config"
	"routeagent.io/route-agent/cluster/snapshot"
)

// LoadBalancerClass is the spec.loadBalancerClass this agent announces,
// besides the default (unset) class that MetalLB v0.12 announces. Services
// of any other class belong to another implementation. It equals
// lbipam.Class, the class the allocator assigns addresses to; it is not
// imported from there because lbipam links client-go, which a planner
// must not.
const LoadBalancerClass = "routeagent.io/bgp"

// LBStatus explains what this node does with one LoadBalancer Service.
type LBStatus struct {
	Namespace, Name string
	// Addresses are the Service's ingress IPs.
	Addresses []netip.Addr
	// Pool names the bgp-config pools that hold the addresses, comma
	// separated; empty when none does.
	Pool string
	// Advertised is true when this node announces at least one of the
	// addresses.
	Advertised bool
	// Reason says why the Service, or some of its addresses, are not
	// announced; empty when every address is.
	Reason string
}

// LBStatuses explains, for each LoadBalancer Service of the snapshot, in
// snapshot order, whether this node announces it and why not. It does no
// I/O.
func LBStatuses(s *snapshot.Snapshot) []LBStatus {
	lb := planLB(s)
	var down string
	switch {
	case s.Announce.LBIPsOff:
		down = "LB IP announcement disabled (--bgp-announce-lb-ip=false)"
	case s.Self == nil:
		down = "this node's Node object has not been seen"
	case s.BGP.Source == "":
		down = "BGP is disabled on this node (--bgp-config is empty)"
	case s.BGP.Config == nil:
		down = "no bgp-config in force"
	default:
		if d, _ := Plan(s, Global{}); len(d.Peers) == 0 {
			down = "BGP is down on this node: no peer selects it, or it has no router-id"
		}
	}
	if down != "" {
		for i := range lb.statuses {
			st := &lb.statuses[i]
			st.Advertised = false
			st.Reason = strings.Join(slices.DeleteFunc([]string{down, st.Reason}, func(r string) bool { return r == "" }), "; ")
		}
	}
	return lb.statuses
}

// lbPlan is what planLB decides: the paths of the LoadBalancer addresses,
// sorted by prefix, the explanation of each Service, and warnings.
type lbPlan struct {
	paths    []Path
	statuses []LBStatus
	warnings []string
}

// lbAttrs gathers the attributes that several advertisements give one
// prefix.
type lbAttrs struct {
	nextHop     netip.Addr
	localPref   uint32
	communities []bgpconfig.Community
}

// planLB decides which LoadBalancer addresses this node announces, as a
// MetalLB v0.12 speaker in BGP mode would: the addresses of the Services of
// our classes that lie in a bgp pool, when the Service has a ready
// endpoint (policy Cluster) or a ready endpoint on this node (policy
// Local), once per advertisement of the pool. Statuses are filled even
// when nothing can be announced (no Self, no config), so that LBStatuses
// can explain every Service.
func planLB(s *snapshot.Snapshot) lbPlan {
	var out lbPlan
	var cfg *bgpconfig.Config
	if s.BGP.Config != nil && s.Self != nil {
		cfg = s.BGP.Config
	}
	byPrefix := map[netip.Prefix]*lbAttrs{}
	var warnings warningGroups
	for _, svc := range s.Services {
		st := LBStatus{Namespace: svc.Namespace, Name: svc.Name, Addresses: slices.Clone(svc.Ingress)}
		var reasons []string
		switch {
		case !svc.LoadBalancer:
			reasons = append(reasons, "not of type LoadBalancer")
		case svc.Class != "" && svc.Class != LoadBalancerClass:
			reasons = append(reasons, fmt.Sprintf("class %q is not ours", svc.Class))
		case len(svc.Ingress) == 0:
			reasons = append(reasons, "no ingress address assigned")
		}
		if len(reasons) > 0 || cfg == nil {
			st.Reason = strings.Join(reasons, "; ")
			out.statuses = append(out.statuses, st)
			continue
		}
		// Endpoints decide for the whole Service; the addresses are still
		// checked against the config, so that a mistake there shows up
		// before the first endpoint is ready.
		endpointsOK := svc.HasReady
		if !svc.HasReady {
			reasons = append(reasons, "no ready endpoint")
		} else if svc.ExternalTrafficPolicyLocal && !slices.Contains(svc.ReadyNodes, s.Self.Name) {
			// Traffic sent here would find no endpoint: kube-proxy does
			// not forward Local traffic to other nodes.
			endpointsOK = false
			reasons = append(reasons, "no local endpoint")
		}
		var pools []string
		for _, ip := range svc.Ingress {
			adds, pool, reason, ws := lbAddress(s.Self, cfg, svc, ip)
			if pool != "" && !slices.Contains(pools, pool) {
				pools = append(pools, pool)
			}
			warnings.add(ws...)
			if reason != "" {
				reasons = append(reasons, reason)
				continue
			}
			if !endpointsOK {
				continue
			}
			st.Advertised = true
			for prefix, a := range adds {
				merged, ok := byPrefix[prefix]
				if !ok {
					byPrefix[prefix] = a
					continue
				}
				merge(merged, a)
			}
		}
		st.Pool = strings.Join(pools, ",")
		st.Reason = strings.Join(reasons, "; ")
		out.statuses = append(out.statuses, st)
	}
	out.warnings = warnings.lines()
	for prefix, a := range byPrefix {
		out.paths = append(out.paths, Path{Prefix: prefix, NextHop: a.nextHop, Attrs: Attrs{
			// The speaker hands LOCAL_PREF to GoBGP for every peer; GoBGP
			// itself strips it from UPDATEs to eBGP peers, as RFC 4271
			// requires, so it only reaches iBGP peers.
			LocalPref:   a.localPref,
			Communities: NewCommunities(a.communities...),
		}})
	}
	slices.SortFunc(out.paths, func(a, b Path) int { return comparePrefixes(a.Prefix, b.Prefix) })
	return out
}

// merge folds b into a. MetalLB announces one path per advertisement, but
// the speaker keys paths by prefix: advertisements that give the same
// prefix (of one pool, of pools that aggregate to one prefix, or of
// Services sharing an address) become one path carrying the union of
// their communities and the highest local preference, so no community a
// router filters on is lost and the most preferred intent wins.
func merge(a, b *lbAttrs) {
	a.localPref = max(a.localPref, b.localPref)
	a.communities = append(a.communities, b.communities...)
}

// lbAddress plans one ingress address of svc: the prefix of each of its
// pool's advertisements with their attributes, or the reason it is not
// announced, and warnings about problems an operator should fix. pool is
// the name of the pool holding ip, "" when none does.
func lbAddress(self *snapshot.Node, cfg *bgpconfig.Config, svc snapshot.Service, ip netip.Addr) (adds map[netip.Prefix]*lbAttrs, pool, reason string, warnings []lbWarning) {
	p := poolOf(cfg, ip)
	if p == nil {
		return nil, "", fmt.Sprintf("address %s outside every bgp pool", ip),
			[]lbWarning{{"no pool", fmt.Sprintf("service %s/%s: address %s not advertised: it lies in no address pool of the bgp-config", svc.Namespace, svc.Name, ip)}}
	}
	if p.Protocol != bgpconfig.ProtocolBGP {
		// Not a mistake: another speaker answers for that pool.
		return nil, p.Name, fmt.Sprintf("address %s: pool %q is not bgp (protocol %s)", ip, p.Name, p.Protocol), nil
	}
	nh, ok := self.InternalIP(ip.Is6())
	if !ok {
		return nil, p.Name, fmt.Sprintf("address %s: node has no %s InternalIP", ip, ipFamily(ip)),
			[]lbWarning{{"no InternalIP " + ipFamily(ip), fmt.Sprintf("service %s/%s: address %s not advertised: node %s has no %s InternalIP",
				svc.Namespace, svc.Name, ip, self.Name, ipFamily(ip))}}
	}
	adds = map[netip.Prefix]*lbAttrs{}
	var clashes []string
	for _, ad := range p.Advertisements {
		bits := ad.AggregationLength
		if ip.Is6() {
			bits = ad.AggregationLengthV6
		}
		prefix := netip.PrefixFrom(ip, bits).Masked()
		// The speaker keys paths by prefix: an equal prefix would replace
		// the pod CIDR path, or give it the Service's attributes.
		if slices.Contains(self.PodCIDRs, prefix) {
			clashes = append(clashes, prefix.String())
			warnings = append(warnings, lbWarning{"pod CIDR " + p.Name, fmt.Sprintf("service %s/%s: prefix %s of address %s not advertised: pool %q aggregates it to this node's pod CIDR",
				svc.Namespace, svc.Name, prefix, ip, p.Name)})
			continue
		}
		a := &lbAttrs{nextHop: nh, localPref: ad.LocalPref, communities: slices.Clone(ad.Communities)}
		if cur, ok := adds[prefix]; ok {
			merge(cur, a)
		} else {
			adds[prefix] = a
		}
	}
	if len(adds) == 0 {
		return nil, p.Name, fmt.Sprintf("address %s: prefix %s is this node's pod CIDR", ip, strings.Join(clashes, ", ")), warnings
	}
	return adds, p.Name, "", warnings
}

// lbWarning is a warning about one address of one Service; kind names its
// cause.
type lbWarning struct{ kind, text string }

// warningGroups says each cause once: with thousands of Services outside
// every pool, a line each would flood the log and routectl status (and
// writing them out cost as much as planning), while routectl services
// names every Service anyway.
type warningGroups struct {
	kinds []string
	first map[string]string
	count map[string]int
}

func (g *warningGroups) add(ws ...lbWarning) {
	for _, w := range ws {
		if g.count == nil {
			g.first, g.count = map[string]string{}, map[string]int{}
		}
		if g.count[w.kind] == 0 {
			g.kinds = append(g.kinds, w.kind)
			g.first[w.kind] = w.text
		}
		g.count[w.kind]++
	}
}

// lines returns one warning per cause, in the order they were first met.
func (g *warningGroups) lines() []string {
	var out []string
	for _, k := range g.kinds {
		line := g.first[k]
		if n := g.count[k]; n > 1 {
			line += fmt.Sprintf(" (and %d more addresses for the same reason; routectl services lists each Service)", n-1)
		}
		out = append(out, line)
	}
	return out
}

func ipFamily(a netip.Addr) string {
	if a.Is6() {
		return "IPv6"
	}
	return "IPv4"
}

// poolOf returns the pool holding ip. Pools never overlap (the config
// rejects it), so there is at most one.
func poolOf(cfg *bgpconfig.Config, ip netip.Addr) *bgpconfig.Pool {
	for i := range cfg.Pools {
		if slices.ContainsFunc(cfg.Pools[i].Prefixes, func(p netip.Prefix) bool { return p.Contains(ip) }) {
			return &cfg.Pools[i]
		}
	}
	return nil
}

// lbFamilyWarnings warns once per family of LoadBalancer paths that no
// selected peer can carry; as for pod CIDRs, the paths stay planned.
func lbFamilyWarnings(paths []Path, peers []Peer) []string {
	var warnings []string
	for _, fam := range []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()} {
		n := 0
		for _, p := range paths {
			if p.Prefix.Addr().Is6() == fam.Is6() {
				n++
			}
		}
		if n == 0 || slices.ContainsFunc(peers, func(p Peer) bool { return p.carries(fam.Is6()) }) {
			continue
		}
		warnings = append(warnings, fmt.Sprintf("%d LoadBalancer prefixes of %s reach no peer: no selected peer carries that family (%s)",
			n, ipFamily(fam), carriersHint(fam)))
	}
	return warnings
}
