package routing

import (
	"net"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func ipNet(s string) *net.IPNet {
	p := netip.MustParsePrefix(s)
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func ip(s string) net.IP { return netip.MustParseAddr(s).AsSlice() }

func TestToNetlink(t *testing.T) {
	tests := []struct {
		desc  string
		route Route
		want  netlink.Route
	}{{
		desc:  "IPv4 via a gateway",
		route: Route{Dst: netip.MustParsePrefix("10.5.114.0/24"), Gw: netip.MustParseAddr("10.4.94.12"), LinkIndex: 2},
		want: netlink.Route{Family: unix.AF_INET, Dst: ipNet("10.5.114.0/24"), Gw: ip("10.4.94.12"), LinkIndex: 2,
			Table: unix.RT_TABLE_MAIN, Protocol: Protocol, Type: unix.RTN_UNICAST, Scope: netlink.SCOPE_UNIVERSE},
	}, {
		desc:  "IPv4 device route is scope link",
		route: Route{Dst: netip.MustParsePrefix("10.5.0.0/16"), LinkIndex: 3, Table: 100, MTU: 1400},
		want: netlink.Route{Family: unix.AF_INET, Dst: ipNet("10.5.0.0/16"), LinkIndex: 3,
			Table: 100, Protocol: Protocol, Type: unix.RTN_UNICAST, Scope: netlink.SCOPE_LINK, MTU: 1400},
	}, {
		desc:  "IPv6 onlink gateway",
		route: Route{Dst: netip.MustParsePrefix("fd00:10::/64"), Gw: netip.MustParseAddr("fd00:99::1"), LinkIndex: 4, OnLink: true},
		want: netlink.Route{Family: unix.AF_INET6, Dst: ipNet("fd00:10::/64"), Gw: ip("fd00:99::1"), LinkIndex: 4,
			Table: unix.RT_TABLE_MAIN, Protocol: Protocol, Type: unix.RTN_UNICAST, Scope: netlink.SCOPE_UNIVERSE, Flags: int(netlink.FLAG_ONLINK)},
	}, {
		desc:  "IPv6 device route stays scope universe, as the kernel reports it",
		route: Route{Dst: netip.MustParsePrefix("fd00:20::/64"), LinkIndex: 4},
		want: netlink.Route{Family: unix.AF_INET6, Dst: ipNet("fd00:20::/64"), LinkIndex: 4,
			Table: unix.RT_TABLE_MAIN, Protocol: Protocol, Type: unix.RTN_UNICAST, Scope: netlink.SCOPE_UNIVERSE},
	}}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, toNetlink(tt.route)); diff != "" {
				t.Errorf("toNetlink(%s) (-want +got):\n%s", tt.route, diff)
			}
		})
	}
}

// kernelView is a route as a dump reports one the agent wrote: what
// toNetlink wrote plus the metric the kernel filled in.
func kernelView(r Route) netlink.Route {
	nr := toNetlink(r)
	nr.Priority = familyOf(r.Dst.Addr()).defaultPriority
	return nr
}

func TestFromNetlinkReadsBackWhatToNetlinkWrites(t *testing.T) {
	for _, r := range []Route{
		{Dst: netip.MustParsePrefix("10.5.114.0/24"), Gw: netip.MustParseAddr("10.4.94.12"), LinkIndex: 2},
		{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gw: netip.MustParseAddr("10.4.94.1"), LinkIndex: 2, Table: 100},
		{Dst: netip.MustParsePrefix("10.5.0.0/16"), LinkIndex: 3, MTU: 1400},
		{Dst: netip.MustParsePrefix("10.7.0.0/16"), Gw: netip.MustParseAddr("192.0.2.1"), LinkIndex: 3, OnLink: true, Table: 1000},
		{Dst: netip.MustParsePrefix("fd00:10::/64"), Gw: netip.MustParseAddr("fe80::1"), LinkIndex: 4},
		{Dst: netip.MustParsePrefix("fd00:20::/64"), LinkIndex: 4, MTU: 1280},
		{Dst: netip.MustParsePrefix("::/0"), Gw: netip.MustParseAddr("fd00::1"), LinkIndex: 4},
	} {
		nr := kernelView(r)
		got, ok := fromNetlink(&nr)
		if !ok || got != r {
			t.Errorf("fromNetlink(toNetlink(%s)) = %s, %v; want it back", r, got, ok)
		}
	}
}

