package tunnel

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func itoa(i int) string { return strconv.Itoa(i) }

func sortStrings(lists ...[]string) {
	for _, l := range lists {
		slices.Sort(l)
	}
}

// TestTrafficCrossesTheTunnel joins two nodes by the tunnel, over an IPv4
// and an IPv6 underlay, and pings each node's gateway address (the
// tunnel device's own address on the other side) in both overlay
// families. A packet of exactly the tunnel's MTU crosses with DF set; one
// byte more is refused by the sender, not lost on the way.
func TestTrafficCrossesTheTunnel(t *testing.T) {
	for _, underlay6 := range []bool{false, true} {
		name := "IPv4 underlay"
		if underlay6 {
			name = "IPv6 underlay"
		}
		t.Run(name, func(t *testing.T) {
			a, b := twoNodes(t, underlay6)
			ta, tb := a.tunnel(t), b.tunnel(t)
			ra := mustSet(t, ta, Desired{Device: a.spec("10.5.112.0", "fd05:112::"), Peers: []Peer{b.peer("10.5.114.0"), b.peer("fd05:114::")}})
			rb := mustSet(t, tb, Desired{Device: b.spec("10.5.114.0", "fd05:114::"), Peers: []Peer{a.peer("10.5.112.0"), a.peer("fd05:112::")}})
			wantMTU := 1500 - Overhead(VXLAN, underlay6)
			for _, r := range []Result{ra, rb} {
				if r.Name != VXLANDevice || r.MTU != wantMTU || r.Index == 0 {
					t.Fatalf("Set: %+v, want %s with MTU %d", r, VXLANDevice, wantMTU)
				}
			}
			a.route(t, "10.5.114.0/24", "10.5.114.0", ra.Index)
			a.route(t, "fd05:114::/64", "fd05:114::", ra.Index)
			b.route(t, "10.5.112.0/24", "10.5.112.0", rb.Index)
			b.route(t, "fd05:112::/64", "fd05:112::", rb.Index)

			for _, dst := range []string{"10.5.114.0", "fd05:114::"} {
				if out, err := a.ping(dst, 0); err != nil {
					t.Errorf("ping %s from node a: %v\n%s", dst, err, out)
				}
			}
			if out, err := b.ping("10.5.112.0", 0); err != nil {
				t.Errorf("ping 10.5.112.0 from node b: %v\n%s", err, out)
			}
			// ICMP echo: 20 bytes of IPv4 header and 8 of ICMP.
			if out, err := a.ping("10.5.114.0", wantMTU-28); err != nil {
				t.Errorf("a packet of the tunnel MTU (%d) did not cross: %v\n%s", wantMTU, err, out)
			}
			out, err := a.ping("10.5.114.0", wantMTU-27)
			if err == nil || !strings.Contains(out, "message too long") {
				t.Errorf("a packet one byte over the tunnel MTU: %v\n%s\nwant it refused locally with \"message too long\"", err, out)
			}
			// The packets went through the tunnel device, and need its FDB
			// entry: without it the device has nowhere to send them (it
			// never floods), and Set puts it back.
			if l := a.link(t, VXLANDevice); l.Attrs().Statistics == nil || l.Attrs().Statistics.TxPackets == 0 {
				t.Errorf("%s sent no packets: %+v", VXLANDevice, l.Attrs().Statistics)
			}
			fdb := fdbEntry(ra.Index, hwAddr(MACFor(b.ip)), b.ip)
			if err := a.h.NeighDel(&fdb); err != nil {
				t.Fatal(err)
			}
			if out, err := a.pingWait("10.5.114.0", 0, 1); err == nil {
				t.Errorf("ping crossed without the FDB entry:\n%s", out)
			}
			if res := mustSet(t, ta, Desired{Device: a.spec("10.5.112.0", "fd05:112::"), Peers: []Peer{b.peer("10.5.114.0"), b.peer("fd05:114::")}}); res.Writes != 1 {
				t.Errorf("Set after the FDB entry went wrote %d times, want 1", res.Writes)
			}
			if out, err := a.ping("10.5.114.0", 0); err != nil {
				t.Errorf("ping after Set put the FDB entry back: %v\n%s", err, out)
			}
		})
	}
}

