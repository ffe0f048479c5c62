package routing

import (
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestRouteCheck(t *testing.T) {
	ok := Route{Dst: netip.MustParsePrefix("10.1.0.0/24"), Gw: netip.MustParseAddr("10.0.0.1"), LinkIndex: 2}
	tests := []struct {
		desc    string
		edit    func(*Route)
		wantErr string
	}{
		{desc: "valid", edit: func(*Route) {}},
		{desc: "device route", edit: func(r *Route) { r.Gw = netip.Addr{} }},
		{desc: "no destination", edit: func(r *Route) { r.Dst = netip.Prefix{} }, wantErr: "no destination"},
		{desc: "unmasked", edit: func(r *Route) { r.Dst = netip.MustParsePrefix("10.1.0.7/24") }, wantErr: "not masked (10.1.0.0/24)"},
		{desc: "no device", edit: func(r *Route) { r.LinkIndex = 0 }, wantErr: "no output device"},
		{desc: "mixed families", edit: func(r *Route) { r.Gw = netip.MustParseAddr("fd00::1") }, wantErr: "not of the destination's family"},
		{desc: "unspecified gateway", edit: func(r *Route) { r.Gw = netip.IPv4Unspecified() }, wantErr: "not a unicast address"},
		{desc: "multicast gateway", edit: func(r *Route) { r.Gw = netip.MustParseAddr("224.0.0.1") }, wantErr: "not a unicast address"},
		{desc: "mapped destination", edit: func(r *Route) { r.Dst = netip.MustParsePrefix("::ffff:10.1.0.0/120") }, wantErr: "IPv4-mapped"},
		{desc: "local table", edit: func(r *Route) { r.Table = unix.RT_TABLE_LOCAL }, wantErr: "table 255"},
		{desc: "negative mtu", edit: func(r *Route) { r.MTU = -1 }, wantErr: "mtu -1"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			r := ok
			tt.edit(&r)
			err := r.check()
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("check(%s) = %v, want an error containing %q", r, err, tt.wantErr)
			}
		})
	}
}

func TestRouteKeyAndFormat(t *testing.T) {
	r := Route{Dst: netip.MustParsePrefix("10.5.114.0/24"), Gw: netip.MustParseAddr("10.4.94.12"), LinkIndex: 2}
	if got, want := r.Key(), (RouteKey{Table: unix.RT_TABLE_MAIN, Dst: r.Dst}); got != want {
		t.Errorf("Key() = %v, want %v", got, want)
	}
	if got, want := r.format(map[int]string{2: "eth0"}), "10.5.114.0/24 via 10.4.94.12 dev eth0"; got != want {
		t.Errorf("format = %q, want %q", got, want)
	}
	r6 := Route{Dst: netip.MustParsePrefix("fd00::/64"), LinkIndex: 3, OnLink: true, Table: 7, MTU: 1280}
	if got, want := r6.String(), "fd00::/64 dev if3 onlink table 7 mtu 1280"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
	if got, want := r6.Key().String(), "fd00::/64 table 7"; got != want {
		t.Errorf("Key().String = %q, want %q", got, want)
	}
	if a, b := (Route{Dst: r.Dst, LinkIndex: 2, Table: unix.RT_TABLE_MAIN}).normalize(), (Route{Dst: r.Dst, LinkIndex: 2}); a != b {
		t.Errorf("table 254 and 0 normalize differently: %v, %v", a, b)
	}
}
