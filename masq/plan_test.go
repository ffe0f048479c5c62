package masq

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"routeagent.io/route-agent/masq/config"
)

var cmpOpts = cmp.Options{
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

// set builds a Set from lines written as Set.String writes them: "prefix
// kind detail, kind" or "source prefix".
func set(t testing.TB, text string) Set {
	t.Helper()
	var s Set
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if src, ok := strings.CutPrefix(line, "source "); ok {
			s.NonMasqSources = append(s.NonMasqSources, netip.MustParsePrefix(src))
			continue
		}
		prefix, reasons, _ := strings.Cut(line, " ")
		e := Entry{Prefix: netip.MustParsePrefix(prefix)}
		for r := range strings.SplitSeq(reasons, ", ") {
			kind, detail, _ := strings.Cut(r, " ")
			e.Reasons = append(e.Reasons, Reason{Kind: kind, Detail: detail})
		}
		s.Entries = append(s.Entries, e)
	}
	return s
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func parse(t testing.TB, doc string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("config.Parse(%q): %v", doc, err)
	}
	return c
}

// defaults4 is the IPv4 part of the set with no config, less link-local.
const defaults4 = `
10.0.0.0/8 default
100.64.0.0/10 default
172.16.0.0/12 default
192.0.0.0/24 default
192.0.2.0/24 default
192.88.99.0/24 default
192.168.0.0/16 default
198.18.0.0/15 default
198.51.100.0/24 default
203.0.113.0/24 default
240.0.0.0/4 default
`

// withLinkLocal4 inserts 169.254.0.0/16 at its place in defaults4.
var withLinkLocal4 = strings.Replace(defaults4, "172.16.0.0/12", "169.254.0.0/16 link-local\n172.16.0.0/12", 1)

func TestPlan(t *testing.T) {
	tests := []struct {
		desc string
		in   func(t testing.TB) Inputs
		want string
	}{
		{
			desc: "no config: defaults and link-local",
			in:   func(testing.TB) Inputs { return Inputs{} },
			want: withLinkLocal4 + "fe80::/10 link-local\n",
		},
		{
			desc: "empty document: the same",
			in:   func(t testing.TB) Inputs { return Inputs{Config: parse(t, "")} },
			want: withLinkLocal4 + "fe80::/10 link-local\n",
		},
		{
			desc: "empty list: the same",
			in:   func(t testing.TB) Inputs { return Inputs{Config: parse(t, "nonMasqueradeCIDRs: []\n")} },
			want: withLinkLocal4 + "fe80::/10 link-local\n",
		},
		{
			desc: "masqLinkLocal drops 169.254.0.0/16",
			in:   func(t testing.TB) Inputs { return Inputs{Config: parse(t, "masqLinkLocal: true\n")} },
			want: defaults4 + "fe80::/10 link-local\n",
		},
		{
			desc: "masqLinkLocalIPv6 drops fe80::/10",
			in:   func(t testing.TB) Inputs { return Inputs{Config: parse(t, "MasqLinkLocalIPv6: true\n")} },
			want: withLinkLocal4,
		},
		{
			desc: "configured CIDRs replace the defaults, link-local stays (seed 001)",
			in: func(t testing.TB) Inputs {
				return Inputs{Config: parse(t, "nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]\nmasqLinkLocal: false\n")}
			},
			want: `
10.0.0.0/8 config
169.254.0.0/16 link-local
172.16.0.0/12 config
192.168.0.0/16 config
fe80::/10 link-local
`,
		},
		{
			desc: "0.0.0.0/0 configured: every IPv4 destination, IPv6 untouched",
			in: func(t testing.TB) Inputs {
				return Inputs{Config: parse(t, "NonMasqueradeCIDRs: [0.0.0.0/0]\nMasqLinkLocal: true\nMasqLinkLocalIPv6: true\n")}
			},
			want: "0.0.0.0/0 config\n",
		},
		{
			desc: "IPv6 CIDRs only: no IPv4 defaults either",
			in:   func(t testing.TB) Inputs { return Inputs{Config: parse(t, "nonMasqueradeCIDRs: ['fd00::/8']\n")} },
			want: "169.254.0.0/16 link-local\nfd00::/8 config\nfe80::/10 link-local\n",
		},
		{
			desc: "cluster: native routing, pod CIDRs, node addresses",
			in: func(t testing.TB) Inputs {
				return Inputs{
					Config:             parse(t, "nonMasqueradeCIDRs: [192.168.0.0/16]\nmasqLinkLocal: true\nmasqLinkLocalIPv6: true\n"),
					NativeRoutingCIDRs: prefixes("10.244.0.0/16"),
					PodCIDRs:           []PodCIDR{{"node-b", netip.MustParsePrefix("10.245.2.0/24")}, {"node-a", netip.MustParsePrefix("10.245.1.0/24")}},
					NodeAddrs:          []NodeAddr{{"node-a", netip.MustParseAddr("172.20.0.11")}, {"node-b", netip.MustParseAddr("172.20.0.12")}},
				}
			},
			want: `
10.244.0.0/16 native-routing
10.245.1.0/24 pod-cidr node-a
10.245.2.0/24 pod-cidr node-b
172.20.0.11/32 node node-a
172.20.0.12/32 node node-b
192.168.0.0/16 config
`,
		},
		{
			desc: "learned routes ignored unless UseLearned",
			in: func(t testing.TB) Inputs {
				return Inputs{
					Config:  parse(t, "nonMasqueradeCIDRs: [192.168.0.0/16]\nmasqLinkLocal: true\nmasqLinkLocalIPv6: true\n"),
					Learned: []LearnedRoute{{Prefix: netip.MustParsePrefix("10.5.0.0/16"), Peer: netip.MustParseAddr("10.4.36.239")}},
				}
			},
			want: "192.168.0.0/16 config\n",
		},
		{
			desc: "learned routes, never a default",
			in: func(t testing.TB) Inputs {
				peer := netip.MustParseAddr("10.4.36.239")
				return Inputs{
					Config:     parse(t, "nonMasqueradeCIDRs: [192.168.0.0/16]\nmasqLinkLocal: true\nmasqLinkLocalIPv6: true\n"),
					UseLearned: true,
					Learned: []LearnedRoute{
						{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Peer: peer},
						{Prefix: netip.MustParsePrefix("10.5.112.0/21"), Peer: peer},
						{Prefix: netip.MustParsePrefix("::/0"), Peer: netip.MustParseAddr("2001:db8::1")},
						{Prefix: netip.MustParsePrefix("::ffff:0.0.0.0/96"), Peer: netip.MustParseAddr("2001:db8::1")},
						{Prefix: netip.MustParsePrefix("2001:db8:5::/48"), Peer: netip.MustParseAddr("2001:db8::1")},
					},
				}
			},
			want: `
10.5.112.0/21 bgp 10.4.36.239
192.168.0.0/16 config
2001:db8:5::/48 bgp 2001:db8::1
`,
		},
		{
			desc: "community filter, and a default even with the community",
			in: func(t testing.TB) Inputs {
				peer := netip.MustParseAddr("10.4.36.239")
				return Inputs{
					Config:           parse(t, "nonMasqueradeCIDRs: [192.168.0.0/16]\nmasqLinkLocal: true\nmasqLinkLocalIPv6: true\n"),
					UseLearned:       true,
					LearnedCommunity: "64512:100",
					Learned: []LearnedRoute{
						{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Peer: peer, Communities: []string{"64512:100"}},
						{Prefix: netip.MustParsePrefix("10.5.0.0/16"), Peer: peer, Communities: []string{"65535:65281", "64512:100"}},
						{Prefix: netip.MustParsePrefix("10.6.0.0/16"), Peer: peer, Communities: []string{"64512:200"}},
						{Prefix: netip.MustParsePrefix("10.7.0.0/16"), Peer: peer},
					},
				}
			},
			want: "10.5.0.0/16 bgp 10.4.36.239\n192.168.0.0/16 config\n",
		},
		{
			desc: "a prefix given for several reasons appears once with all",
			in: func(t testing.TB) Inputs {
				return Inputs{
					Config:             parse(t, "nonMasqueradeCIDRs: [10.0.0.0/8, 10.244.1.0/24]\nmasqLinkLocal: true\nmasqLinkLocalIPv6: true\n"),
					NativeRoutingCIDRs: prefixes("10.0.0.0/8", "10.0.0.0/8"),
					PodCIDRs: []PodCIDR{
						{"node-b", netip.MustParsePrefix("10.244.1.0/24")},
						{"node-a", netip.MustParsePrefix("10.244.1.0/24")},
						{"node-a", netip.MustParsePrefix("10.244.1.0/24")},
					},
					UseLearned: true,
					Learned: []LearnedRoute{
						{Prefix: netip.MustParsePrefix("10.244.1.0/24"), Peer: netip.MustParseAddr("10.4.36.239")},
						{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Peer: netip.MustParseAddr("10.4.36.238")},
					},
				}
			},
			want: `
10.0.0.0/8 config, native-routing, bgp 10.4.36.238
10.244.1.0/24 config, pod-cidr node-a, pod-cidr node-b, bgp 10.4.36.239
`,
		},
		{
			desc: "overlaps are kept, not aggregated",
			in: func(t testing.TB) Inputs {
				return Inputs{
					PodCIDRs:  []PodCIDR{{"node-a", netip.MustParsePrefix("10.244.0.0/24")}, {"node-b", netip.MustParsePrefix("10.244.1.0/24")}},
					NodeAddrs: []NodeAddr{{"node-a", netip.MustParseAddr("10.1.0.1")}},
				}
			},
			want: strings.Replace(withLinkLocal4, "10.0.0.0/8 default\n",
				"10.0.0.0/8 default\n10.1.0.1/32 node node-a\n10.244.0.0/24 pod-cidr node-a\n10.244.1.0/24 pod-cidr node-b\n", 1) +
				"fe80::/10 link-local\n",
		},
		{
			desc: "IPv6: config, pod CIDRs, node addresses, learned",
			in: func(t testing.TB) Inputs {
				return Inputs{
					Config:             parse(t, "nonMasqueradeCIDRs: ['fd00:10::/32', 192.168.0.0/16]\nmasqLinkLocal: true\n"),
					NativeRoutingCIDRs: prefixes("fd00:10:244::/48"),
					PodCIDRs: []PodCIDR{
						{"node-a", netip.MustParsePrefix("fd00:10:244:1::/64")},
						{"node-a", netip.MustParsePrefix("10.244.1.0/24")},
					},
					NodeAddrs: []NodeAddr{
						{"node-a", netip.MustParseAddr("2001:db8:1::11")},
						{"node-a", netip.MustParseAddr("172.20.0.11")},
					},
					UseLearned: true,
					Learned:    []LearnedRoute{{Prefix: netip.MustParsePrefix("2001:db8:99::/48"), Peer: netip.MustParseAddr("fe80::1")}},
				}
			},
			want: `
10.244.1.0/24 pod-cidr node-a
172.20.0.11/32 node node-a
192.168.0.0/16 config
2001:db8:1::11/128 node node-a
2001:db8:99::/48 bgp fe80::1
fd00:10::/32 config
fd00:10:244::/48 native-routing
fd00:10:244:1::/64 pod-cidr node-a
fe80::/10 link-local
`,
		},
		{
			desc: "inputs in non-canonical form",
			in: func(t testing.TB) Inputs {
				return Inputs{
					Config:             &config.Config{MasqLinkLocal: true, MasqLinkLocalIPv6: true, CIDRsSet: true, NonMasqueradeCIDRs: prefixes("192.168.1.1/16")},
					NativeRoutingCIDRs: []netip.Prefix{{}, netip.MustParsePrefix("::ffff:10.0.0.0/104")},
					PodCIDRs:           []PodCIDR{{"node-a", netip.MustParsePrefix("10.244.1.7/24")}},
					NodeAddrs:          []NodeAddr{{"node-a", netip.MustParseAddr("::ffff:172.20.0.11")}, {"node-b", netip.Addr{}}, {"node-c", netip.MustParseAddr("fe80::1%eth0")}},
				}
			},
			want: `
10.0.0.0/8 native-routing
10.244.1.0/24 pod-cidr node-a
172.20.0.11/32 node node-a
192.168.0.0/16 config
fe80::1/128 node node-c
`,
		},
		{
			desc: "sources",
			in: func(t testing.TB) Inputs {
				return Inputs{Config: parse(t, "NonMasqueradeCIDRs: [10.0.0.0/8]\nNonMasqueradeSrcCIDRs: [172.16.0.0/16, 10.16.0.0/16, 'fd00::/64']\nMasqLinkLocal: true\nMasqLinkLocalIPv6: true\n")}
			},
			want: "10.0.0.0/8 config\nsource 10.16.0.0/16\nsource 172.16.0.0/16\nsource fd00::/64\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			want := set(t, tc.want)
			got := Plan(tc.in(t))
			if diff := cmp.Diff(want, got, cmpOpts); diff != "" {
				t.Errorf("Plan() mismatch (-want +got):\n%s", diff)
			}
			if !got.Equal(want) {
				t.Errorf("Equal() = false for sets go-cmp finds equal")
			}
		})
	}
}

// TestPlanOrderIndependent shuffles the inputs: the set must not change.
func TestPlanOrderIndependent(t *testing.T) {
	in := Inputs{
		Config:             &config.Config{CIDRsSet: true, NonMasqueradeCIDRs: prefixes("10.0.0.0/8", "fd00::/8", "10.244.0.0/16"), NonMasqueradeSrcCIDRs: prefixes("172.16.0.0/16", "10.16.0.0/16", "172.16.0.0/16")},
		NativeRoutingCIDRs: prefixes("10.244.0.0/16", "fd00::/8"),
		PodCIDRs: []PodCIDR{
			{"c", netip.MustParsePrefix("10.244.3.0/24")}, {"a", netip.MustParsePrefix("10.244.1.0/24")},
			{"b", netip.MustParsePrefix("10.244.1.0/24")}, {"a", netip.MustParsePrefix("fd00::/64")},
		},
		NodeAddrs: []NodeAddr{{"a", netip.MustParseAddr("10.244.1.1")}, {"b", netip.MustParseAddr("10.244.1.1")}},
		Learned: []LearnedRoute{
			{Prefix: netip.MustParsePrefix("10.244.1.0/24"), Peer: netip.MustParseAddr("10.4.36.239")},
			{Prefix: netip.MustParsePrefix("10.244.1.0/24"), Peer: netip.MustParseAddr("10.4.36.238")},
		},
		UseLearned: true,
	}
	want := Plan(in)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		shuffled := in
		cfg := *in.Config
		cfg.NonMasqueradeCIDRs = shuffle(rng, cfg.NonMasqueradeCIDRs)
		cfg.NonMasqueradeSrcCIDRs = shuffle(rng, cfg.NonMasqueradeSrcCIDRs)
		shuffled.Config = &cfg
		shuffled.NativeRoutingCIDRs = shuffle(rng, in.NativeRoutingCIDRs)
		shuffled.PodCIDRs = shuffle(rng, in.PodCIDRs)
		shuffled.NodeAddrs = shuffle(rng, in.NodeAddrs)
		shuffled.Learned = shuffle(rng, in.Learned)
		if got := Plan(shuffled); !got.Equal(want) {
			t.Fatalf("Plan() depends on input order:\nwant\n%s\ngot\n%s", want, got)
		}
	}
}

