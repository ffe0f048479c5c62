package nft

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
)

func newMasq(t testing.TB, ns netns.NsHandle) *Masq {
	t.Helper()
	m, err := New(Options{NetNS: int(ns)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

func mustSet(t testing.TB, m *Masq, c Config) {
	t.Helper()
	if err := m.Set(c); err != nil {
		t.Fatalf("Set: %v", err)
	}
}

func labConfig() Config {
	return Config{
		Routable4:      prefixes("10.0.0.0/8", "10.244.1.0/24", "203.0.113.0/24"),
		Routable6:      prefixes("fd00::/8", "fd00:1::/64"),
		NonMasqSources: prefixes("198.51.100.200/32"),
		LocalPods:      []netip.Prefix{podNet4, podNet6},
		Devices:        []string{"ext+"},
		PortMin:        61000,
		PortMax:        65000,
		IPv4:           true,
		IPv6:           true,
	}
}

// dump renders every table, chain, rule (with its counters) and set
// element in the namespace, read through a connection of its own.
func dump(t testing.TB, ns netns.NsHandle) string {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTables()
	if err != nil {
		t.Fatalf("listing tables: %v", err)
	}
	var out []string
	for _, tb := range tables {
		out = append(out, fmt.Sprintf("table %d %s", tb.Family, tb.Name))
		chains, err := c.ListChainsOfTableFamily(tb.Family)
		if err != nil {
			t.Fatalf("listing chains: %v", err)
		}
		for _, ch := range chains {
			if ch.Table.Name != tb.Name {
				continue
			}
			out = append(out, fmt.Sprintf(" chain %s %s hook %d prio %d", ch.Name, ch.Type, *ch.Hooknum, *ch.Priority))
			rules, err := c.GetRules(tb, ch)
			if err != nil {
				t.Fatalf("listing rules: %v", err)
			}
			for _, r := range rules {
				line := fmt.Sprintf("  rule %d %q", r.Handle, ruleComment(r))
				for _, e := range r.Exprs {
					line += fmt.Sprintf(" %#v", e)
				}
				out = append(out, line)
			}
		}
		sets, err := c.GetSets(tb)
		if err != nil {
			t.Fatalf("listing sets: %v", err)
		}
		for _, s := range sets {
			elems, err := c.GetSetElements(s)
			if err != nil {
				t.Fatalf("listing elements of %s: %v", s.Name, err)
			}
			var es []string
			for _, e := range elems {
				es = append(es, fmt.Sprintf("%x/%v", e.Key, e.IntervalEnd))
			}
			slices.Sort(es)
			out = append(out, fmt.Sprintf(" set %s %s interval %v: %s", s.Name, s.KeyType.Name, s.Interval, strings.Join(es, " ")))
		}
	}
	return joinLines(out)
}

// masqRule returns the handle of a family's masquerade rule.
func masqRule(t testing.TB, ns netns.NsHandle, f family) uint64 {
	t.Helper()
	c, _ := nftables.New(nftables.WithNetNSFd(int(ns)))
	tb := &nftables.Table{Name: DefaultTable, Family: f.table}
	rules, err := c.GetRules(tb, &nftables.Chain{Name: chainName, Table: tb})
	if err != nil {
		t.Fatalf("listing %s rules: %v", f.name, err)
	}
	for _, r := range rules {
		if hasMasq(r) {
			return r.Handle
		}
	}
	t.Fatalf("no %s masquerade rule", f.name)
	return 0
}

func counters(t testing.TB, m *Masq) Counters {
	t.Helper()
	c, err := m.Counters()
	if err != nil {
		t.Fatalf("Counters: %v", err)
	}
	return c
}

func TestMasquerade(t *testing.T) {
	l := newLab(t)
	m := newMasq(t, l.node)
	base := labConfig()

	// Before Set, nothing is translated.
	l.notMasqueraded(t, outAddr4, outAddr6)
	mustSet(t, m, base)
	l.masqueraded(t, 61000, 65000)
	// One UDP and one TCP connection per family.
	if got := counters(t, m); got.IPv4.Packets != 2 || got.IPv6.Packets != 2 || got.IPv4.Bytes == 0 || got.IPv6.Bytes == 0 {
		t.Errorf("Counters = %+v after two masqueraded connections per family", got)
	}

	t.Run("same config sends nothing", func(t *testing.T) {
		before, gen, batches := dump(t, l.node), mustGeneration(t, l.node), m.batches.Load()
		for range 3 {
			mustSet(t, m, base)
		}
		if got := m.batches.Load(); got != batches {
			t.Errorf("Set with the same config sent %d batches", got-batches)
		}
		if got := mustGeneration(t, l.node); got != gen {
			t.Errorf("the ruleset generation went from %d to %d", gen, got)
		}
		if after := dump(t, l.node); after != before {
			t.Errorf("the tables changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})

	t.Run("routable destination keeps the pod address", func(t *testing.T) {
		handles := [2]uint64{masqRule(t, l.node, families[0]), masqRule(t, l.node, families[1])}
		before := counters(t, m)
		c := labConfig()
		c.Routable4 = append(c.Routable4, outNet4)
		c.Routable6 = append(c.Routable6, outNet6)
		batches := m.batches.Load()
		mustSet(t, m, c)
		if got := m.batches.Load() - batches; got != 1 {
			t.Errorf("the change took %d batches, want 1", got)
		}
		l.notMasqueraded(t, outAddr4, outAddr6)
		for i, f := range families {
			if h := masqRule(t, l.node, f); h != handles[i] {
				t.Errorf("%s masquerade rule replaced (handle %d, was %d)", f.name, h, handles[i])
			}
		}
		if after := counters(t, m); after != before {
			t.Errorf("counters went from %+v to %+v with no flow masqueraded", before, after)
		}
		mustSet(t, m, base)
		l.masqueraded(t, 61000, 65000)
		if after := counters(t, m); after.IPv4.Packets != before.IPv4.Packets+2 || after.IPv6.Packets != before.IPv6.Packets+2 {
			t.Errorf("counters went from %+v to %+v over two masqueraded flows per family", before, after)
		}
	})

	t.Run("source never masqueraded", func(t *testing.T) {
		c := labConfig()
		c.NonMasqSources = append(c.NonMasqSources, netip.PrefixFrom(podAddr4, 32), podNet6)
		mustSet(t, m, c)
		l.notMasqueraded(t, outAddr4, outAddr6)
		mustSet(t, m, base)
	})

	t.Run("other device", func(t *testing.T) {
		c := labConfig()
		c.Devices = []string{"eth+", "ext1"}
		mustSet(t, m, c)
		l.notMasqueraded(t, outAddr4, outAddr6)
		c.Devices = []string{nodeIfExt}
		mustSet(t, m, c)
		l.masqueraded(t, 61000, 65000)
		mustSet(t, m, base)
	})

	t.Run("port range change", func(t *testing.T) {
		c := labConfig()
		c.PortMin, c.PortMax = 40000, 40009
		mustSet(t, m, c)
		l.masqueraded(t, 40000, 40009)
		mustSet(t, m, base)
		l.masqueraded(t, 61000, 65000)
	})

	t.Run("family off", func(t *testing.T) {
		c := labConfig()
		c.IPv6 = false
		mustSet(t, m, c)
		l.masqueraded4Only(t)
		mustSet(t, m, base)
		l.masqueraded(t, 61000, 65000)
	})

	t.Run("repairs what others change", func(t *testing.T) {
		c, _ := nftables.New(nftables.WithNetNSFd(int(l.node)))
		tb := &nftables.Table{Name: DefaultTable, Family: nftables.TableFamilyIPv4}
		ch := &nftables.Chain{Name: chainName, Table: tb}
		if err := c.DelRule(&nftables.Rule{Table: tb, Chain: ch, Handle: masqRule(t, l.node, families[0])}); err != nil {
			t.Fatal(err)
		}
		s := &nftables.Set{Table: tb, Name: families[0].localPods(), KeyType: nftables.TypeIPAddr, Interval: true}
		c.FlushSet(s)
		if err := c.Flush(); err != nil {
			t.Fatalf("editing the table behind its back: %v", err)
		}
		l.notMasqueraded(t, outAddr4)
		mustSet(t, m, base)
		l.masqueraded(t, 61000, 65000)
	})

	t.Run("remove", func(t *testing.T) {
		if err := m.Remove(); err != nil {
			t.Fatalf("Remove: %v", err)
		}
		if d := dump(t, l.node); d != "" {
			t.Errorf("left behind:\n%s", d)
		}
		if err := m.Remove(); err != nil {
			t.Errorf("Remove with no table: %v", err)
		}
		if got := counters(t, m); got != (Counters{}) {
			t.Errorf("Counters with no table = %+v", got)
		}
		l.notMasqueraded(t, outAddr4, outAddr6)
		// Set after Remove builds the tables again.
		mustSet(t, m, base)
		l.masqueraded(t, 61000, 65000)
	})
}

// masqueraded4Only checks that IPv4 is masqueraded and IPv6 is not.
func (l *lab) masqueraded4Only(t testing.TB) {
	t.Helper()
	for _, proto := range []string{"udp", "tcp"} {
		if s := l.flow(t, proto, outAddr4); s.addr != nodeExt4 {
			t.Errorf("%s to %s came from %s, want %s", proto, outAddr4, s, nodeExt4)
		}
	}
	l.notMasqueraded(t, outAddr6)
}

func mustGeneration(t testing.TB, ns netns.NsHandle) uint32 {
	t.Helper()
	g, err := generation(int(ns))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestLargeRoutableSet loads a routable set of the size a large cluster
// has, with overlaps, then changes a few prefixes: the change must touch
// only them.
func TestLargeRoutableSet(t *testing.T) {
	ns := newNS(t)
	m := newMasq(t, ns)
	var routable4, routable6 []netip.Prefix
	for i := range 16384 {
		routable4 = append(routable4, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24))
		var a [16]byte
		a[0], a[1], a[2], a[3], a[4], a[5] = 0xfd, 0, byte(i>>8), byte(i), 0, 0
		routable6 = append(routable6, netip.PrefixFrom(netip.AddrFrom16(a), 32))
	}
	// Overlaps: a covering prefix and some inside others.
	routable4 = append(routable4, prefixes("10.1.0.0/16", "10.2.3.128/25")...)
	routable6 = append(routable6, prefixes("fd00:1::/32", "fd00:200::/24")...)
	c := Config{
		Routable4: routable4, Routable6: routable6,
		LocalPods: prefixes("10.244.1.0/24"), Devices: []string{"eth+"},
		PortMin: 61000, PortMax: 65000, IPv4: true, IPv6: true,
	}
	start := time.Now()
	mustSet(t, m, c)
	t.Logf("loading %d + %d prefixes took %v", len(routable4), len(routable6), time.Since(start))

	v4 := elementCount(t, ns, families[0])
	want4 := 2 * len(Collapse(routable4))
	if v4 != want4 {
		t.Errorf("routable4 holds %d elements, want %d", v4, want4)
	}

	before := dump(t, ns)
	c.Routable4 = slices.Clone(routable4)
	c.Routable4[5] = netip.MustParsePrefix("172.16.0.0/12")
	c.Routable4 = append(c.Routable4, netip.MustParsePrefix("192.168.0.0/16"))
	start = time.Now()
	mustSet(t, m, c)
	t.Logf("changing two prefixes took %v", time.Since(start))
	after := dump(t, ns)
	if n := lineDiff(before, after); n != 1 {
		t.Errorf("changing two prefixes changed %d dump lines, want 1 (routable4)", n)
	}
	if !strings.Contains(after, fmt.Sprintf("%x/false", netip.MustParseAddr("172.16.0.0").AsSlice())) {
		t.Error("172.16.0.0/12 did not arrive")
	}
	if strings.Contains(after, fmt.Sprintf("%x/false", netip.MustParseAddr("10.0.5.0").AsSlice())) {
		t.Error("10.0.5.0/24 did not leave")
	}
	batches := m.batches.Load()
	for _, when := range []string{"after a change, reading the tables back", "again, reading only the generation"} {
		start = time.Now()
		mustSet(t, m, c)
		t.Logf("Set with the same config %s took %v", when, time.Since(start))
	}
	if m.batches.Load() != batches {
		t.Error("Set with the same config sent a batch")
	}
}

func elementCount(t testing.TB, ns netns.NsHandle, f family) int {
	t.Helper()
	c, _ := nftables.New(nftables.WithNetNSFd(int(ns)))
	s := &nftables.Set{Table: &nftables.Table{Name: DefaultTable, Family: f.table}, Name: f.routable()}
	elems, err := c.GetSetElements(s)
	if err != nil {
		t.Fatalf("listing %s: %v", s.Name, err)
	}
	return len(elems)
}

func lineDiff(a, b string) int {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	if len(al) != len(bl) {
		return -1
	}
	n := 0
	for i := range al {
		if al[i] != bl[i] {
			n++
		}
	}
	return n
}

// TestRuleset checks what the kernel holds after Set, read back through
// the library: the chain's hook and priority, and the rules' order.
func TestRuleset(t *testing.T) {
	ns := newNS(t)
	m := newMasq(t, ns)
	mustSet(t, m, labConfig())
	c, _ := nftables.New(nftables.WithNetNSFd(int(ns)))
	for _, f := range families {
		tb := &nftables.Table{Name: DefaultTable, Family: f.table}
		ch, err := c.ListChain(tb, chainName)
		if err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		if ch.Type != nftables.ChainTypeNAT || *ch.Hooknum != *nftables.ChainHookPostrouting || *ch.Priority != 100 {
			t.Errorf("%s chain: type %s hook %d priority %d", f.name, ch.Type, *ch.Hooknum, *ch.Priority)
		}
		rules, err := c.GetRules(tb, ch)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range rules {
			got = append(got, ruleComment(r))
		}
		var want []string
		for _, r := range chainRules(f, 61000, 65000) {
			want = append(want, r.comment)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s rules:\n%s\nwant:\n%s", f.name, joinLines(got), joinLines(want))
		}
		last := rules[len(rules)-1].Exprs
		if mq, ok := last[len(last)-1].(*expr.Masq); !ok || !mq.ToPorts || !mq.FullyRandom || mq.Random || mq.Persistent {
			t.Errorf("%s: last rule ends in %#v", f.name, last[len(last)-1])
		}
		s, err := c.GetSetByName(tb, setDevices)
		if err != nil {
			t.Fatal(err)
		}
		elems, err := c.GetSetElements(s)
		if err != nil {
			t.Fatal(err)
		}
		// "ext+" is the span from "ext" padded with zeroes to the name
		// after every "ext…".
		var keys []string
		for _, e := range elems {
			keys = append(keys, fmt.Sprintf("%q/%v", bytes.TrimRight(e.Key, "\x00"), e.IntervalEnd))
		}
		slices.Sort(keys)
		if want := []string{`"ext"/false`, `"exu"/true`}; !slices.Equal(keys, want) {
			t.Errorf("%s devices set holds %v, want %v", f.name, keys, want)
		}
	}
}

func ruleComments(t testing.TB, c *nftables.Conn, tb *nftables.Table) []string {
	t.Helper()
	rules, err := c.GetRules(tb, &nftables.Chain{Name: chainName, Table: tb})
	if err != nil {
		t.Fatalf("listing rules: %v", err)
	}
	var out []string
	for _, r := range rules {
		out = append(out, ruleComment(r))
	}
	return out
}

func wantComments(f family, c Config) []string {
	var out []string
	for _, r := range chainRules(f, c.PortMin, c.PortMax) {
		out = append(out, r.comment)
	}
	return out
}

// TestRepairs edits the tables behind Set's back, as an operator or
// another program might, and checks that the next Set puts them right.
func TestRepairs(t *testing.T) {
	ns := newNS(t)
	m := newMasq(t, ns)
	cfg := labConfig()
	c, _ := nftables.New(nftables.WithNetNSFd(int(ns)))
	f := families[0]
	tb := &nftables.Table{Name: DefaultTable, Family: f.table}

	t.Run("rules and elements", func(t *testing.T) {
		mustSet(t, m, cfg)
		rules, err := c.GetRules(tb, &nftables.Chain{Name: chainName, Table: tb})
		if err != nil {
			t.Fatal(err)
		}
		// Delete the second and fourth rules, add a stranger at the top,
		// and an element to a set.
		for _, i := range []int{1, 3} {
			if err := c.DelRule(rules[i]); err != nil {
				t.Fatal(err)
			}
		}
		c.InsertRule(&nftables.Rule{Table: tb, Chain: &nftables.Chain{Name: chainName, Table: tb},
			Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}, UserData: commentData("stranger")})
		routable := &nftables.Set{Table: tb, Name: f.routable(), KeyType: f.keyType, Interval: true}
		if err := c.SetAddElements(routable, spanElements(familySpans(f, prefixes("198.18.0.0/15")))); err != nil {
			t.Fatal(err)
		}
		if err := c.Flush(); err != nil {
			t.Fatalf("editing the table: %v", err)
		}
		mustSet(t, m, cfg)
		if got, want := ruleComments(t, c, tb), wantComments(f, cfg); !slices.Equal(got, want) {
			t.Errorf("rules after repair:\n%s\nwant:\n%s", joinLines(got), joinLines(want))
		}
		elems, err := c.GetSetElements(routable)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := elementSpans(elems, 4); !slices.Equal(got, familySpans(f, cfg.Routable4)) {
			t.Errorf("routable4 after repair holds %d spans, want %v", len(got), cfg.Routable4)
		}
	})

	t.Run("incompatible table", func(t *testing.T) {
		if err := m.Remove(); err != nil {
			t.Fatal(err)
		}
		// A chain at another priority, a set that is not an interval
		// set, and objects Set does not know.
		c.AddTable(tb)
		c.AddChain(&nftables.Chain{Name: chainName, Table: tb, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityRef(50)})
		c.AddChain(&nftables.Chain{Name: "stale", Table: tb})
		if err := c.AddSet(&nftables.Set{Table: tb, Name: f.routable(), KeyType: f.keyType}, nil); err != nil {
			t.Fatal(err)
		}
		if err := c.AddSet(&nftables.Set{Table: tb, Name: "old", KeyType: f.keyType}, nil); err != nil {
			t.Fatal(err)
		}
		if err := c.Flush(); err != nil {
			t.Fatalf("making an incompatible table: %v", err)
		}
		mustSet(t, m, cfg)
		d := dump(t, ns)
		for _, gone := range []string{"chain stale", "set old", "prio 50"} {
			if strings.Contains(d, gone) {
				t.Errorf("%q survived:\n%s", gone, d)
			}
		}
		if !strings.Contains(d, " set routable4 ipv4_addr interval true") {
			t.Errorf("routable4 is not an interval set:\n%s", d)
		}
		if got, want := ruleComments(t, c, tb), wantComments(f, cfg); !slices.Equal(got, want) {
			t.Errorf("rules after rebuild:\n%s\nwant:\n%s", joinLines(got), joinLines(want))
		}
	})

	t.Run("stale objects in a compatible table", func(t *testing.T) {
		c.AddChain(&nftables.Chain{Name: "stale", Table: tb})
		c.AddRule(&nftables.Rule{Table: tb, Chain: &nftables.Chain{Name: "stale", Table: tb},
			Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}})
		if err := c.AddSet(&nftables.Set{Table: tb, Name: "old", KeyType: f.keyType}, nil); err != nil {
			t.Fatal(err)
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		handle := masqRule(t, ns, f)
		mustSet(t, m, cfg)
		d := dump(t, ns)
		for _, gone := range []string{"chain stale", "set old"} {
			if strings.Contains(d, gone) {
				t.Errorf("%q survived:\n%s", gone, d)
			}
		}
		if h := masqRule(t, ns, f); h != handle {
			t.Errorf("the masquerade rule was replaced (handle %d, was %d)", h, handle)
		}
	})
}
