package tunnel

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

var (
	addr = netip.MustParseAddr
	mac  = func(s string) net.HardwareAddr {
		m, err := net.ParseMAC(s)
		if err != nil {
			panic(err)
		}
		return m
	}
)

func TestMACFor(t *testing.T) {
	for _, c := range []struct {
		ip   string
		want string
	}{
		{"10.99.0.2", "0e:52:0a:63:00:02"},
		{"::ffff:10.99.0.2", "0e:52:0a:63:00:02"},
		{"192.168.255.1", "0e:52:c0:a8:ff:01"},
		{"fd99::2", "0e:52:00:00:00:02"},
		// The one way to collide: equal low 32 bits.
		{"fd00:1::a63:2", "0e:52:0a:63:00:02"},
	} {
		got := MACFor(addr(c.ip))
		if got.String() != c.want {
			t.Errorf("MACFor(%s) = %s, want %s", c.ip, got, c.want)
		}
		if got[0]&1 != 0 || got[0]&2 == 0 {
			t.Errorf("MACFor(%s) = %s: not a locally administered unicast address", c.ip, got)
		}
	}
	if got := MACFor(netip.Addr{}); got != nil {
		t.Errorf("MACFor(zero) = %s, want nil", got)
	}
}

func TestOverhead(t *testing.T) {
	for _, c := range []struct {
		p    Protocol
		v6   bool
		want int
	}{
		{VXLAN, false, 50},
		{VXLAN, true, 70},
		{Geneve, false, 50},
		{Geneve, true, 70},
		{"gre", false, 0},
	} {
		if got := Overhead(c.p, c.v6); got != c.want {
			t.Errorf("Overhead(%s, ipv6=%v) = %d, want %d", c.p, c.v6, got, c.want)
		}
	}
}

func TestNewDevice(t *testing.T) {
	d, err := newDevice(DeviceSpec{Protocol: VXLAN, LocalIP: addr("10.99.0.1"), UnderlayIndex: 2,
		Addresses: []netip.Addr{addr("fd05:112::"), addr("10.5.112.0"), addr("10.5.112.0")}})
	if err != nil {
		t.Fatal(err)
	}
	want := &device{name: "ra_vxlan", protocol: VXLAN, port: 8472, vni: 1, local: addr("10.99.0.1"), underlay: 2,
		mac: hwAddr(mac("0e:52:0a:63:00:01")), addrs: []netip.Prefix{netip.MustParsePrefix("10.5.112.0/32"), netip.MustParsePrefix("fd05:112::/128")}}
	if diff := cmp.Diff(want, d, cmp.AllowUnexported(device{}), cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("newDevice (-want +got):\n%s", diff)
	}
	g, err := newDevice(DeviceSpec{Protocol: Geneve, LocalIP: addr("fd99::1"), VNI: 9, Port: 7000, MTU: 1400, MAC: mac("02:00:00:00:00:01")})
	if err != nil {
		t.Fatal(err)
	}
	if g.name != "ra_geneve" || g.port != 7000 || g.vni != 9 || g.mtu != 1400 || g.mac.String() != "02:00:00:00:00:01" {
		t.Errorf("newDevice(geneve) = %+v", g)
	}
	if g, _ := newDevice(DeviceSpec{Protocol: Geneve, LocalIP: addr("10.0.0.1")}); g.port != 6081 {
		t.Errorf("geneve default port %d, want 6081", g.port)
	}

	local := addr("10.99.0.1")
	for _, c := range []struct {
		spec DeviceSpec
		want string
	}{
		{DeviceSpec{Protocol: "gre", LocalIP: local}, `tunnel protocol "gre": unknown`},
		{DeviceSpec{Protocol: VXLAN}, "tunnel local address: none given"},
		{DeviceSpec{Protocol: VXLAN, LocalIP: addr("239.1.1.1")}, "not a unicast address"},
		{DeviceSpec{Protocol: VXLAN, LocalIP: local, Port: 70000}, "tunnel port 70000 out of range"},
		{DeviceSpec{Protocol: VXLAN, LocalIP: local, VNI: 1 << 24}, "tunnel VNI 16777216 out of range"},
		{DeviceSpec{Protocol: VXLAN, LocalIP: local, MTU: 60}, "tunnel MTU 60 out of range (68-65535, or 0 for the underlay's minus 50)"},
		{DeviceSpec{Protocol: VXLAN, LocalIP: local, UnderlayIndex: -1}, "negative"},
		{DeviceSpec{Protocol: VXLAN, LocalIP: local, MAC: mac("01:00:5e:00:00:01")}, "tunnel MAC: 01:00:5e:00:00:01 is a multicast address"},
		{DeviceSpec{Protocol: VXLAN, LocalIP: local, MAC: net.HardwareAddr{1, 2}}, "not a 6-byte Ethernet address"},
		{DeviceSpec{Protocol: VXLAN, LocalIP: local, Addresses: []netip.Addr{addr("fe80::1")}}, "fe80::1 is not a global unicast address"},
		{DeviceSpec{Protocol: VXLAN, LocalIP: local, Addresses: []netip.Addr{addr("::ffff:10.5.112.0")}}, "IPv4-mapped"},
	} {
		_, err := newDevice(c.spec)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("newDevice(%+v) = %v, want an error saying %q", c.spec, err, c.want)
		}
	}
}