// TestSetAdoptsOnRestart: an agent that restarts finds its device and
// entries in the kernel and keeps them as they are: same index, no
// netlink write, no event.
func TestSetAdoptsOnRestart(t *testing.T) {
	a, b := twoNodes(t, false)
	c := Peer{NodeIP: netip.MustParseAddr("10.99.0.3"), Gateway: netip.MustParseAddr("10.5.116.0")}
	d := Desired{Device: a.spec("10.5.112.0"), Peers: []Peer{b.peer("10.5.114.0"), c}}
	first := mustSet(t, a.tunnel(t), d)
	before := a.state(t, VXLANDevice)

	ev := a.events(t)
	ev.settle(t, first.Index)
	tun := a.tunnel(t)
	again := mustSet(t, tun, d)
	if seen := ev.settle(t, first.Index); len(seen) != 0 {
		t.Errorf("adopting made %d changes, want none:\n%s", len(seen), strings.Join(seen, "\n"))
	}
	if got := tun.Stats(); got != (Stats{}) {
		t.Errorf("adopting wrote: %+v", got)
	}
	if again.Index != first.Index || again.Writes != 0 || again.MTU != first.MTU {
		t.Errorf("after restart Set gave %+v, first %+v", again, first)
	}
	if diff := cmp.Diff(before, a.state(t, VXLANDevice)); diff != "" {
		t.Errorf("kernel state changed (-before +after):\n%s", diff)
	}
	// And once more on the same Tunnel, with the peers in another order.
	d.Peers = []Peer{c, b.peer("10.5.114.0")}
	mustSet(t, tun, d)
	if seen := ev.settle(t, first.Index); len(seen) != 0 {
		t.Errorf("Set again made changes: %v", seen)
	}
}

func TestSetMakesTheEntries(t *testing.T) {
	a, b := twoNodes(t, false)
	tun := a.tunnel(t)
	c := Peer{NodeIP: netip.MustParseAddr("10.99.0.3"), Gateway: netip.MustParseAddr("10.5.116.0")}
	res := mustSet(t, tun, Desired{Device: a.spec("10.5.112.0"), Peers: []Peer{b.peer("10.5.114.0"), c, b.peer("fd05:114::")}})
	want := state{
		Index: res.Index,
		Link:  "ra_vxlan mtu 1450 0e:52:0a:63:00:01 up|broadcast|multicast|running vni 1 port 8472 local 10.99.0.1",
		FDB: []string{
			"0e:52:0a:63:00:02 dst 10.99.0.2 state 128 flags 2",
			"0e:52:0a:63:00:03 dst 10.99.0.3 state 128 flags 2",
		},
		Neigh: []string{
			"10.5.114.0 lladdr 0e:52:0a:63:00:02 state 128",
			"10.5.116.0 lladdr 0e:52:0a:63:00:03 state 128",
			"fd05:114:: lladdr 0e:52:0a:63:00:02 state 128",
		},
		Addrs: []string{"10.5.112.0/32"},
	}
	if diff := cmp.Diff(want, a.state(t, VXLANDevice)); diff != "" {
		t.Errorf("kernel state (-want +got):\n%s", diff)
	}
	v := a.link(t, VXLANDevice).(*netlink.Vxlan)
	if v.Learning || v.Group != nil || v.VtepDevIndex != a.eth0 || v.FlowBased {
		t.Errorf("device %+v: want nolearning, no group, dev eth0, not external", v)
	}
	if got := tun.Stats(); got.Creates != 1 || got.EntrySets != 5 || got.AddrAdds != 1 || got.Errors != 0 {
		t.Errorf("Stats() = %+v", got)
	}
}

