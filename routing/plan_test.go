package routing

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"routeagent.io/route-agent/cluster/snapshot"
	"routeagent.io/route-agent/routing/tunnel"
)

var netipCmp = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

const eth0, mgmt0 = 2, 3

// rack94Facts is rack94-node1's kernel table in the lab: its segment, the
// management network, and a default route via the ToR.
func rack94Facts() Facts {
	return Facts{
		Routes: []FactRoute{
			{Dst: pfx("10.4.94.0/24"), LinkIndex: eth0},
			{Dst: pfx("10.250.0.0/24"), LinkIndex: mgmt0},
			{Dst: pfx("0.0.0.0/0"), Gw: addr("10.4.94.1"), LinkIndex: eth0},
		},
		Links: map[int]Link{eth0: {Name: "eth0", Up: true}, mgmt0: {Name: "mgmt0", Up: true}},
	}
}

func node(name, ip, cidr string) snapshot.Node {
	n := snapshot.Node{Name: name, InternalIPs: []netip.Addr{addr(ip)}}
	if cidr != "" {
		n.PodCIDRs = []netip.Prefix{pfx(cidr)}
	}
	return n
}

func labSnapshot(learned ...snapshot.LearnedRoute) *snapshot.Snapshot {
	nodes := []snapshot.Node{
		node("rack83-node1", "10.4.83.11", "10.5.119.0/24"),
		node("rack94-node1", "10.4.94.11", "10.5.112.0/24"),
		node("rack94-node2", "10.4.94.12", "10.5.114.0/24"),
	}
	return &snapshot.Snapshot{
		Cluster:        snapshot.Cluster{Synced: true, NodeName: "rack94-node1", Nodes: nodes, Self: &nodes[1]},
		Learned:        learned,
		LearnedSettled: true,
	}
}

func learnedVia(prefix, nh, peer string) snapshot.LearnedRoute {
	return snapshot.LearnedRoute{Prefix: pfx(prefix), NextHop: addr(nh), Peer: addr(peer)}
}

