package config

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRangePrefixes(t *testing.T) {
	tests := []struct {
		first, last string
		want        []netip.Prefix
	}{
		{"10.0.0.7", "10.0.0.7", prefixes("10.0.0.7/32")},
		{"10.0.0.0", "10.0.0.255", prefixes("10.0.0.0/24")},
		{"10.0.0.1", "10.0.0.6", prefixes("10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32")},
		{"10.0.0.255", "10.0.1.0", prefixes("10.0.0.255/32", "10.0.1.0/32")},
		{"0.0.0.0", "255.255.255.255", prefixes("0.0.0.0/0")},
		{"255.255.255.254", "255.255.255.255", prefixes("255.255.255.254/31")},
		{"255.255.255.255", "255.255.255.255", prefixes("255.255.255.255/32")},
		{"::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", prefixes("::/0")},
		{"2001:db8::1", "2001:db8::ff", prefixes(
			"2001:db8::1/128", "2001:db8::2/127", "2001:db8::4/126", "2001:db8::8/125",
			"2001:db8::10/124", "2001:db8::20/123", "2001:db8::40/122", "2001:db8::80/121",
		)},
	}
	for _, tc := range tests {
		got := rangePrefixes(netip.MustParseAddr(tc.first), netip.MustParseAddr(tc.last))
		if diff := cmp.Diff(tc.want, got, cmpOpts); diff != "" {
			t.Errorf("rangePrefixes(%s, %s) mismatch (-want +got):\n%s", tc.first, tc.last, diff)
		}
	}
}

// TestRangePrefixesCover checks random ranges: prefixes must be aligned,
// contiguous, cover exactly first..last, and be minimal (no prefix could
// be widened without leaving the range or overlapping its predecessor).
func TestRangePrefixesCover(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		a, b := r.Uint32(), r.Uint32()>>r.UintN(32)
		if r.IntN(2) == 0 {
			b = a + b%4096
		}
		first, last := min(a, b), max(a, b)
		fa, la := addr4(first), addr4(last)
		ps := rangePrefixes(fa, la)
		next := fa
		for i, p := range ps {
			if p.Masked() != p || p.Addr() != next {
				t.Fatalf("range %s-%s: prefix %d %s is unaligned or not contiguous", fa, la, i, p)
			}
			if p.Bits() > 0 {
				wider := netip.PrefixFrom(p.Addr(), p.Bits()-1).Masked()
				if wider.Addr() == p.Addr() && lastAddr(wider).Compare(la) <= 0 {
					t.Fatalf("range %s-%s: prefix %s could be %s", fa, la, p, wider)
				}
			}
			next = lastAddr(p).Next()
		}
		if end := lastAddr(ps[len(ps)-1]); end != la {
			t.Fatalf("range %s-%s: prefixes end at %s", fa, la, end)
		}
	}
}

func addr4(n uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

func TestLastAddr(t *testing.T) {
	for p, want := range map[string]string{
		"10.0.0.0/8":     "10.255.255.255",
		"10.0.0.4/30":    "10.0.0.7",
		"10.0.0.4/32":    "10.0.0.4",
		"0.0.0.0/0":      "255.255.255.255",
		"2001:db8::/33":  "2001:db8:7fff:ffff:ffff:ffff:ffff:ffff",
		"2001:db8::/128": "2001:db8::",
	} {
		if got := lastAddr(netip.MustParsePrefix(p)); got != netip.MustParseAddr(want) {
			t.Errorf("lastAddr(%s) = %s, want %s", p, got, want)
		}
	}
}