// TestLinks checks the netlink values Set writes: the library turns every
// field set here into one attribute of the RTM_NEWLINK message (and
// leaves out Geneve's Remote when nil, its ID and port when 0).
func TestLinks(t *testing.T) {
	d, err := newDevice(DeviceSpec{Protocol: VXLAN, LocalIP: addr("10.99.0.1"), UnderlayIndex: 2, MTU: 1450})
	if err != nil {
		t.Fatal(err)
	}
	want := &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{Name: "ra_vxlan", MTU: 1450, HardwareAddr: mac("0e:52:0a:63:00:01"), Flags: net.FlagUp},
		VxlanId:   1, VtepDevIndex: 2, SrcAddr: net.IP{10, 99, 0, 1}, Port: 8472,
		// No learning, no group (no flooding), not external.
	}
	if diff := cmp.Diff(want, d.link()); diff != "" {
		t.Errorf("VXLAN link (-want +got):\n%s", diff)
	}
	d6, _ := newDevice(DeviceSpec{Protocol: VXLAN, LocalIP: addr("fd99::1"), UnderlayIndex: 2, MTU: 1430})
	if v := d6.link().(*netlink.Vxlan); len(v.SrcAddr) != 16 || !v.SrcAddr.Equal(net.ParseIP("fd99::1")) {
		t.Errorf("VXLAN over IPv6: local %s", v.SrcAddr)
	}

	g, err := newDevice(DeviceSpec{Protocol: Geneve, LocalIP: addr("10.99.0.1"), VNI: 5, MTU: 1450})
	if err != nil {
		t.Fatal(err)
	}
	wantG := &netlink.Geneve{
		LinkAttrs: netlink.LinkAttrs{Name: "ra_geneve", MTU: 1450, HardwareAddr: mac("0e:52:0a:63:00:01"), Flags: net.FlagUp},
		ID:        5, Dport: 6081,
		// Remote nil: no IFLA_GENEVE_REMOTE; FlowBased: the library sends
		// IFLA_GENEVE_COLLECT_METADATA, external mode, in which each
		// route's encapsulation names the peer.
		FlowBased: true,
	}
	if diff := cmp.Diff(wantG, g.link()); diff != "" {
		t.Errorf("Geneve link (-want +got):\n%s", diff)
	}
	if got := g.link().Type(); got != "geneve" {
		t.Errorf("Geneve link type %q", got)
	}
}