func TestPlan(t *testing.T) {
	on := PlanOptions{AutoDirectNodeRoutes: true}
	tests := []struct {
		desc     string
		snap     *snapshot.Snapshot
		facts    Facts
		opts     PlanOptions
		want     []Planned
		warnings []string
	}{
		{
			desc: "seed 004: same rack direct, other rack via the ToR",
			snap: labSnapshot(
				learnedVia("10.5.119.0/24", "10.4.94.1", "10.4.94.1"),
				learnedVia("10.4.83.0/24", "10.4.94.1", "10.4.94.1"),
			),
			facts: rack94Facts(), opts: on,
			want: []Planned{
				{Route: Route{Dst: pfx("10.4.83.0/24"), Gw: addr("10.4.94.1"), LinkIndex: eth0}, Kind: KindBGP, For: "10.4.94.1"},
				{Route: Route{Dst: pfx("10.5.114.0/24"), Gw: addr("10.4.94.12"), LinkIndex: eth0}, Kind: KindDirect, For: "rack94-node2"},
				{Route: Route{Dst: pfx("10.5.119.0/24"), Gw: addr("10.4.94.1"), LinkIndex: eth0}, Kind: KindBGP, For: "10.4.94.1"},
			},
		},
		{
			desc:  "autoDirectNodeRoutes off: no direct routes",
			snap:  labSnapshot(),
			facts: rack94Facts(), opts: PlanOptions{},
		},
		{
			desc: "a node beyond a gateway is not on-link even inside a covering prefix",
			snap: func() *snapshot.Snapshot {
				s := labSnapshot()
				s.Nodes = append(s.Nodes, node("far", "10.4.95.7", "10.5.120.0/24"))
				s.Self = &s.Nodes[1]
				return s
			}(),
			facts: func() Facts {
				f := rack94Facts()
				f.Routes = append(f.Routes, FactRoute{Dst: pfx("10.4.0.0/16"), Gw: addr("10.4.94.1"), LinkIndex: eth0})
				return f
			}(),
			opts: on,
			want: []Planned{
				{Route: Route{Dst: pfx("10.5.114.0/24"), Gw: addr("10.4.94.12"), LinkIndex: eth0}, Kind: KindDirect, For: "rack94-node2"},
			},
		},
		{
			desc: "a node on-link over another link is routed there",
			snap: func() *snapshot.Snapshot {
				s := labSnapshot()
				s.Nodes = append(s.Nodes, node("mgmt-only", "10.250.0.20", "10.5.121.0/24"))
				s.Self = &s.Nodes[1]
				return s
			}(),
			facts: rack94Facts(), opts: on,
			want: []Planned{
				{Route: Route{Dst: pfx("10.5.114.0/24"), Gw: addr("10.4.94.12"), LinkIndex: eth0}, Kind: KindDirect, For: "rack94-node2"},
				{Route: Route{Dst: pfx("10.5.121.0/24"), Gw: addr("10.250.0.20"), LinkIndex: mgmt0}, Kind: KindDirect, For: "mgmt-only"},
			},
		},
		{
			desc: "link down: no direct route over it, learned next hop unreachable",
			snap: labSnapshot(learnedVia("10.5.119.0/24", "10.4.94.1", "10.4.94.1")),
			facts: func() Facts {
				f := rack94Facts()
				f.Links[eth0] = Link{Name: "eth0", Up: false}
				return f
			}(),
			opts: on,
			want: []Planned{
				{Route: Route{Dst: pfx("10.5.119.0/24"), Gw: addr("10.4.94.1")}, Kind: KindBGP, For: "10.4.94.1",
					Refused: "next hop 10.4.94.1 unreachable: link eth0 is down"},
			},
		},
		{
			desc:  "a direct route wins over a learned one for the same prefix",
			snap:  labSnapshot(learnedVia("10.5.114.0/24", "10.4.94.1", "10.4.94.1")),
			facts: rack94Facts(), opts: on,
			want: []Planned{
				{Route: Route{Dst: pfx("10.5.114.0/24"), Gw: addr("10.4.94.12"), LinkIndex: eth0}, Kind: KindDirect, For: "rack94-node2"},
			},
		},
		{
			desc: "import guards: default route, own pod CIDR and inside it, connected prefix",
			snap: labSnapshot(
				learnedVia("0.0.0.0/0", "10.4.94.1", "10.4.94.1"),
				learnedVia("10.5.112.0/24", "10.4.94.1", "10.4.94.1"),
				learnedVia("10.5.112.128/25", "10.4.94.1", "10.4.94.1"),
				learnedVia("10.4.94.0/24", "10.4.94.1", "10.4.94.1"),
				learnedVia("10.5.0.0/16", "10.4.94.1", "10.4.94.1"),
			),
			facts: rack94Facts(),
			want: []Planned{
				{Route: Route{Dst: pfx("0.0.0.0/0"), Gw: addr("10.4.94.1")}, Kind: KindBGP, For: "10.4.94.1",
					Refused: "learned default route (--install-default-route is off)"},
				{Route: Route{Dst: pfx("10.4.94.0/24"), Gw: addr("10.4.94.1")}, Kind: KindBGP, For: "10.4.94.1",
					Refused: "connected on this node"},
				// A covering aggregate is fine: the node's own /24 is more specific.
				{Route: Route{Dst: pfx("10.5.0.0/16"), Gw: addr("10.4.94.1"), LinkIndex: eth0}, Kind: KindBGP, For: "10.4.94.1"},
				{Route: Route{Dst: pfx("10.5.112.0/24"), Gw: addr("10.4.94.1")}, Kind: KindBGP, For: "10.4.94.1",
					Refused: "inside this node's own pod CIDR"},
				{Route: Route{Dst: pfx("10.5.112.128/25"), Gw: addr("10.4.94.1")}, Kind: KindBGP, For: "10.4.94.1",
					Refused: "inside this node's own pod CIDR"},
			},
		},
		{
			desc:  "a learned default route when asked",
			snap:  labSnapshot(learnedVia("0.0.0.0/0", "10.4.94.1", "10.4.94.1")),
			facts: rack94Facts(), opts: PlanOptions{InstallDefaultRoute: true},
			want: []Planned{
				{Route: Route{Dst: pfx("0.0.0.0/0"), Gw: addr("10.4.94.1"), LinkIndex: eth0}, Kind: KindBGP, For: "10.4.94.1"},
			},
		},
		{
			desc: "iBGP next hop beyond the ToR resolves through the learned link prefix",
			// rack83-node1 learns rack 94's pod CIDR with tor94's link
			// address as next hop (iBGP keeps it), and the link prefix
			// from tor83.
			snap: func() *snapshot.Snapshot {
				s := labSnapshot(
					learnedVia("10.5.112.0/24", "10.4.255.1", "10.4.83.1"),
					learnedVia("10.4.255.0/30", "10.4.83.1", "10.4.83.1"),
				)
				s.NodeName, s.Self = "rack83-node1", &s.Nodes[0]
				return s
			}(),
			facts: Facts{
				Routes: []FactRoute{{Dst: pfx("10.4.83.0/24"), LinkIndex: eth0}},
				Links:  map[int]Link{eth0: {Name: "eth0", Up: true}},
			},
			opts: on,
			want: []Planned{
				{Route: Route{Dst: pfx("10.4.255.0/30"), Gw: addr("10.4.83.1"), LinkIndex: eth0}, Kind: KindBGP, For: "10.4.83.1"},
				{Route: Route{Dst: pfx("10.5.112.0/24"), Gw: addr("10.4.83.1"), LinkIndex: eth0}, Kind: KindBGP, For: "10.4.83.1"},
			},
		},
		{
			desc:  "a next hop the kernel reaches via a gateway resolves to that gateway",
			snap:  labSnapshot(learnedVia("10.9.0.0/16", "10.4.255.1", "10.4.94.1")),
			facts: rack94Facts(),
			want: []Planned{
				{Route: Route{Dst: pfx("10.9.0.0/16"), Gw: addr("10.4.94.1"), LinkIndex: eth0}, Kind: KindBGP, For: "10.4.94.1"},
			},
		},
		{
			desc: "unreachable next hop is refused with the reason",
			snap: labSnapshot(learnedVia("10.9.0.0/16", "192.0.2.1", "10.4.94.1")),
			facts: Facts{
				Routes: []FactRoute{{Dst: pfx("10.4.94.0/24"), LinkIndex: eth0}},
				Links:  map[int]Link{eth0: {Name: "eth0", Up: true}},
			},
			want: []Planned{
				{Route: Route{Dst: pfx("10.9.0.0/16"), Gw: addr("192.0.2.1")}, Kind: KindBGP, For: "10.4.94.1",
					Refused: "next hop 192.0.2.1 unreachable: no route to it"},
			},
		},
		{
			desc: "IPv6 through the same path",
			snap: func() *snapshot.Snapshot {
				nodes := []snapshot.Node{
					{Name: "a", InternalIPs: []netip.Addr{addr("fd00:94::11")}, PodCIDRs: []netip.Prefix{pfx("fd00:5:112::/64")}},
					{Name: "b", InternalIPs: []netip.Addr{addr("fd00:94::12")}, PodCIDRs: []netip.Prefix{pfx("fd00:5:114::/64")}},
				}
				return &snapshot.Snapshot{
					Cluster: snapshot.Cluster{Synced: true, NodeName: "a", Nodes: nodes, Self: &nodes[0]},
					Learned: []snapshot.LearnedRoute{{Prefix: pfx("fd00:5:119::/64"), NextHop: addr("fd00:94::1"), Peer: addr("fd00:94::1")}},
				}
			}(),
			facts: Facts{
				Routes: []FactRoute{{Dst: pfx("fd00:94::/64"), LinkIndex: eth0}},
				Links:  map[int]Link{eth0: {Name: "eth0", Up: true}},
			},
			opts: on,
			want: []Planned{
				{Route: Route{Dst: pfx("fd00:5:114::/64"), Gw: addr("fd00:94::12"), LinkIndex: eth0}, Kind: KindDirect, For: "b"},
				{Route: Route{Dst: pfx("fd00:5:119::/64"), Gw: addr("fd00:94::1"), LinkIndex: eth0}, Kind: KindBGP, For: "fd00:94::1"},
			},
		},
		{
			desc: "overlapping pod CIDRs are warned about, not routed",
			snap: func() *snapshot.Snapshot {
				s := labSnapshot()
				s.Nodes[2].PodCIDRs = []netip.Prefix{pfx("10.5.112.0/25")}
				return s
			}(),
			facts: rack94Facts(), opts: on,
			warnings: []string{"node rack94-node2's pod CIDR 10.5.112.0/25 overlaps this node's [10.5.112.0/24]: no route"},
		},
		{
			desc: "after a restart, an earlier run's routes stay until BGP settles",
			snap: func() *snapshot.Snapshot {
				s := labSnapshot(learnedVia("10.4.83.0/24", "10.4.94.1", "10.4.94.1"))
				s.LearnedSettled = false
				return s
			}(),
			facts: func() Facts {
				f := rack94Facts()
				f.Own = []Route{
					{Dst: pfx("10.4.83.0/24"), Gw: addr("10.4.94.1"), LinkIndex: eth0},
					{Dst: pfx("10.5.114.0/24"), Gw: addr("10.4.94.12"), LinkIndex: eth0},
					{Dst: pfx("10.5.119.0/24"), Gw: addr("10.4.94.1"), LinkIndex: eth0},
					{Dst: pfx("10.7.0.0/16"), Gw: addr("10.4.94.1"), LinkIndex: eth0, Table: 100},
				}
				return f
			}(),
			opts: on,
			want: []Planned{
				{Route: Route{Dst: pfx("10.4.83.0/24"), Gw: addr("10.4.94.1"), LinkIndex: eth0}, Kind: KindBGP, For: "10.4.94.1"},
				{Route: Route{Dst: pfx("10.5.114.0/24"), Gw: addr("10.4.94.12"), LinkIndex: eth0}, Kind: KindDirect, For: "rack94-node2"},
				{Route: Route{Dst: pfx("10.5.119.0/24"), Gw: addr("10.4.94.1"), LinkIndex: eth0}, Kind: KindBGP, For: KeptUntilSettled},
			},
		},
		{
			desc: "this node unknown: nothing",
			snap: &snapshot.Snapshot{Cluster: snapshot.Cluster{Synced: true, NodeName: "x"}},
			opts: on,
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			got, warnings := Plan(tc.snap, tc.facts, tc.opts)
			if diff := cmp.Diff(tc.want, got.Routes, netipCmp); diff != "" {
				t.Errorf("routes (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.warnings, warnings); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
			for _, r := range got.Kernel() {
				if r.LinkIndex == 0 {
					t.Errorf("kernel route %v has no link", r)
				}
			}
		})
	}
}

// The same inputs in any order give the same plan.
func TestPlanOrderIndependent(t *testing.T) {
	s := labSnapshot(
		learnedVia("10.5.119.0/24", "10.4.94.1", "10.4.94.1"),
		learnedVia("10.4.83.0/24", "10.4.94.1", "10.4.94.1"),
		learnedVia("10.4.255.0/30", "10.4.94.1", "10.4.94.1"),
	)
	want, _ := Plan(s, rack94Facts(), PlanOptions{AutoDirectNodeRoutes: true})
	rev := *s
	rev.Learned = slices.Clone(s.Learned)
	slices.Reverse(rev.Learned)
	f := rack94Facts()
	slices.Reverse(f.Routes)
	got, _ := Plan(&rev, f, PlanOptions{AutoDirectNodeRoutes: true})
	if diff := cmp.Diff(want, got, netipCmp); diff != "" {
		t.Errorf("plan depends on input order (-want +got):\n%s", diff)
	}
}

// A large table through a recursive next hop plans in linear time.
func BenchmarkPlanLearned(b *testing.B) {
	var learned []snapshot.LearnedRoute
	for i := range 100_000 {
		learned = append(learned, snapshot.LearnedRoute{
			Prefix:  netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100 + byte(i>>16), byte(i >> 8), byte(i)}), 32),
			NextHop: addr("10.4.255.1"), Peer: addr("10.4.83.1"),
		})
	}
	learned = append(learned, learnedVia("10.4.255.0/30", "10.4.83.1", "10.4.83.1"))
	s := labSnapshot(learned...)
	f := Facts{Routes: []FactRoute{{Dst: pfx("10.4.94.0/24"), LinkIndex: eth0}, {Dst: pfx("10.4.83.0/24"), LinkIndex: eth0}},
		Links: map[int]Link{eth0: {Name: "eth0", Up: true}}}
	b.ResetTimer()
	for range b.N {
		d, _ := Plan(s, f, PlanOptions{})
		if len(d.Kernel()) != len(learned) {
			b.Fatalf("%d kernel routes, want %d", len(d.Kernel()), len(learned))
		}
	}
}

