package masq

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	"routeagent.io/route-agent/masq/config"
)

// Kinds of Reason, in the order reasons are listed.
const (
	// KindConfig: the prefix is in the config's nonMasqueradeCIDRs.
	KindConfig = "config"
	// KindDefault: the config lists no CIDRs and the prefix is a default.
	KindDefault = "default"
	// KindLinkLocal: a link-local range that is not masqueraded.
	KindLinkLocal = "link-local"
	// KindNativeRouting: a native routing CIDR.
	KindNativeRouting = "native-routing"
	// KindPodCIDR: a node's pod CIDR; Detail is the node name.
	KindPodCIDR = "pod-cidr"
	// KindNode: a node address; Detail is the node name.
	KindNode = "node"
	// KindBGP: a route learned from a BGP peer; Detail is the peer address.
	KindBGP = "bgp"
)

var kindOrder = []string{KindConfig, KindDefault, KindLinkLocal, KindNativeRouting, KindPodCIDR, KindNode, KindBGP}

// Reason says why a prefix is in the set.
type Reason struct {
	// Kind is one of the Kind constants.
	Kind string
	// Detail names the node or the peer the prefix comes from, or is
	// empty.
	Detail string
}

// String renders the reason as "kind" or "kind detail".
func (r Reason) String() string {
	if r.Detail == "" {
		return r.Kind
	}
	return r.Kind + " " + r.Detail
}

func compareReasons(a, b Reason) int {
	ai, bi := slices.Index(kindOrder, a.Kind), slices.Index(kindOrder, b.Kind)
	if c := cmp.Compare(ai, bi); c != 0 {
		return c
	}
	return cmp.Or(strings.Compare(a.Kind, b.Kind), strings.Compare(a.Detail, b.Detail))
}

// Entry is one prefix of the set and every reason it is there.
type Entry struct {
	Prefix netip.Prefix
	// Reasons are sorted by kind (in the order of the Kind constants),
	// then detail, without duplicates.
	Reasons []Reason
}

// PodCIDR is one pod CIDR of a node.
type PodCIDR struct {
	Node   string
	Prefix netip.Prefix
}

// NodeAddr is one address of a node.
type NodeAddr struct {
	Node string
	Addr netip.Addr
}

// LearnedRoute is a best path received from a BGP peer.
type LearnedRoute struct {
	Prefix netip.Prefix
	Peer   netip.Addr
	// Communities are written "AA:NN" in decimal.
	Communities []string
}

// Inputs is what the routable set is computed from.
type Inputs struct {
	// Config is the ip-masq-agent config in force; nil when there is none,
	// which means the defaults.
	Config             *config.Config
	NativeRoutingCIDRs []netip.Prefix
	// PodCIDRs and NodeAddrs cover every node of the cluster, this one
	// included.
	PodCIDRs  []PodCIDR
	NodeAddrs []NodeAddr
	Learned   []LearnedRoute
	// UseLearned adds the learned prefixes to the set.
	UseLearned bool
	// LearnedCommunity, written "AA:NN", restricts the learned prefixes to
	// those carrying it; empty accepts any.
	LearnedCommunity string
}

// Set is the routable set: destinations that pod traffic reaches without
// being masqueraded.
type Set struct {
	// Entries are sorted by family (IPv4 first), address, then length.
	Entries []Entry
	// NonMasqSources are pod source ranges never masqueraded, sorted the
	// same way.
	NonMasqSources []netip.Prefix
}