func TestIncompatibility(t *testing.T) {
	d, _ := newDevice(DeviceSpec{Protocol: VXLAN, LocalIP: addr("10.99.0.1"), UnderlayIndex: 2, MTU: 1450})
	good := func() *netlink.Vxlan {
		return &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "ra_vxlan", MTU: 1300, HardwareAddr: mac("02:00:00:00:00:01")},
			VxlanId: 1, VtepDevIndex: 2, SrcAddr: net.IP{10, 99, 0, 1}, Port: 8472}
	}
	with := func(f func(v *netlink.Vxlan)) netlink.Link { v := good(); f(v); return v }
	for _, c := range []struct {
		have netlink.Link
		want string
	}{
		{good(), ""}, // MTU and MAC are repaired in place
		{with(func(v *netlink.Vxlan) { v.VxlanId = 2 }), "VNI 2, want 1"},
		{with(func(v *netlink.Vxlan) { v.Port = 4789 }), "UDP port 4789, want 8472"},
		{with(func(v *netlink.Vxlan) { v.SrcAddr = nil }), "local address none, want 10.99.0.1"},
		{with(func(v *netlink.Vxlan) { v.SrcAddr = net.ParseIP("10.99.0.9") }), "local address 10.99.0.9, want 10.99.0.1"},
		{with(func(v *netlink.Vxlan) { v.VtepDevIndex = 0 }), "underlay link none, want if2"},
		{with(func(v *netlink.Vxlan) { v.Learning = true }), "learning on, want off"},
		{with(func(v *netlink.Vxlan) { v.Group = net.ParseIP("239.1.1.1") }), "default destination 239.1.1.1, want none"},
		{with(func(v *netlink.Vxlan) { v.FlowBased = true }), "external (flow-based) mode, want per-peer entries"},
		{with(func(v *netlink.Vxlan) { v.VxlanId = 2; v.Port = 1 }), "VNI 2, want 1"}, // the first difference
		{&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ra_vxlan"}}, "it is a veth device, want vxlan"},
	} {
		if got := d.incompatibility(c.have); got != c.want {
			t.Errorf("incompatibility(%+v) = %q, want %q", c.have, got, c.want)
		}
	}
	g, _ := newDevice(DeviceSpec{Protocol: Geneve, LocalIP: addr("10.99.0.1")})
	for _, c := range []struct {
		have *netlink.Geneve
		want string
	}{
		{&netlink.Geneve{ID: 1, Dport: 6081, FlowBased: true}, ""},
		{&netlink.Geneve{ID: 3, Dport: 6081, FlowBased: true}, "VNI 3, want 1"},
		{&netlink.Geneve{ID: 1, Dport: 6082, FlowBased: true}, "UDP port 6082, want 6081"},
		{&netlink.Geneve{ID: 1, Dport: 6081, FlowBased: true, Remote: net.IP{10, 0, 0, 2}}, "remote 10.0.0.2, want none"},
		{&netlink.Geneve{ID: 1, Dport: 6081}, "not in external (flow-based) mode, want external"},
	} {
		if got := g.incompatibility(c.have); got != c.want {
			t.Errorf("incompatibility(%+v) = %q, want %q", c.have, got, c.want)
		}
	}
}

