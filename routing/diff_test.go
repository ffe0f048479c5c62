package routing

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestMakePlan(t *testing.T) {
	const eth0, eth1, gone = 2, 3, 9
	links := map[int]linkState{1: {name: "lo", up: true}, eth0: {name: "eth0", up: true}, eth1: {name: "eth1", up: false}}
	pfx := netip.MustParsePrefix
	addr := netip.MustParseAddr
	a := Route{Dst: pfx("10.5.1.0/24"), Gw: addr("10.0.0.2"), LinkIndex: eth0}
	b := Route{Dst: pfx("10.5.2.0/24"), Gw: addr("10.0.0.3"), LinkIndex: eth0}
	v6 := Route{Dst: pfx("fd00:5::/64"), Gw: addr("fd00::2"), LinkIndex: eth0}
	other := func(r Route, proto int, priority int) netlink.Route {
		nr := toNetlink(r)
		nr.Protocol, nr.Priority = netlink.RouteProtocol(proto), priority
		return nr
	}
	type want struct {
		action action
		reason string
		heal   bool
	}
	tests := []struct {
		desc      string
		desired   []Route
		kernel    []netlink.Route
		installed []Route
		want      []want
		deletes   []string
	}{{
		desc:    "adopt what the kernel holds, add what it lacks",
		desired: []Route{a, b, v6},
		kernel:  []netlink.Route{kernelView(a), kernelView(v6)},
		want:    []want{{action: actAdopt}, {action: actAdd}, {action: actAdopt}},
	}, {
		desc:      "an add of a route seen installed before is a heal",
		desired:   []Route{a, b},
		kernel:    []netlink.Route{kernelView(b)},
		installed: []Route{a, b},
		want:      []want{{action: actAdd, heal: true}, {action: actAdopt}},
	}, {
		desc:      "a changed route is not a heal",
		desired:   []Route{a},
		installed: []Route{{Dst: a.Dst, Gw: addr("10.0.0.9"), LinkIndex: eth0}},
		want:      []want{{action: actAdd}},
	}, {
		desc:    "replace ours when it differs",
		desired: []Route{a, {Dst: v6.Dst, Gw: v6.Gw, LinkIndex: eth0, MTU: 1400}},
		kernel:  []netlink.Route{kernelView(Route{Dst: a.Dst, Gw: addr("10.0.0.9"), LinkIndex: eth0}), kernelView(v6)},
		want:    []want{{action: actReplace}, {action: actReplace}},
	}, {
		desc:    "delete our leftovers and strays, never another protocol's",
		desired: []Route{a},
		kernel: []netlink.Route{
			kernelView(a),
			kernelView(b),          // not desired
			other(a, Protocol, 50), // ours at another metric
			kernelView(v6),         // not desired, IPv6
			other(b, unix.RTPROT_STATIC, 0),
			kernelView(Route{Dst: pfx("10.6.0.0/16"), LinkIndex: eth0, Table: 77}), // a table Set does not manage
		},
		want:    []want{{action: actAdopt}},
		deletes: []string{"10.5.1.0/24 via 10.0.0.2 dev eth0 metric 50", "10.5.2.0/24 via 10.0.0.3 dev eth0", "fd00:5::/64 via fd00::2 dev eth0"},
	}, {
		desc:    "another protocol holding the key refuses the route, and ours there goes",
		desired: []Route{a, b},
		kernel:  []netlink.Route{other(a, unix.RTPROT_STATIC, 0), kernelView(a), other(Route{Dst: b.Dst, LinkIndex: eth0}, unix.RTPROT_KERNEL, 0)},
		want: []want{
			{action: actRefuse, reason: "refused: conflicts with a route of protocol static (4) via 10.0.0.2 dev eth0"},
			{action: actRefuse, reason: "refused: conflicts with a route of protocol kernel (2) dev eth0"},
		},
		deletes: []string{"10.5.1.0/24 via 10.0.0.2 dev eth0"},
	}, {
		desc:    "another protocol at another metric, or a more specific prefix, does not hold the key",
		desired: []Route{a, v6},
		kernel: []netlink.Route{
			other(a, unix.RTPROT_STATIC, 100),
			other(Route{Dst: pfx("10.5.1.7/32"), Gw: a.Gw, LinkIndex: eth0}, unix.RTPROT_STATIC, 0),
			other(v6, unix.RTPROT_KERNEL, 256),
		},
		want: []want{{action: actAdd}, {action: actAdd}},
	}, {
		desc:    "a default route of another protocol is never taken over, whatever its metric",
		desired: []Route{{Dst: pfx("0.0.0.0/0"), Gw: addr("10.0.0.1"), LinkIndex: eth0}},
		kernel:  []netlink.Route{other(Route{Dst: pfx("0.0.0.0/0"), Gw: addr("10.0.0.254"), LinkIndex: eth0}, unix.RTPROT_DHCP, 100)},
		want:    []want{{action: actRefuse, reason: "refused: conflicts with a route of protocol dhcp (16) via 10.0.0.254 dev eth0 metric 100"}},
	}, {
		desc:    "routes through a down or missing link wait; the old one of ours goes",
		desired: []Route{{Dst: a.Dst, Gw: a.Gw, LinkIndex: eth1}, {Dst: b.Dst, LinkIndex: gone}},
		kernel:  []netlink.Route{kernelView(a)},
		want: []want{
			{action: actPending, reason: "pending: link eth1 is down"},
			{action: actPending, reason: "pending: link if9 does not exist"},
		},
		deletes: []string{"10.5.1.0/24 via 10.0.0.2 dev eth0"},
	}, {
		desc:    "a route still in the kernel through a down link is adopted",
		desired: []Route{{Dst: a.Dst, LinkIndex: eth1}},
		kernel:  []netlink.Route{kernelView(Route{Dst: a.Dst, LinkIndex: eth1})},
		want:    []want{{action: actAdopt}},
	}, {
		desc:    "invalid routes and clashing repeats are refused; an equal repeat shares the outcome",
		desired: []Route{a, {Dst: pfx("10.5.3.1/24"), LinkIndex: eth0}, {Dst: a.Dst, LinkIndex: eth0}, a, {Dst: a.Dst, LinkIndex: eth0, Table: 5}},
		want: []want{
			{action: actAdd},
			{action: actRefuse, reason: "refused: invalid route 10.5.3.1/24 dev eth0: destination 10.5.3.1/24 is not masked (10.5.3.0/24)"},
			{action: actRefuse, reason: "refused: another desired route holds 10.5.1.0/24: 10.5.1.0/24 via 10.0.0.2 dev eth0"},
			{},
			{action: actAdd},
		},
	}, {
		desc:    "table 254 and table 0 are the same",
		desired: []Route{{Dst: a.Dst, Gw: a.Gw, LinkIndex: eth0, Table: unix.RT_TABLE_MAIN}},
		kernel:  []netlink.Route{kernelView(a)},
		want:    []want{{action: actAdopt}},
	}, {
		desc:   "nothing desired: every route of ours in main goes",
		kernel: []netlink.Route{kernelView(a), kernelView(v6), other(b, unix.RTPROT_BOOT, 0)},
		want:   []want{},
		deletes: []string{
			"10.5.1.0/24 via 10.0.0.2 dev eth0",
			"fd00:5::/64 via fd00::2 dev eth0",
		},
	}}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			ds := newDesiredSet(tt.desired)
			ks := newKernelState(ds)
			manages := func(table int) bool { return table == unix.RT_TABLE_MAIN || ds.tables[table] }
			for i := range tt.kernel {
				ks.observe(&tt.kernel[i], ds, manages)
			}
			installed := map[RouteKey]installedRoute{}
			for _, r := range tt.installed {
				installed[r.Key()] = installedRoute{route: r}
			}
			p := makePlan(ds, ks, links, installed)
			got := make([]want, len(p.steps))
			for i, s := range p.steps {
				got[i] = want{action: s.action, reason: s.reason, heal: s.heal}
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(want{})); diff != "" {
				t.Errorf("steps (-want +got):\n%s", diff)
			}
			var deletes []string
			for _, d := range p.deletes {
				deletes = append(deletes, d.format(linkNames(links)))
			}
			if diff := cmp.Diff(tt.deletes, deletes); diff != "" {
				t.Errorf("deletes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDeleteRequestNamesOurProtocol(t *testing.T) {
	ds := newDesiredSet(nil)
	ks := newKernelState(ds)
	nr := toNetlink(Route{Dst: netip.MustParsePrefix("fd00:5::/64"), Gw: netip.MustParseAddr("fd00::2"), LinkIndex: 2, Table: 300})
	nr.Priority = 1024
	ks.observe(&nr, ds, func(int) bool { return true })
	if len(ks.others) != 1 {
		t.Fatalf("observed %d routes of ours, want 1", len(ks.others))
	}
	got := deleteRequest(ks.others[0])
	want := netlink.Route{Family: unix.AF_INET6, Dst: ipNet("fd00:5::/64"), Gw: ip("fd00::2"), LinkIndex: 2, Table: 300,
		Priority: 1024, Protocol: Protocol, Scope: unix.RT_SCOPE_NOWHERE}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("deleteRequest (-want +got):\n%s", diff)
	}
}