func TestFromNetlink(t *testing.T) {
	base := Route{Dst: netip.MustParsePrefix("10.5.114.0/24"), Gw: netip.MustParseAddr("10.4.94.12"), LinkIndex: 2}
	tests := []struct {
		desc   string
		edit   func(*netlink.Route)
		want   Route
		wantOK bool
	}{
		{desc: "main table reads as 0", edit: func(nr *netlink.Route) {}, want: base, wantOK: true},
		{desc: "linkdown is state, not configuration", edit: func(nr *netlink.Route) { nr.Flags |= unix.RTNH_F_LINKDOWN }, want: base, wantOK: true},
		{desc: "default route given in 16-byte form", edit: func(nr *netlink.Route) { nr.Dst = &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)} },
			want: Route{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gw: base.Gw, LinkIndex: 2}, wantOK: true},
		{desc: "another metric", edit: func(nr *netlink.Route) { nr.Priority = 100 }},
		{desc: "a preferred source", edit: func(nr *netlink.Route) { nr.Src = ip("10.4.94.1") }},
		{desc: "several next hops", edit: func(nr *netlink.Route) {
			nr.Gw, nr.LinkIndex = nil, 0
			nr.MultiPath = []*netlink.NexthopInfo{{LinkIndex: 2, Gw: ip("10.4.94.12")}, {LinkIndex: 2, Gw: ip("10.4.94.13")}}
		}},
		{desc: "a blackhole", edit: func(nr *netlink.Route) { nr.Type = unix.RTN_BLACKHOLE }},
		{desc: "scope link with a gateway", edit: func(nr *netlink.Route) { nr.Scope = netlink.SCOPE_LINK }},
		{desc: "a metric toNetlink never sets", edit: func(nr *netlink.Route) { nr.Hoplimit = 10 }},
		{desc: "a TOS", edit: func(nr *netlink.Route) { nr.Tos = 0x10 }},
		{desc: "no destination", edit: func(nr *netlink.Route) { nr.Dst = nil }},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			nr := kernelView(base)
			tt.edit(&nr)
			got, ok := fromNetlink(&nr)
			if ok != tt.wantOK || got != tt.want {
				t.Errorf("fromNetlink = %s, %v; want %s, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestDescribeKernelRoute(t *testing.T) {
	names := map[int]string{2: "eth0"}
	tests := []struct {
		nr   netlink.Route
		want string
	}{
		{netlink.Route{Family: unix.AF_INET, Dst: ipNet("10.5.0.0/16"), Gw: ip("10.0.0.1"), LinkIndex: 2, Protocol: unix.RTPROT_STATIC, Type: unix.RTN_UNICAST},
			"a route of protocol static (4) via 10.0.0.1 dev eth0"},
		{netlink.Route{Family: unix.AF_INET, Dst: ipNet("10.5.0.0/16"), LinkIndex: 7, Protocol: unix.RTPROT_KERNEL, Type: unix.RTN_UNICAST},
			"a route of protocol kernel (2) dev if7"},
		{netlink.Route{Family: unix.AF_INET6, Dst: ipNet("::/0"), Gw: ip("fe80::1"), LinkIndex: 2, Protocol: unix.RTPROT_RA, Type: unix.RTN_UNICAST, Priority: 1024},
			"a route of protocol ra (9) via fe80::1 dev eth0"},
		{netlink.Route{Family: unix.AF_INET, Dst: ipNet("0.0.0.0/0"), Gw: ip("10.0.0.1"), LinkIndex: 2, Protocol: unix.RTPROT_DHCP, Type: unix.RTN_UNICAST, Priority: 100},
			"a route of protocol dhcp (16) via 10.0.0.1 dev eth0 metric 100"},
		{netlink.Route{Family: unix.AF_INET, Dst: ipNet("10.9.0.0/16"), Protocol: 99, Type: unix.RTN_BLACKHOLE},
			"a route of protocol 99 type blackhole"},
	}
	for _, tt := range tests {
		if got := describeKernelRoute(&tt.nr, names); got != tt.want {
			t.Errorf("describeKernelRoute(%v) = %q, want %q", tt.nr, got, tt.want)
		}
	}
}