func TestPlanEntries(t *testing.T) {
	dev, _ := newDevice(DeviceSpec{Protocol: VXLAN, LocalIP: addr("10.99.0.1"), Addresses: []netip.Addr{addr("10.5.112.0")}})
	b := Peer{NodeIP: addr("10.99.0.2"), Gateway: addr("10.5.114.0")}
	b6 := Peer{NodeIP: addr("10.99.0.2"), MAC: MACFor(addr("10.99.0.2")), Gateway: addr("fd05:114::")}
	c := Peer{NodeIP: addr("10.99.0.3"), Gateway: addr("10.5.116.0")}
	peers := []Peer{b, b6, c, b} // b twice: the same peer, once
	e, errs := planEntries(dev, peers)
	if len(errs) != 0 {
		t.Fatalf("errors: %v", errs)
	}
	wantFDB := map[hwAddr]netip.Addr{hwAddr(MACFor(b.NodeIP)): b.NodeIP, hwAddr(MACFor(c.NodeIP)): c.NodeIP}
	wantNeigh := map[netip.Addr]hwAddr{b.Gateway: hwAddr(MACFor(b.NodeIP)), b6.Gateway: hwAddr(MACFor(b.NodeIP)), c.Gateway: hwAddr(MACFor(c.NodeIP))}
	cmpAddr := cmp.Comparer(func(a, b netip.Addr) bool { return a == b })
	if diff := cmp.Diff(wantFDB, e.fdb, cmpAddr); diff != "" {
		t.Errorf("FDB (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantNeigh, e.neigh, cmpAddr); diff != "" {
		t.Errorf("neighbours (-want +got):\n%s", diff)
	}
	// Any order gives the same.
	for range 20 {
		shuffled := slices.Clone(peers)
		slices.Reverse(shuffled)
		e2, _ := planEntries(dev, shuffled)
		if diff := cmp.Diff(e.fdb, e2.fdb, cmpAddr); diff != "" {
			t.Errorf("another order, another FDB:\n%s", diff)
		}
	}

	for _, tc := range []struct {
		name  string
		peers []Peer
		want  []string // errors
		fdb   int      // entries left
		neigh int
	}{
		{"wrong family", []Peer{{NodeIP: addr("fd99::2"), Gateway: addr("10.5.114.0")}}, []string{"peer 10.5.114.0 lladdr 0e:52:00:00:00:02 dst fd99::2: node address fd99::2 is not of the underlay's family (the local address is 10.99.0.1)"}, 0, 0},
		{"this node", []Peer{{NodeIP: addr("10.99.0.1"), Gateway: addr("10.5.114.0")}}, []string{"is this node's"}, 0, 0},
		{"own gateway", []Peer{{NodeIP: addr("10.99.0.2"), Gateway: addr("10.5.112.0")}}, []string{"gateway 10.5.112.0 is an address of this node's tunnel device"}, 0, 0},
		{"own MAC", []Peer{{NodeIP: addr("10.99.0.2"), MAC: MACFor(addr("10.99.0.1")), Gateway: addr("10.5.114.0")}}, []string{"is this node's tunnel MAC"}, 0, 0},
		{"no gateway", []Peer{{NodeIP: addr("10.99.0.2")}}, []string{"no gateway"}, 0, 0},
		{"multicast MAC", []Peer{{NodeIP: addr("10.99.0.2"), MAC: mac("01:00:00:00:00:01"), Gateway: addr("10.5.114.0")}}, []string{"multicast"}, 0, 0},
		{"claimed gateway", []Peer{b, {NodeIP: addr("10.99.0.9"), Gateway: b.Gateway}, c},
			[]string{"gateway 10.5.114.0 is claimed by peers with MACs 0e:52:0a:63:00:02 and 0e:52:0a:63:00:09: refusing them all"}, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, errs := planEntries(dev, tc.peers)
			if len(errs) != len(tc.want) {
				t.Fatalf("errors %v, want %d", errs, len(tc.want))
			}
			for i, err := range errs {
				if !strings.Contains(err.Error(), tc.want[i]) {
					t.Errorf("error %q, want %q", err, tc.want[i])
				}
			}
			if len(e.fdb) != tc.fdb || len(e.neigh) != tc.neigh {
				t.Errorf("%d FDB and %d neighbour entries, want %d and %d", len(e.fdb), len(e.neigh), tc.fdb, tc.neigh)
			}
		})
	}

	// Two IPv6 nodes whose addresses end alike get the same MAC: neither
	// gets entries, the others do.
	dev6, _ := newDevice(DeviceSpec{Protocol: VXLAN, LocalIP: addr("fd99::1")})
	e, errs = planEntries(dev6, []Peer{
		{NodeIP: addr("fd99::a63:2"), Gateway: addr("10.5.114.0")},
		{NodeIP: addr("fd98::a63:2"), Gateway: addr("10.5.116.0")},
		{NodeIP: addr("fd99::3"), Gateway: addr("10.5.118.0")},
	})
	if len(errs) != 1 || errs[0].Error() != "peers fd98::a63:2 and fd99::a63:2 have the same tunnel MAC 0e:52:0a:63:00:02 (the low 32 bits of their addresses are equal): refusing them all" {
		t.Errorf("errors %v", errs)
	}
	if len(e.fdb) != 1 || len(e.neigh) != 1 {
		t.Errorf("entries %+v, want only fd99::3's", e)
	}
}