func TestPlanTunnel(t *testing.T) {
	vxlan := &TunnelOptions{Protocol: tunnel.VXLAN, VNI: 1}
	s := labSnapshot(learnedVia("10.5.119.0/24", "10.4.94.1", "10.4.94.1"), learnedVia("10.4.83.0/24", "10.4.94.1", "10.4.94.1"))
	tunnelRoute := func(cidr, gw, node string) Planned {
		return Planned{Route: Route{Dst: pfx(cidr), Gw: addr(gw), LinkIndex: tunnelLink, OnLink: true}, Kind: KindTunnel, For: node}
	}
	device := &tunnel.DeviceSpec{Protocol: tunnel.VXLAN, VNI: 1, LocalIP: addr("10.4.94.11"), UnderlayIndex: eth0,
		Addresses: []netip.Addr{addr("10.5.112.0")}}
	tests := []struct {
		desc   string
		opts   PlanOptions
		routes []Planned
		tun    tunnel.Desired
	}{
		{
			desc: "fallback: same rack direct, the other rack through the tunnel, which wins over the learned route",
			opts: PlanOptions{AutoDirectNodeRoutes: true, Tunnel: vxlan},
			routes: []Planned{
				{Route: Route{Dst: pfx("10.4.83.0/24"), Gw: addr("10.4.94.1"), LinkIndex: eth0}, Kind: KindBGP, For: "10.4.94.1"},
				{Route: Route{Dst: pfx("10.5.114.0/24"), Gw: addr("10.4.94.12"), LinkIndex: eth0}, Kind: KindDirect, For: "rack94-node2"},
				tunnelRoute("10.5.119.0/24", "10.5.119.0", "rack83-node1"),
			},
			tun: tunnel.Desired{Device: device, Peers: []tunnel.Peer{{NodeIP: addr("10.4.83.11"), Gateway: addr("10.5.119.0")}}},
		},
		{
			desc: "tunnel without autoDirectNodeRoutes: every node through the tunnel",
			opts: PlanOptions{Tunnel: vxlan},
			routes: []Planned{
				{Route: Route{Dst: pfx("10.4.83.0/24"), Gw: addr("10.4.94.1"), LinkIndex: eth0}, Kind: KindBGP, For: "10.4.94.1"},
				tunnelRoute("10.5.114.0/24", "10.5.114.0", "rack94-node2"),
				tunnelRoute("10.5.119.0/24", "10.5.119.0", "rack83-node1"),
			},
			tun: tunnel.Desired{Device: device, Peers: []tunnel.Peer{
				{NodeIP: addr("10.4.83.11"), Gateway: addr("10.5.119.0")},
				{NodeIP: addr("10.4.94.12"), Gateway: addr("10.5.114.0")},
			}},
		},
		{
			desc: "geneve: the routes carry their peer, the device has no FDB to say it",
			opts: PlanOptions{AutoDirectNodeRoutes: true, Tunnel: &TunnelOptions{Protocol: tunnel.Geneve, VNI: 7}},
			routes: []Planned{
				{Route: Route{Dst: pfx("10.4.83.0/24"), Gw: addr("10.4.94.1"), LinkIndex: eth0}, Kind: KindBGP, For: "10.4.94.1"},
				{Route: Route{Dst: pfx("10.5.114.0/24"), Gw: addr("10.4.94.12"), LinkIndex: eth0}, Kind: KindDirect, For: "rack94-node2"},
				{Route: Route{Dst: pfx("10.5.119.0/24"), Gw: addr("10.5.119.0"), LinkIndex: tunnelLink, OnLink: true,
					Encap: Encap{ID: 7, Dst: addr("10.4.83.11")}}, Kind: KindTunnel, For: "rack83-node1"},
			},
			tun: tunnel.Desired{Device: &tunnel.DeviceSpec{Protocol: tunnel.Geneve, VNI: 7, LocalIP: addr("10.4.94.11"), UnderlayIndex: eth0,
				Addresses: []netip.Addr{addr("10.5.112.0")}}, Peers: []tunnel.Peer{{NodeIP: addr("10.4.83.11"), Gateway: addr("10.5.119.0")}}},
		},
		{
			desc: "native: no tunnel device, which removes one left by tunnel mode",
			opts: PlanOptions{AutoDirectNodeRoutes: true},
			routes: []Planned{
				{Route: Route{Dst: pfx("10.4.83.0/24"), Gw: addr("10.4.94.1"), LinkIndex: eth0}, Kind: KindBGP, For: "10.4.94.1"},
				{Route: Route{Dst: pfx("10.5.114.0/24"), Gw: addr("10.4.94.12"), LinkIndex: eth0}, Kind: KindDirect, For: "rack94-node2"},
				{Route: Route{Dst: pfx("10.5.119.0/24"), Gw: addr("10.4.94.1"), LinkIndex: eth0}, Kind: KindBGP, For: "10.4.94.1"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			got, warnings := Plan(s, rack94Facts(), tc.opts)
			if diff := cmp.Diff(tc.routes, got.Routes, netipCmp); diff != "" {
				t.Errorf("routes (-want +got):\n%s", diff)
			}
			slices.SortFunc(got.Tunnel.Peers, func(a, b tunnel.Peer) int { return a.NodeIP.Compare(b.NodeIP) })
			if !got.Tunnel.Equal(tc.tun) {
				t.Errorf("tunnel = %+v %v, want %+v %v", got.Tunnel.Device, got.Tunnel.Peers, tc.tun.Device, tc.tun.Peers)
			}
			if len(warnings) != 0 {
				t.Errorf("warnings %q", warnings)
			}
		})
	}

	// Binding the device's index: the routes through it get it, or are
	// refused with the reason when there is no device.
	d, _ := Plan(s, rack94Facts(), PlanOptions{Tunnel: vxlan})
	bound := d
	bound.Routes = slices.Clone(d.Routes)
	bound.bindTunnel(7, nil)
	for _, r := range bound.Kernel() {
		if r.LinkIndex == tunnelLink {
			t.Errorf("route %v kept the placeholder", r)
		}
	}
	d.bindTunnel(0, errors.New("geneve: not supported"))
	if n := len(d.Kernel()); n != 1 {
		t.Errorf("with no device, %d routes to install, want only the BGP one", n)
	}
	for _, r := range d.Routes {
		if r.Kind == KindTunnel && r.Refused != "no tunnel device: geneve: not supported" {
			t.Errorf("route %+v not refused with the device's error", r)
		}
	}
}