// Plan computes the routable set. It is pure: the same inputs give the same
// set, whatever their order.
func Plan(in Inputs) Set {
	reasons := map[netip.Prefix][]Reason{}
	add := func(p netip.Prefix, r Reason) {
		if p, ok := canonical(p); ok {
			reasons[p] = append(reasons[p], r)
		}
	}

	cfg := in.Config
	if cfg == nil {
		cfg = &config.Config{}
	}
	if cfg.CIDRsSet {
		for _, p := range cfg.NonMasqueradeCIDRs {
			add(p, Reason{Kind: KindConfig})
		}
	} else {
		for _, p := range config.DefaultNonMasqueradeCIDRs() {
			add(p, Reason{Kind: KindDefault})
		}
	}
	if !cfg.MasqLinkLocal {
		add(config.LinkLocalIPv4, Reason{Kind: KindLinkLocal})
	}
	if !cfg.MasqLinkLocalIPv6 {
		add(config.LinkLocalIPv6, Reason{Kind: KindLinkLocal})
	}
	for _, p := range in.NativeRoutingCIDRs {
		add(p, Reason{Kind: KindNativeRouting})
	}
	for _, pc := range in.PodCIDRs {
		add(pc.Prefix, Reason{Kind: KindPodCIDR, Detail: pc.Node})
	}
	for _, na := range in.NodeAddrs {
		if !na.Addr.IsValid() {
			continue
		}
		a := na.Addr.Unmap()
		add(netip.PrefixFrom(a, a.BitLen()), Reason{Kind: KindNode, Detail: na.Node})
	}
	if in.UseLearned {
		for _, r := range in.Learned {
			if !usable(r, in.LearnedCommunity) {
				continue
			}
			peer := ""
			if r.Peer.IsValid() {
				peer = r.Peer.String()
			}
			add(r.Prefix, Reason{Kind: KindBGP, Detail: peer})
		}
	}

	var s Set
	for p, rs := range reasons {
		slices.SortFunc(rs, compareReasons)
		s.Entries = append(s.Entries, Entry{Prefix: p, Reasons: slices.Compact(rs)})
	}
	slices.SortFunc(s.Entries, func(a, b Entry) int { return a.Prefix.Compare(b.Prefix) })
	for _, p := range cfg.NonMasqueradeSrcCIDRs {
		if p, ok := canonical(p); ok {
			s.NonMasqSources = append(s.NonMasqSources, p)
		}
	}
	slices.SortFunc(s.NonMasqSources, netip.Prefix.Compare)
	s.NonMasqSources = slices.Compact(s.NonMasqSources)
	return s
}

// usable reports whether a learned route belongs in the set. A default
// route never does: see the package comment.
func usable(r LearnedRoute, community string) bool {
	p, ok := canonical(r.Prefix)
	if !ok || p.Bits() == 0 {
		return false
	}
	return community == "" || slices.Contains(r.Communities, community)
}

// canonical returns p as the datapath matches it: masked, and IPv4 if it is
// an IPv4-mapped IPv6 prefix, since the datapath sees IPv4 packets.
func canonical(p netip.Prefix) (netip.Prefix, bool) {
	if !p.IsValid() {
		return netip.Prefix{}, false
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), true
}

// Prefixes4 returns the IPv4 prefixes of the set, in order.
func (s Set) Prefixes4() []netip.Prefix { return s.prefixes(false) }

// Prefixes6 returns the IPv6 prefixes of the set, in order.
func (s Set) Prefixes6() []netip.Prefix { return s.prefixes(true) }

func (s Set) prefixes(ipv6 bool) []netip.Prefix {
	var out []netip.Prefix
	for _, e := range s.Entries {
		if e.Prefix.Addr().Is6() == ipv6 {
			out = append(out, e.Prefix)
		}
	}
	return out
}

// Equal reports whether two sets hold the same prefixes, reasons and
// sources. Nil and empty slices are equal.
func (s Set) Equal(o Set) bool {
	return slices.EqualFunc(s.Entries, o.Entries, func(a, b Entry) bool {
		return a.Prefix == b.Prefix && slices.Equal(a.Reasons, b.Reasons)
	}) && slices.Equal(s.NonMasqSources, o.NonMasqSources)
}

// String renders the set one entry per line, "prefix reason, reason", then
// one line per source range, "source prefix".
func (s Set) String() string {
	var b strings.Builder
	for _, e := range s.Entries {
		b.WriteString(e.Prefix.String())
		sep := " "
		for _, r := range e.Reasons {
			b.WriteString(sep + r.String())
			sep = ", "
		}
		b.WriteByte('\n')
	}
	for _, p := range s.NonMasqSources {
		b.WriteString("source " + p.String() + "\n")
	}
	return b.String()
}