func TestDiffFDB(t *testing.T) {
	const index = 7
	b, c, d := hwAddr(mac("0e:52:0a:63:00:02")), hwAddr(mac("0e:52:0a:63:00:03")), hwAddr(mac("0e:52:0a:63:00:04"))
	want := map[hwAddr]netip.Addr{b: addr("10.99.0.2"), c: addr("10.99.0.3"), d: addr("10.99.0.4")}
	entry := func(m hwAddr, dst string, state, flags int) netlink.Neigh {
		n := netlink.Neigh{LinkIndex: index, Family: unix.AF_BRIDGE, State: state, Flags: flags, HardwareAddr: net.HardwareAddr(m[:])}
		if dst != "" {
			n.IP = net.ParseIP(dst).To4()
		}
		return n
	}
	have := []netlink.Neigh{
		entry(b, "10.99.0.2", netlink.NUD_PERMANENT, netlink.NTF_SELF), // exact: kept
		entry(b, "10.99.0.8", netlink.NUD_PERMANENT, netlink.NTF_SELF), // a second destination: deleted
		entry(c, "10.99.0.3", netlink.NUD_REACHABLE, netlink.NTF_SELF), // not permanent: replaced
		entry(hwAddr{}, "10.99.0.9", netlink.NUD_PERMANENT, netlink.NTF_SELF),
		entry(hwAddr{2, 0, 0, 0, 0, 1}, "", netlink.NUD_PERMANENT, netlink.NTF_SELF),
		{LinkIndex: index + 1, Family: unix.AF_BRIDGE, HardwareAddr: net.HardwareAddr(d[:])}, // another device
	}
	set, del := diffFDB(index, want, have, false)
	str := func(ns []netlink.Neigh) []string {
		var out []string
		for _, n := range ns {
			out = append(out, describeEntry(n))
		}
		return out
	}
	if diff := cmp.Diff([]string{
		"FDB entry 0e:52:0a:63:00:03 dev if7 dst 10.99.0.3",
		"FDB entry 0e:52:0a:63:00:04 dev if7 dst 10.99.0.4",
	}, str(set)); diff != "" {
		t.Errorf("set (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{
		"FDB entry 0e:52:0a:63:00:02 dev if7 dst 10.99.0.8",
		"FDB entry 00:00:00:00:00:00 dev if7 dst 10.99.0.9",
		"FDB entry 02:00:00:00:00:01 dev if7 dst 0.0.0.0",
	}, str(del)); diff != "" {
		t.Errorf("del (-want +got):\n%s", diff)
	}
	for _, n := range set {
		if n.State != netlink.NUD_PERMANENT || n.Flags != netlink.NTF_SELF || n.Family != unix.AF_BRIDGE || len(n.IP) != 4 {
			t.Errorf("entry to set %+v: want permanent, self, bridge family, an IPv4 destination", n)
		}
	}
}

