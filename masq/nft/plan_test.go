package nft

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

func baseConfig() Config {
	return Config{
		Routable4:      prefixes("10.0.0.0/8", "10.244.1.0/24", "192.0.2.0/24"),
		Routable6:      prefixes("fd00::/8"),
		NonMasqSources: prefixes("10.244.1.128/25", "fd00:1::/64"),
		LocalPods:      prefixes("10.244.1.0/24", "fd00:244:1::/64"),
		Devices:        []string{"eth+", "bond0"},
		PortMin:        61000,
		PortMax:        65000,
		IPv4:           true,
		IPv6:           true,
	}
}

func TestPlanSplitsFamilies(t *testing.T) {
	d, err := plan(baseConfig())
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range families {
		st := d[i]
		if st == nil {
			t.Fatalf("%s: no table", f.name)
		}
		if got := slices.Sorted(maps.Keys(st.sets)); !slices.Equal(got, slices.Sorted(slices.Values(f.setNames()))) {
			t.Errorf("%s sets = %v, want %v", f.name, got, f.setNames())
		}
		if n := len(st.sets[setDevices]); n != 2 {
			t.Errorf("%s: %d device spans, want 2", f.name, n)
		}
	}
	want4 := map[string][]string{
		"routable4":    {"10.0.0.0/8", "192.0.2.0/24"},
		"local_pods4":  {"10.244.1.0/24"},
		"nonmasq_src4": {"10.244.1.128/25"},
	}
	want6 := map[string][]string{
		"routable6":    {"fd00::/8"},
		"local_pods6":  {"fd00:244:1::/64"},
		"nonmasq_src6": {"fd00:1::/64"},
	}
	for i, want := range []map[string][]string{want4, want6} {
		for name, w := range want {
			var got []string
			for _, s := range d[i].sets[name] {
				got = append(got, s.addrRange().String())
			}
			if !slices.Equal(got, w) {
				t.Errorf("set %s = %v, want %v", name, got, w)
			}
		}
	}
}

func TestPlanFamiliesOff(t *testing.T) {
	c := baseConfig()
	c.IPv6 = false
	d, err := plan(c)
	if err != nil {
		t.Fatal(err)
	}
	if d[0] == nil || d[1] != nil {
		t.Errorf("IPv4 only: tables %v, %v", d[0] != nil, d[1] != nil)
	}
	c.IPv4 = false
	if d, _ = plan(c); d[0] != nil || d[1] != nil {
		t.Errorf("no family: tables %v, %v", d[0] != nil, d[1] != nil)
	}
}

func TestPlanRefuses(t *testing.T) {
	tests := []struct {
		desc   string
		change func(*Config)
		want   string
	}{
		{"no ports", func(c *Config) { c.PortMin, c.PortMax = 0, 0 }, "port range 0-0"},
		{"ports reversed", func(c *Config) { c.PortMin, c.PortMax = 65000, 61000 }, "port range 65000-61000"},
		{"IPv6 in Routable4", func(c *Config) { c.Routable4 = append(c.Routable4, prefixes("fd00::/8")...) }, "Routable4: prefix fd00::/8 is not IPv4"},
		{"IPv4 in Routable6", func(c *Config) { c.Routable6 = prefixes("10.0.0.0/8") }, "Routable6: prefix 10.0.0.0/8 is not IPv6"},
		{"unaligned", func(c *Config) { c.LocalPods = prefixes("10.244.1.1/24") }, "LocalPods: prefix 10.244.1.1/24 is not aligned"},
		{"invalid", func(c *Config) { c.NonMasqSources = []netip.Prefix{{}} }, "NonMasqSources: invalid prefix"},
		{"bad device", func(c *Config) { c.Devices = []string{"eth 0"} }, `device "eth 0"`},
	}
	for _, tt := range tests {
		c := baseConfig()
		tt.change(&c)
		_, err := plan(c)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: plan error %v, want one containing %q", tt.desc, err, tt.want)
		}
	}
}