// TestSetRemovesWhatIsNotDesired: the entries of a peer that left go, and
// so do entries that someone else put on the device.
func TestSetRemovesWhatIsNotDesired(t *testing.T) {
	a, b := twoNodes(t, false)
	tun := a.tunnel(t)
	c := Peer{NodeIP: netip.MustParseAddr("10.99.0.3"), Gateway: netip.MustParseAddr("10.5.116.0")}
	res := mustSet(t, tun, Desired{Device: a.spec("10.5.112.0", "fd05:112::"), Peers: []Peer{b.peer("10.5.114.0"), c}})

	// Someone adds a flood entry, a second destination for b's MAC, a
	// neighbour entry and an address.
	for _, n := range []netlink.Neigh{
		fdbEntry(res.Index, hwAddr{}, netip.MustParseAddr("10.99.0.9")),
		{LinkIndex: res.Index, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF, HardwareAddr: MACFor(b.ip), IP: net.ParseIP("10.99.0.8")},
		neighEntry(res.Index, netip.MustParseAddr("10.5.200.0"), hwAddr{2, 0, 0, 0, 0, 1}),
	} {
		if err := a.h.NeighAppend(&n); err != nil {
			t.Fatalf("adding %s: %v", describeEntry(n), err)
		}
	}
	a.addAddr(t, VXLANDevice, "10.5.199.1/24")

	// c leaves, and so does the IPv6 address.
	mustSet(t, tun, Desired{Device: a.spec("10.5.112.0"), Peers: []Peer{b.peer("10.5.114.0")}})
	want := []string{"0e:52:0a:63:00:02 dst 10.99.0.2 state 128 flags 2"}
	got := a.state(t, VXLANDevice)
	if diff := cmp.Diff(want, got.FDB); diff != "" {
		t.Errorf("FDB (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"10.5.114.0 lladdr 0e:52:0a:63:00:02 state 128"}, got.Neigh); diff != "" {
		t.Errorf("neighbour entries (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"10.5.112.0/32"}, got.Addrs); diff != "" {
		t.Errorf("addresses (-want +got):\n%s", diff)
	}
	// A replaced entry: b's neighbour entry pointing elsewhere comes back.
	bad := neighEntry(res.Index, netip.MustParseAddr("10.5.114.0"), hwAddr{2, 0, 0, 0, 0, 2})
	if err := a.h.NeighSet(&bad); err != nil {
		t.Fatal(err)
	}
	mustSet(t, tun, Desired{Device: a.spec("10.5.112.0"), Peers: []Peer{b.peer("10.5.114.0")}})
	if diff := cmp.Diff(got, a.state(t, VXLANDevice)); diff != "" {
		t.Errorf("after repairing an entry (-want +got):\n%s", diff)
	}
}

// TestSetRepairsInPlace: MTU, MAC and up state are changed on the device
// as it is, which keeps its index (and the routes through it).
func TestSetRepairsInPlace(t *testing.T) {
	a, b := twoNodes(t, false)
	tun := a.tunnel(t)
	d := Desired{Device: a.spec("10.5.112.0"), Peers: []Peer{b.peer("10.5.114.0")}}
	first := mustSet(t, tun, d)
	want := a.state(t, VXLANDevice)

	l := a.link(t, VXLANDevice)
	if err := a.h.LinkSetDown(l); err != nil { // which flushes the neighbour entries
		t.Fatal(err)
	}
	if err := a.h.LinkSetMTU(l, 1300); err != nil {
		t.Fatal(err)
	}
	if err := a.h.LinkSetHardwareAddr(l, net.HardwareAddr{2, 0, 0, 0, 0, 9}); err != nil {
		t.Fatal(err)
	}
	res := mustSet(t, tun, d)
	if res.Index != first.Index {
		t.Errorf("the device was recreated: index %d, was %d", res.Index, first.Index)
	}
	if diff := cmp.Diff(want, a.state(t, VXLANDevice)); diff != "" {
		t.Errorf("after repair (-want +got):\n%s", diff)
	}
	if s := tun.Stats(); s.Repairs != 1 || s.Recreates != 0 || s.Creates != 1 {
		t.Errorf("Stats() = %+v, want 1 create and 1 repair", s)
	}

	// A new MTU in the spec is changed in place too, even while up.
	d.Device.MTU = 1400
	res = mustSet(t, tun, d)
	if res.Index != first.Index || res.MTU != 1400 {
		t.Errorf("MTU change: %+v", res)
	}
	// The MAC, while up.
	d.Device.MAC = net.HardwareAddr{0x0e, 0x52, 1, 2, 3, 4}
	res = mustSet(t, tun, d)
	if got := a.link(t, VXLANDevice).Attrs(); res.Index != first.Index || got.HardwareAddr.String() != "0e:52:01:02:03:04" || got.Flags&net.FlagUp == 0 {
		t.Errorf("MAC change: %+v, device %s %s", res, got.HardwareAddr, got.Flags)
	}
	if got := a.state(t, VXLANDevice); len(got.Neigh) != 1 || len(got.FDB) != 1 {
		t.Errorf("entries after the MAC change: %+v", got)
	}
}

// TestSetRecreatesForImmutableChanges: a new VNI, port, local address or
// underlay link cannot be changed on a device; Set recreates it and says
// why.
func TestSetRecreatesForImmutableChanges(t *testing.T) {
	cases := []struct {
		name   string
		change func(t *testing.T, a *node, s *DeviceSpec)
		why    string
	}{
		{"VNI", func(_ *testing.T, _ *node, s *DeviceSpec) { s.VNI = 2 }, "VNI 1, want 2"},
		{"port", func(_ *testing.T, _ *node, s *DeviceSpec) { s.Port = 4789 }, "UDP port 8472, want 4789"},
		{"local address", func(t *testing.T, a *node, s *DeviceSpec) {
			s.LocalIP = a.addAddr(t, "eth0", "10.99.0.11/24")
		}, "local address 10.99.0.1, want 10.99.0.11"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a, b := twoNodes(t, false)
			var logs logBuffer
			tun, err := New(Options{NetNS: a.ns, Logger: bufferLogger(&logs)})
			if err != nil {
				t.Fatal(err)
			}
			defer tun.Close()
			d := Desired{Device: a.spec("10.5.112.0"), Peers: []Peer{b.peer("10.5.114.0")}}
			first := mustSet(t, tun, d)
			c.change(t, a, d.Device)
			res := mustSet(t, tun, d)
			if res.Index == first.Index {
				t.Errorf("index %d unchanged: not recreated", res.Index)
			}
			if s := tun.Stats(); s.Recreates != 1 || s.Creates != 2 {
				t.Errorf("Stats() = %+v, want 2 creates, 1 of them a recreation", s)
			}
			if !strings.Contains(logs.String(), c.why) {
				t.Errorf("logs do not say %q:\n%s", c.why, logs.String())
			}
			got := a.state(t, VXLANDevice)
			if len(got.FDB) != 1 || len(got.Neigh) != 1 || len(got.Addrs) != 1 {
				t.Errorf("entries after recreation: %+v", got)
			}
			// And now it is adopted as it is.
			if res := mustSet(t, tun, d); res.Writes != 0 {
				t.Errorf("Set after the recreation wrote %d times", res.Writes)
			}
		})
	}
}

// TestSetRecreatesAForeignDevice: a device of another kind under our name,
// or one that learns, is replaced.
func TestSetRecreatesAForeignDevice(t *testing.T) {
	a, _ := twoNodes(t, false)
	if err := a.h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: VXLANDevice}, PeerName: "other"}); err != nil {
		t.Fatal(err)
	}
	tun := a.tunnel(t)
	res := mustSet(t, tun, Desired{Device: a.spec()})
	if l := a.link(t, VXLANDevice); l.Type() != "vxlan" || l.Attrs().Index != res.Index {
		t.Errorf("%s is a %s, index %d; want vxlan, %d", VXLANDevice, l.Type(), l.Attrs().Index, res.Index)
	}
	// A learning VXLAN device made by hand.
	mustSet(t, tun, Desired{})
	v := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: VXLANDevice}, VxlanId: 1, Port: 8472, SrcAddr: net.ParseIP("10.99.0.1"), VtepDevIndex: a.eth0, Learning: true}
	if err := a.h.LinkAdd(v); err != nil {
		t.Fatal(err)
	}
	mustSet(t, tun, Desired{Device: a.spec()})
	if l := a.link(t, VXLANDevice).(*netlink.Vxlan); l.Learning {
		t.Error("the device still learns")
	}
}

// TestSetWithoutDeviceRemovesIt, and Cleanup does too, leaving every other
// link alone.
func TestSetWithoutDeviceRemovesIt(t *testing.T) {
	a, b := twoNodes(t, false)
	tun := a.tunnel(t)
	mustSet(t, tun, Desired{Device: a.spec("10.5.112.0"), Peers: []Peer{b.peer("10.5.114.0")}})
	res := mustSet(t, tun, Desired{})
	if res != (Result{Writes: 1}) {
		t.Errorf("Set(no device) = %+v", res)
	}
	if a.linkOrNil(t, VXLANDevice) != nil {
		t.Errorf("%s still there", VXLANDevice)
	}
	if res := mustSet(t, tun, Desired{}); res.Writes != 0 {
		t.Errorf("Set(no device) again wrote %d times", res.Writes)
	}
	mustSet(t, tun, Desired{Device: a.spec()})
	if err := a.tunnel(t).Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a.linkOrNil(t, VXLANDevice) != nil {
		t.Errorf("%s still there after Cleanup", VXLANDevice)
	}
	if a.linkOrNil(t, "eth0") == nil || a.linkOrNil(t, "lo") == nil {
		t.Error("Cleanup took other links")
	}
}

// TestSetUnderlayByAddress: with no underlay index, Set finds the link
// that holds the local address, and derives the MTU from it.
func TestSetUnderlayByAddress(t *testing.T) {
	a, _ := twoNodes(t, false)
	if err := a.h.LinkSetMTU(a.link(t, "eth0"), 9000); err != nil {
		t.Fatal(err)
	}
	tun := a.tunnel(t)
	res := mustSet(t, tun, Desired{Device: &DeviceSpec{Protocol: VXLAN, LocalIP: a.ip}})
	if res.MTU != 8950 {
		t.Errorf("MTU %d, want 8950", res.MTU)
	}
	if v := a.link(t, VXLANDevice).(*netlink.Vxlan); v.VtepDevIndex != a.eth0 {
		t.Errorf("underlay link %d, want eth0 (%d)", v.VtepDevIndex, a.eth0)
	}
	_, err := tun.Set(context.Background(), Desired{Device: &DeviceSpec{Protocol: VXLAN, LocalIP: netip.MustParseAddr("10.99.7.7")}})
	if err == nil || !strings.Contains(err.Error(), "no link holds it") {
		t.Errorf("Set with a local address nobody holds: %v", err)
	}
}