func TestDiffNeigh(t *testing.T) {
	const index = 7
	b, c := hwAddr(mac("0e:52:0a:63:00:02")), hwAddr(mac("0e:52:0a:63:00:03"))
	want := map[netip.Addr]hwAddr{addr("10.5.114.0"): b, addr("fd05:114::"): b, addr("10.5.116.0"): c, addr("10.5.118.0"): c}
	n := func(ip string, m net.HardwareAddr, state int) netlink.Neigh {
		a := addr(ip)
		return netlink.Neigh{LinkIndex: index, Family: familyOf(a), State: state, IP: a.AsSlice(), HardwareAddr: m}
	}
	have := []netlink.Neigh{
		n("10.5.114.0", net.HardwareAddr(b[:]), netlink.NUD_PERMANENT),               // exact
		n("fd05:114::", net.HardwareAddr(b[:]), netlink.NUD_PERMANENT),               // exact
		n("10.5.116.0", net.HardwareAddr(b[:]), netlink.NUD_PERMANENT),               // wrong MAC
		n("10.5.118.0", nil, netlink.NUD_INCOMPLETE),                                 // being resolved
		n("10.5.120.0", mac("02:00:00:00:00:01"), netlink.NUD_PERMANENT),             // foreign: deleted
		n("10.5.122.0", mac("02:00:00:00:00:01"), netlink.NUD_STALE),                 // learnt: deleted
		n("10.5.124.0", nil, netlink.NUD_FAILED),                                     // kept
		n("ff02::2", mac("33:33:00:00:00:02"), netlink.NUD_NOARP),                    // the kernel's: kept
		{LinkIndex: index + 1, Family: netlink.FAMILY_V4, IP: net.IP{10, 5, 126, 0}}, // another device
	}
	set, del := diffNeigh(index, want, have)
	var gotSet, gotDel []string
	for _, e := range set {
		gotSet = append(gotSet, describeEntry(e))
		if e.State != netlink.NUD_PERMANENT {
			t.Errorf("%s: state %#x, want permanent", describeEntry(e), e.State)
		}
	}
	for _, e := range del {
		gotDel = append(gotDel, e.IP.String())
	}
	if diff := cmp.Diff([]string{
		"neighbour entry 10.5.116.0 lladdr 0e:52:0a:63:00:03 dev if7",
		"neighbour entry 10.5.118.0 lladdr 0e:52:0a:63:00:03 dev if7",
	}, gotSet); diff != "" {
		t.Errorf("set (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"10.5.120.0", "10.5.122.0"}, gotDel); diff != "" {
		t.Errorf("del (-want +got):\n%s", diff)
	}
}

func TestDiffAddrs(t *testing.T) {
	a := func(s string) netlink.Addr {
		p := netip.MustParsePrefix(s)
		return netlink.Addr{IPNet: ipNet(p)}
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.5.112.0/32"), netip.MustParsePrefix("fd05:112::/128")}
	add, del := diffAddrs(want, []netlink.Addr{a("10.5.112.0/32"), a("fd05:112::/64"), a("fe80::c52:aff:fe63:1/64"), a("10.5.199.1/24")})
	if diff := cmp.Diff([]string{"fd05:112::/128"}, stringsOf(add)); diff != "" {
		t.Errorf("add (-want +got):\n%s", diff)
	}
	var gotDel []string
	for _, d := range del {
		gotDel = append(gotDel, d.IPNet.String())
	}
	if diff := cmp.Diff([]string{"fd05:112::/64", "10.5.199.1/24"}, gotDel); diff != "" {
		t.Errorf("del (-want +got):\n%s", diff)
	}
}

func stringsOf[T interface{ String() string }](xs []T) []string {
	var out []string
	for _, x := range xs {
		out = append(out, x.String())
	}
	return out
}

func TestDesiredEqual(t *testing.T) {
	spec := func() *DeviceSpec {
		return &DeviceSpec{Protocol: VXLAN, LocalIP: addr("10.99.0.1"), Addresses: []netip.Addr{addr("10.5.112.0"), addr("fd05:112::")}}
	}
	b := Peer{NodeIP: addr("10.99.0.2"), Gateway: addr("10.5.114.0")}
	bExplicit := Peer{NodeIP: addr("10.99.0.2"), MAC: MACFor(addr("10.99.0.2")), Gateway: addr("10.5.114.0")}
	c := Peer{NodeIP: addr("10.99.0.3"), Gateway: addr("10.5.116.0")}
	x := Desired{Device: spec(), Peers: []Peer{b, c}}
	y := Desired{Device: spec(), Peers: []Peer{c, bExplicit}}
	y.Device.Addresses = []netip.Addr{addr("fd05:112::"), addr("10.5.112.0")}
	if !x.Equal(y) {
		t.Error("the same state in another order is not Equal")
	}
	z := Desired{Device: spec(), Peers: []Peer{b, c}}
	z.Device.VNI = 2
	if x.Equal(z) || x.Equal(Desired{}) || !(Desired{}).Equal(Desired{}) {
		t.Error("Equal does not see the VNI or the device")
	}
	if got := b.String(); got != "10.5.114.0 lladdr 0e:52:0a:63:00:02 dst 10.99.0.2" {
		t.Errorf("Peer.String() = %q", got)
	}
	if b.Key() != bExplicit.Key() {
		t.Error("a nil MAC and MACFor(NodeIP) give different keys")
	}
}

func TestEventFilters(t *testing.T) {
	dev, _ := newDevice(DeviceSpec{Protocol: VXLAN, LocalIP: addr("10.99.0.1"), UnderlayIndex: 2, MTU: 1450})
	b := hwAddr(mac("0e:52:0a:63:00:02"))
	w := &wanted{device: dev, index: 9, underlayMTU: 1500, followUnderlay: true,
		fdb: map[hwAddr]netip.Addr{b: addr("10.99.0.2")}, neigh: map[netip.Addr]hwAddr{addr("10.5.114.0"): b}}
	link := func(typ uint16, index int, name string, mtu int, up bool, m hwAddr) *netlink.LinkUpdate {
		u := &netlink.LinkUpdate{Link: &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Index: index, Name: name, MTU: mtu, HardwareAddr: net.HardwareAddr(m[:])}}}
		u.Header.Type = typ
		u.Index = int32(index)
		if up {
			u.Link.Attrs().Flags = net.FlagUp
		}
		return u
	}
	for _, c := range []struct {
		name string
		u    *netlink.LinkUpdate
		want bool
	}{
		{"our device as wanted", link(unix.RTM_NEWLINK, 9, "ra_vxlan", 1450, true, dev.mac), false},
		{"down", link(unix.RTM_NEWLINK, 9, "ra_vxlan", 1450, false, dev.mac), true},
		{"MTU", link(unix.RTM_NEWLINK, 9, "ra_vxlan", 1400, true, dev.mac), true},
		{"MAC", link(unix.RTM_NEWLINK, 9, "ra_vxlan", 1450, true, hwAddr{2}), true},
		{"deleted", link(unix.RTM_DELLINK, 9, "ra_vxlan", 1450, true, dev.mac), true},
		{"made again by someone", link(unix.RTM_NEWLINK, 10, "ra_vxlan", 1450, true, dev.mac), true},
		{"the other protocol's device", link(unix.RTM_NEWLINK, 11, "ra_geneve", 1450, true, dev.mac), true},
		{"the other protocol's device going", link(unix.RTM_DELLINK, 11, "ra_geneve", 1450, true, dev.mac), false},
		{"another link", link(unix.RTM_NEWLINK, 12, "eth1", 1500, false, hwAddr{}), false},
		{"underlay MTU", link(unix.RTM_NEWLINK, 2, "eth0", 9000, true, hwAddr{}), true},
		{"underlay as it was", link(unix.RTM_NEWLINK, 2, "eth0", 1500, true, hwAddr{}), false},
		{"underlay deleted", link(unix.RTM_DELLINK, 2, "eth0", 1500, true, hwAddr{}), true},
	} {
		if got := linkMatters(c.u, w); got != c.want {
			t.Errorf("link event %q matters: %v, want %v", c.name, got, c.want)
		}
	}
	if !linkMatters(link(unix.RTM_NEWLINK, 3, "ra_vxlan", 1450, true, dev.mac), &wanted{}) {
		t.Error("a device of ours appearing when none is wanted does not matter")
	}

	neigh := func(typ uint16, family int, ip string, m hwAddr, state int) *netlink.NeighUpdate {
		u := &netlink.NeighUpdate{Type: typ, Neigh: netlink.Neigh{LinkIndex: 9, Family: family, State: state, HardwareAddr: net.HardwareAddr(m[:])}}
		if ip != "" {
			u.IP = net.ParseIP(ip)
		}
		return u
	}
	for _, c := range []struct {
		name string
		u    *netlink.NeighUpdate
		want bool
	}{
		{"our FDB entry seen back", neigh(unix.RTM_NEWNEIGH, unix.AF_BRIDGE, "10.99.0.2", b, netlink.NUD_PERMANENT), false},
		{"our FDB entry deleted", neigh(unix.RTM_DELNEIGH, unix.AF_BRIDGE, "10.99.0.2", b, netlink.NUD_PERMANENT), true},
		{"a stale FDB entry deleted", neigh(unix.RTM_DELNEIGH, unix.AF_BRIDGE, "10.99.0.8", b, netlink.NUD_PERMANENT), false},
		{"FDB entry elsewhere", neigh(unix.RTM_NEWNEIGH, unix.AF_BRIDGE, "10.99.0.8", b, netlink.NUD_PERMANENT), true},
		{"foreign FDB entry", neigh(unix.RTM_NEWNEIGH, unix.AF_BRIDGE, "10.99.0.8", hwAddr{}, netlink.NUD_PERMANENT), true},
		{"our neighbour seen back", neigh(unix.RTM_NEWNEIGH, netlink.FAMILY_V4, "10.5.114.0", b, netlink.NUD_PERMANENT), false},
		{"our neighbour deleted", neigh(unix.RTM_DELNEIGH, netlink.FAMILY_V4, "10.5.114.0", b, netlink.NUD_PERMANENT), true},
		{"our neighbour changed", neigh(unix.RTM_NEWNEIGH, netlink.FAMILY_V4, "10.5.114.0", hwAddr{2}, netlink.NUD_PERMANENT), true},
		{"incomplete elsewhere", neigh(unix.RTM_NEWNEIGH, netlink.FAMILY_V4, "10.5.250.1", hwAddr{}, netlink.NUD_INCOMPLETE), false},
		{"multicast", neigh(unix.RTM_NEWNEIGH, netlink.FAMILY_V6, "ff02::2", hwAddr{0x33, 0x33, 0, 0, 0, 2}, netlink.NUD_NOARP), false},
		{"foreign permanent", neigh(unix.RTM_NEWNEIGH, netlink.FAMILY_V4, "10.5.199.0", hwAddr{2}, netlink.NUD_PERMANENT), true},
	} {
		if got := neighMatters(c.u, w); got != c.want {
			t.Errorf("neighbour event %q matters: %v, want %v", c.name, got, c.want)
		}
	}
	other := neigh(unix.RTM_DELNEIGH, netlink.FAMILY_V4, "10.5.114.0", b, netlink.NUD_PERMANENT)
	other.LinkIndex = 3
	if neighMatters(other, w) {
		t.Error("an event on another device matters")
	}
}

func TestSupportError(t *testing.T) {
	err := supportError(Geneve, unix.EOPNOTSUPP)
	const want = `tunnel protocol geneve: this kernel has no geneve support (module "geneve" not loaded or not built; modprobe geneve, or use --tunnel-protocol vxlan)`
	if err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
	if got := supportError(VXLAN, unix.EOPNOTSUPP).Error(); strings.Contains(got, "--tunnel-protocol") || !strings.Contains(got, "modprobe vxlan") {
		t.Errorf("VXLAN: %q", got)
	}
	for _, e := range []error{unix.EOPNOTSUPP, errorString("operation not supported: Unknown device type")} {
		if !notSupported(e) {
			t.Errorf("notSupported(%v) = false", e)
		}
	}
	if notSupported(unix.EEXIST) {
		t.Error("notSupported(EEXIST) = true")
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }
