package nft

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/nftables"
)

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func rangeStrings(rs []Range) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.String())
	}
	return out
}

func TestCollapse(t *testing.T) {
	tests := []struct {
		desc string
		in   []string
		want []string
	}{
		{desc: "empty"},
		{
			desc: "prefix inside another disappears",
			in:   []string{"10.244.1.0/24", "10.0.0.0/8", "10.244.0.0/16"},
			want: []string{"10.0.0.0/8"},
		},
		{
			desc: "touching prefixes stay apart",
			in:   []string{"10.0.1.0/24", "10.0.0.0/24"},
			want: []string{"10.0.0.0/24", "10.0.1.0/24"},
		},
		{
			desc: "duplicates",
			in:   []string{"192.0.2.0/24", "192.0.2.0/24"},
			want: []string{"192.0.2.0/24"},
		},
		{
			desc: "families sorted and never merged",
			in:   []string{"2001:db8::/32", "0.0.0.0/0", "::/0", "2001:db8:1::/48", "10.0.0.0/8"},
			want: []string{"0.0.0.0/0", "::/0"},
		},
		{
			desc: "host bits ignored",
			in:   []string{"10.1.2.3/16"},
			want: []string{"10.1.0.0/16"},
		},
		{
			desc: "top of the address space",
			in:   []string{"255.255.255.255/32", "255.255.255.0/24", "ffff::/16"},
			want: []string{"255.255.255.0/24", "ffff::/16"},
		},
		{
			desc: "IPv4-mapped IPv6 stays IPv6",
			in:   []string{"::ffff:10.0.0.0/104", "10.0.0.0/8"},
			want: []string{"10.0.0.0/8", "::ffff:10.0.0.0/104"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			got := rangeStrings(Collapse(prefixes(tt.in...)))
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Collapse(%v) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestCollapseLeavesInvalidOut(t *testing.T) {
	got := Collapse([]netip.Prefix{{}, netip.MustParsePrefix("10.0.0.0/8")})
	if want := []string{"10.0.0.0/8"}; !slices.Equal(rangeStrings(got), want) {
		t.Errorf("Collapse = %v, want %v", rangeStrings(got), want)
	}
}

// TestCollapseRandom checks Collapse against a brute-force membership test
// over a small corner of the address space.
func TestCollapseRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	base := netip.MustParseAddr("10.0.0.0").As4()
	for round := range 200 {
		var in []netip.Prefix
		for range 1 + rng.IntN(12) {
			a := base
			a[2], a[3] = byte(rng.IntN(4)), byte(rng.IntN(256))
			in = append(in, netip.PrefixFrom(netip.AddrFrom4(a), 22+rng.IntN(11)).Masked())
		}
		got := Collapse(in)
		for i := 1; i < len(got); i++ {
			if got[i].From.Compare(got[i-1].To) <= 0 {
				t.Fatalf("round %d: %v overlaps or is out of order with %v", round, got[i], got[i-1])
			}
		}
		for _, r := range got {
			if _, ok := r.Prefix(); !ok {
				t.Fatalf("round %d: %v from prefixes %v is no prefix", round, r, in)
			}
		}
		for x := range 4 * 256 {
			a := base
			a[2], a[3] = byte(x/256), byte(x%256)
			addr := netip.AddrFrom4(a)
			want := slices.ContainsFunc(in, func(p netip.Prefix) bool { return p.Contains(addr) })
			have := slices.ContainsFunc(got, func(r Range) bool { return r.From.Compare(addr) <= 0 && addr.Compare(r.To) <= 0 })
			if want != have {
				t.Fatalf("round %d: %v covered %v by %v, %v by the collapse %v", round, addr, want, in, have, got)
			}
		}
	}
}

func TestRangePrefix(t *testing.T) {
	r := func(a, b string) Range { return Range{netip.MustParseAddr(a), netip.MustParseAddr(b)} }
	tests := []struct {
		r    Range
		want string // "" for none
	}{
		{r("10.0.0.0", "10.0.0.255"), "10.0.0.0/24"},
		{r("10.0.0.0", "10.0.1.255"), "10.0.0.0/23"},
		{r("10.0.1.0", "10.0.2.255"), ""},
		{r("10.0.0.7", "10.0.0.7"), "10.0.0.7/32"},
		{r("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), "::/0"},
		{r("10.0.0.0", "::1"), ""},
	}
	for _, tt := range tests {
		p, ok := tt.r.Prefix()
		got := ""
		if ok {
			got = p.String()
		}
		if got != tt.want {
			t.Errorf("%v.Prefix() = %q, want %q", tt.r, got, tt.want)
		}
	}
}

func TestSpanElements(t *testing.T) {
	spans := familySpans(families[0], prefixes("10.0.0.0/24", "10.0.1.0/24", "255.255.255.0/24"))
	elems := spanElements(spans)
	type el struct {
		key string
		end bool
	}
	var got []el
	for _, e := range elems {
		a, _ := netip.AddrFromSlice(e.Key)
		got = append(got, el{a.String(), e.IntervalEnd})
	}
	// 10.0.1.0 is both the end of one span and the start of the next, and
	// the span at the top has no end.
	want := []el{{"10.0.0.0", false}, {"10.0.1.0", true}, {"10.0.1.0", false}, {"10.0.2.0", true}, {"255.255.255.0", false}}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(el{})); diff != "" {
		t.Errorf("spanElements (-want +got):\n%s", diff)
	}

	// The kernel dumps in an order of its own.
	shuffled := slices.Clone(elems)
	slices.Reverse(shuffled)
	back, ok := elementSpans(shuffled, 4)
	if !ok || !slices.Equal(back, spans) {
		t.Errorf("elementSpans(spanElements(%v)) = %v, %v", spans, back, ok)
	}
}

func TestElementSpansRejectsWhatItDidNotWrite(t *testing.T) {
	k := func(s string) []byte { return netip.MustParseAddr(s).AsSlice() }
	tests := []struct {
		desc  string
		elems []nftables.SetElement
	}{
		{"end without start", []nftables.SetElement{{Key: k("10.0.0.0"), IntervalEnd: true}}},
		{"two starts", []nftables.SetElement{{Key: k("10.0.0.0")}, {Key: k("10.0.1.0")}, {Key: k("10.0.2.0"), IntervalEnd: true}}},
		{"empty span", []nftables.SetElement{{Key: k("10.0.0.0")}, {Key: k("10.0.0.0"), IntervalEnd: true}}},
		{"wrong key length", []nftables.SetElement{{Key: k("2001:db8::")}}},
	}
	for _, tt := range tests {
		if got, ok := elementSpans(tt.elems, 4); ok {
			t.Errorf("%s: elementSpans = %v, true; want false", tt.desc, got)
		}
	}
}

func TestSuccessorPredecessor(t *testing.T) {
	if _, ok := successor("\xff\xff"); ok {
		t.Error("successor of the highest key exists")
	}
	if _, ok := predecessor("\x00\x00"); ok {
		t.Error("predecessor of the lowest key exists")
	}
	if got, _ := successor("\x01\xff"); got != "\x02\x00" {
		t.Errorf("successor(01ff) = %x", got)
	}
	if got, _ := predecessor("\x02\x00"); got != "\x01\xff" {
		t.Errorf("predecessor(0200) = %x", got)
	}
}

func TestDeviceSpan(t *testing.T) {
	pad := func(s string, b byte) string { return s + strings.Repeat(string([]byte{b}), ifnameLen-len(s)) }
	tests := []struct {
		name    string
		want    span
		wantErr bool
	}{
		{name: "eth0", want: span{pad("eth0", 0), pad("eth0", 0)}},
		{name: "eth+", want: span{pad("eth", 0), pad("eth", 0xff)}},
		{name: "+", want: span{pad("", 0), pad("", 0xff)}},
		{name: "abcdefghijklmno", want: span{"abcdefghijklmno\x00", "abcdefghijklmno\x00"}},
		{name: "", wantErr: true},
		{name: "abcdefghijklmnop", wantErr: true},
		{name: "e+h", wantErr: true},
		{name: "eth0:1", wantErr: true},
		{name: "et h", wantErr: true},
		{name: "..", wantErr: true},
	}
	for _, tt := range tests {
		got, err := deviceSpan(tt.name)
		if (err != nil) != tt.wantErr {
			t.Errorf("deviceSpan(%q) error = %v, want error %v", tt.name, err, tt.wantErr)
			continue
		}
		if got != tt.want {
			t.Errorf("deviceSpan(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
	// An exact name inside a wildcard's span is absorbed by it.
	a, _ := deviceSpan("eth0")
	b, _ := deviceSpan("eth+")
	c, _ := deviceSpan("ens3")
	if got := mergeSpans([]span{a, b, c}); !slices.Equal(got, []span{c, b}) {
		t.Errorf("mergeSpans(eth0, eth+, ens3) = %q", got)
	}
}