// TestSetKeepsGoingPastBadPeers: invalid and colliding peers are refused
// with an error each; the others are written.
func TestSetKeepsGoingPastBadPeers(t *testing.T) {
	a, b := twoNodes(t, false)
	tun := a.tunnel(t)
	peers := []Peer{
		b.peer("10.5.114.0"),
		{NodeIP: netip.MustParseAddr("fd99::5"), Gateway: netip.MustParseAddr("10.5.118.0")},   // wrong family
		{NodeIP: netip.MustParseAddr("10.99.0.6"), Gateway: netip.MustParseAddr("10.5.114.0")}, // b's gateway
	}
	_, err := tun.Set(context.Background(), Desired{Device: a.spec("10.5.112.0"), Peers: peers})
	if err == nil {
		t.Fatal("Set accepted a peer of the wrong family and a claimed gateway")
	}
	for _, want := range []string{"not of the underlay's family", "gateway 10.5.114.0 is claimed by peers"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	got := a.state(t, VXLANDevice)
	// b lost its neighbour entry to the claim; its FDB entry is refused
	// with it, since nothing uses it.
	if len(got.Neigh) != 0 || len(got.FDB) != 0 {
		t.Errorf("entries: %+v, want none", got)
	}
	mustSet(t, tun, Desired{Device: a.spec("10.5.112.0"), Peers: peers[:1]})
	if got := a.state(t, VXLANDevice); len(got.Neigh) != 1 || len(got.FDB) != 1 {
		t.Errorf("entries: %+v, want b's", got)
	}
}

// TestGeneve: this kernel has no geneve driver, and both CheckSupport and
// Set say so in a way that tells the operator what to do. Where the kernel
// has one, Set makes an external-mode device with the peers' neighbour
// entries and no FDB (routes carry the peer: routing.Encap).
func TestGeneve(t *testing.T) {
	needRoot(t)
	err := CheckSupport(Geneve)
	a, b := twoNodes(t, false)
	tun := a.tunnel(t)
	vx := mustSet(t, tun, Desired{Device: a.spec()})
	spec := a.spec()
	spec.Protocol = Geneve
	_, setErr := tun.Set(context.Background(), Desired{Device: spec, Peers: []Peer{b.peer("10.5.114.0")}})
	if err != nil {
		const want = `tunnel protocol geneve: this kernel has no geneve support (module "geneve" not loaded or not built; modprobe geneve, or use --tunnel-protocol vxlan)`
		if err.Error() != want {
			t.Errorf("CheckSupport(geneve) = %q, want %q", err, want)
		}
		if _, ok := errors.AsType[*SupportError](err); !ok || !errors.Is(err, unix.EOPNOTSUPP) {
			t.Errorf("CheckSupport(geneve) = %#v, want a *SupportError wrapping EOPNOTSUPP", err)
		}
		if setErr == nil || !strings.Contains(setErr.Error(), want) {
			t.Errorf("Set(geneve) = %v, want %q", setErr, want)
		}
		if a.linkOrNil(t, GeneveDevice) != nil {
			t.Error("a geneve device exists after all")
		}
		// The VXLAN device stays until a geneve one exists.
		if l := a.linkOrNil(t, VXLANDevice); l == nil || l.Attrs().Index != vx.Index {
			t.Errorf("%s went with the failed switch to geneve", VXLANDevice)
		}
		return
	}
	t.Log("this kernel has geneve")
	if setErr != nil {
		t.Errorf("Set(geneve with peers) = %v", setErr)
	}
	g, ok := a.link(t, GeneveDevice).(*netlink.Geneve)
	if !ok || g.ID != 1 || g.Dport != 6081 || g.Attrs().MTU != 1450 || !g.FlowBased {
		t.Errorf("geneve device %+v", g)
	}
	if got := a.state(t, GeneveDevice); len(got.Neigh) != 1 || len(got.FDB) != 0 {
		t.Errorf("geneve entries: %+v, want b's neighbour entry and no FDB", got)
	}
	// Switching to VXLAN deletes it.
	mustSet(t, tun, Desired{Device: a.spec()})
	if a.linkOrNil(t, GeneveDevice) != nil {
		t.Error("ra_geneve still there after switching to vxlan")
	}
}

// TestCheckSupportVXLAN: the kernel has VXLAN, and checking creates nothing
// where the caller is.
func TestCheckSupportVXLAN(t *testing.T) {
	needRoot(t)
	before, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckSupport(VXLAN); err != nil {
		t.Fatalf("CheckSupport(vxlan): %v", err)
	}
	after, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	names := func(ls []netlink.Link) []string {
		var out []string
		for _, l := range ls {
			out = append(out, l.Attrs().Name)
		}
		slices.Sort(out)
		return out
	}
	if diff := cmp.Diff(names(before), names(after)); diff != "" {
		t.Errorf("the test's namespace's links changed (-before +after):\n%s", diff)
	}
	if err := CheckSupport("gre"); err == nil {
		t.Error("CheckSupport(gre) accepted an unknown protocol")
	}
}