func TestChainRules(t *testing.T) {
	for _, f := range families {
		rules := chainRules(f, 61000, 65000)
		if len(rules) != 5 {
			t.Fatalf("%s: %d rules", f.name, len(rules))
		}
		// Every rule but the last returns, and the last masquerades to the
		// port range.
		for _, r := range rules[:4] {
			if v, ok := r.exprs[len(r.exprs)-1].(*expr.Verdict); !ok || v.Kind != expr.VerdictReturn {
				t.Errorf("%s rule %q does not end in return", f.name, r.comment)
			}
		}
		last := rules[4].exprs
		lo, hi := last[1].(*expr.Immediate), last[2].(*expr.Immediate)
		if string(lo.Data) != "\xee\x48" || string(hi.Data) != "\xfd\xe8" {
			t.Errorf("%s: ports %x-%x, want ee48-fde8", f.name, lo.Data, hi.Data)
		}
		if m := last[3].(*expr.Masq); !m.ToPorts || m.RegProtoMin != lo.Register || m.RegProtoMax != hi.Register {
			t.Errorf("%s: masq %+v does not take the ports from registers %d, %d", f.name, m, lo.Register, hi.Register)
		}
		// The lookups name the family's sets, inverted where the packet
		// must be in the set to go on.
		wantLookups := []struct {
			set    string
			invert bool
		}{{setDevices, true}, {f.localPods(), true}, {f.nonMasqSrc(), false}, {f.routable(), false}}
		for i, w := range wantLookups {
			l := rules[i].exprs[1].(*expr.Lookup)
			if l.SetName != w.set || l.Invert != w.invert {
				t.Errorf("%s rule %d: lookup %s invert %v, want %s invert %v", f.name, i, l.SetName, l.Invert, w.set, w.invert)
			}
		}
		p := rules[3].exprs[0].(*expr.Payload)
		if p.Len != f.keyType.Bytes || p.Offset != f.daddrOff {
			t.Errorf("%s: destination loaded from offset %d length %d", f.name, p.Offset, p.Len)
		}
	}

	// Comments are stable, and change with what the rule does.
	a, b := chainRules(families[0], 61000, 65000), chainRules(families[0], 61000, 65000)
	c := chainRules(families[0], 61000, 64000)
	for i := range a {
		if a[i].comment != b[i].comment {
			t.Errorf("rule %d: comment %q then %q", i, a[i].comment, b[i].comment)
		}
	}
	if a[4].comment == c[4].comment {
		t.Errorf("the masquerade rule's comment %q ignores its ports", a[4].comment)
	}
}

func haveRules(comments ...string) []*nftables.Rule {
	var out []*nftables.Rule
	for i, c := range comments {
		out = append(out, &nftables.Rule{Handle: uint64(10 + i), UserData: commentData(c)})
	}
	return out
}

func wantRules(comments ...string) []rule {
	var out []rule
	for _, c := range comments {
		out = append(out, rule{comment: c})
	}
	return out
}

func TestDiffRules(t *testing.T) {
	type insert struct {
		comment string
		before  uint64
	}
	tests := []struct {
		desc     string
		have     []string // handles 10, 11, ...
		want     []string
		wantGone []uint64
		wantAdd  []insert
	}{
		{desc: "same", have: []string{"a", "b", "c"}, want: []string{"a", "b", "c"}},
		{desc: "empty chain", want: []string{"a", "b"}, wantAdd: []insert{{"a", 0}, {"b", 0}}},
		{desc: "last changed", have: []string{"a", "b", "c"}, want: []string{"a", "b", "d"}, wantGone: []uint64{12}, wantAdd: []insert{{"d", 0}}},
		{desc: "first changed", have: []string{"a", "b"}, want: []string{"x", "b"}, wantGone: []uint64{10}, wantAdd: []insert{{"x", 11}}},
		{desc: "stranger and duplicate", have: []string{"s", "a", "a", "b"}, want: []string{"a", "b"}, wantGone: []uint64{10, 12}},
		{desc: "missing in the middle", have: []string{"a", "c"}, want: []string{"a", "b", "c"}, wantAdd: []insert{{"b", 11}}},
		{desc: "out of order", have: []string{"b", "a"}, want: []string{"a", "b"}, wantGone: []uint64{11}, wantAdd: []insert{{"a", 10}}},
	}
	for _, tt := range tests {
		gone, add := diffRules(haveRules(tt.have...), wantRules(tt.want...))
		var gotGone []uint64
		for _, r := range gone {
			gotGone = append(gotGone, r.Handle)
		}
		var gotAdd []insert
		for _, a := range add {
			gotAdd = append(gotAdd, insert{a.rule.comment, a.before})
		}
		if !slices.Equal(gotGone, tt.wantGone) || !slices.Equal(gotAdd, tt.wantAdd) {
			t.Errorf("%s: diffRules deletes %v and adds %v, want %v and %v", tt.desc, gotGone, gotAdd, tt.wantGone, tt.wantAdd)
		}
	}
}

func TestDiffSpans(t *testing.T) {
	f := families[0]
	have := familySpans(f, prefixes("10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"))
	want := familySpans(f, prefixes("10.0.0.0/23", "10.0.1.0/24", "10.0.2.0/24", "10.0.9.0/24"))
	gone, added := diffSpans(have, want)
	str := func(ss []span) (out []string) {
		for _, s := range ss {
			out = append(out, s.addrRange().String())
		}
		return out
	}
	if got := str(gone); !slices.Equal(got, []string{"10.0.0.0/24", "10.0.1.0/24"}) {
		t.Errorf("gone = %v", got)
	}
	if got := str(added); !slices.Equal(got, []string{"10.0.0.0/23", "10.0.9.0/24"}) {
		t.Errorf("added = %v", got)
	}
}

func TestTableStateEqual(t *testing.T) {
	a, _ := plan(baseConfig())
	b, _ := plan(baseConfig())
	if !a.equal(b) {
		t.Error("two plans of one config differ")
	}
	c := baseConfig()
	c.Routable4 = append(c.Routable4, prefixes("203.0.113.0/24")...)
	d, _ := plan(c)
	if a.equal(d) {
		t.Error("a new routable prefix went unnoticed")
	}
	c = baseConfig()
	c.PortMax = 64000
	d, _ = plan(c)
	if a.equal(d) {
		t.Error("a new port range went unnoticed")
	}
}