func shuffle[T any](rng *rand.Rand, s []T) []T {
	s = slices.Clone(s)
	rng.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
	return s
}

func TestPrefixesPerFamily(t *testing.T) {
	s := set(t, `
10.0.0.0/8 config
10.0.0.0/16 pod-cidr a
0.0.0.0/0 config
2001:db8::/32 config
fe80::/10 link-local
source 172.16.0.0/16
`)
	if diff := cmp.Diff(prefixes("10.0.0.0/8", "10.0.0.0/16", "0.0.0.0/0"), s.Prefixes4(), cmpOpts); diff != "" {
		t.Errorf("Prefixes4() mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(prefixes("2001:db8::/32", "fe80::/10"), s.Prefixes6(), cmpOpts); diff != "" {
		t.Errorf("Prefixes6() mismatch (-want +got):\n%s", diff)
	}
	if got := (Set{}).Prefixes6(); len(got) != 0 {
		t.Errorf("Prefixes6() of an empty set = %v", got)
	}
}

func TestEqual(t *testing.T) {
	base := "10.0.0.0/8 config, pod-cidr a\nfe80::/10 link-local\nsource 172.16.0.0/16\n"
	if !set(t, base).Equal(set(t, base)) {
		t.Error("equal sets compare unequal")
	}
	if !(Set{}).Equal(Set{Entries: []Entry{}, NonMasqSources: []netip.Prefix{}}) {
		t.Error("nil and empty sets compare unequal")
	}
	for _, other := range []string{
		"10.0.0.0/9 config, pod-cidr a\nfe80::/10 link-local\nsource 172.16.0.0/16\n",
		"10.0.0.0/8 config, pod-cidr b\nfe80::/10 link-local\nsource 172.16.0.0/16\n",
		"10.0.0.0/8 config\nfe80::/10 link-local\nsource 172.16.0.0/16\n",
		"10.0.0.0/8 config, pod-cidr a\nsource 172.16.0.0/16\n",
		"10.0.0.0/8 config, pod-cidr a\nfe80::/10 link-local\n",
		"10.0.0.0/8 config, pod-cidr a\nfe80::/10 link-local\nsource 172.17.0.0/16\n",
	} {
		if set(t, base).Equal(set(t, other)) || set(t, other).Equal(set(t, base)) {
			t.Errorf("sets compare equal:\n%s\nand\n%s", base, other)
		}
	}
}

func TestString(t *testing.T) {
	s := Set{
		Entries: []Entry{
			{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Reasons: []Reason{{Kind: KindConfig}, {Kind: KindBGP, Detail: "10.4.36.239"}}},
			{Prefix: netip.MustParsePrefix("fe80::/10"), Reasons: []Reason{{Kind: KindLinkLocal}}},
		},
		NonMasqSources: prefixes("172.16.0.0/16"),
	}
	want := "10.0.0.0/8 config, bgp 10.4.36.239\nfe80::/10 link-local\nsource 172.16.0.0/16\n"
	if got := s.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
