package bgp

import (
	"net/netip"
	"testing"

	"google.golang.org/protobuf/proto"
)

// apiPaths shares attributes between paths but must build, path by path,
// what apiPath builds.
func TestAPIPathsMatchAPIPath(t *testing.T) {
	attrs := Attrs{LocalPref: 150, Communities: "65000:1"}
	paths := []Path{
		{Prefix: netip.MustParsePrefix("10.8.0.1/32"), NextHop: netip.MustParseAddr("10.4.94.11")},
		{Prefix: netip.MustParsePrefix("10.8.0.2/32"), NextHop: netip.MustParseAddr("10.4.94.11")},
		{Prefix: netip.MustParsePrefix("10.8.0.3/32"), NextHop: netip.MustParseAddr("10.4.94.11"), Attrs: attrs},
		{Prefix: netip.MustParsePrefix("10.8.0.4/32"), NextHop: netip.MustParseAddr("10.4.94.11"), Attrs: attrs},
		{Prefix: netip.MustParsePrefix("10.8.0.5/32"), NextHop: netip.MustParseAddr("10.4.94.12")},
		{Prefix: netip.MustParsePrefix("2001:db8::1/128"), NextHop: netip.MustParseAddr("2001:db8:94::11")},
		{Prefix: netip.MustParsePrefix("2001:db8::2/128"), NextHop: netip.MustParseAddr("2001:db8:94::11")},
	}
	for _, withdraw := range []bool{false, true} {
		got := apiPaths(paths, withdraw)
		if len(got) != len(paths) {
			t.Fatalf("apiPaths gave %d paths for %d", len(got), len(paths))
		}
		for i, p := range paths {
			want := apiPath(p)
			want.IsWithdraw = withdraw
			if !proto.Equal(want, got[i]) {
				t.Errorf("apiPaths(withdraw=%v)[%d] = %v, want %v", withdraw, i, got[i], want)
			}
		}
	}
}
