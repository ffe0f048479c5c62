package tunnel

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
)

// TestSetStateSequence applies a table of desired states in random order
// and checks after every transition that the kernel holds exactly the
// desired device, entries and addresses, that the device was recreated
// only when its VNI changed, that the same state again writes nothing, and
// that nothing else in the namespace changed.
func TestSetStateSequence(t *testing.T) {
	a, b := twoNodes(t, false)
	// Someone else's neighbour entry and address on the underlay link.
	other := neighEntry(a.eth0, netip.MustParseAddr("10.99.0.200"), hwAddr{2, 0, 0, 0, 0, 0xc8})
	if err := a.h.NeighSet(&other); err != nil {
		t.Fatal(err)
	}
	a.addAddr(t, "eth0", "10.99.0.100/24")
	foreign := a.foreign(t)

	peer := func(node, gw string) Peer {
		return Peer{NodeIP: netip.MustParseAddr(node), Gateway: netip.MustParseAddr(gw)}
	}
	pb, pb6 := b.peer("10.5.114.0"), b.peer("fd05:114::")
	pc, pd := peer("10.99.0.3", "10.5.116.0"), peer("10.99.0.4", "10.5.118.0")
	withVNI := func(s *DeviceSpec, vni uint32) *DeviceSpec { s.VNI = vni; return s }
	withMTU := func(s *DeviceSpec, mtu int) *DeviceSpec { s.MTU = mtu; return s }
	states := []struct {
		name string
		d    Desired
	}{
		{"no device", Desired{}},
		{"0 peers", Desired{Device: a.spec("10.5.112.0")}},
		{"1 peer", Desired{Device: a.spec("10.5.112.0"), Peers: []Peer{pb}}},
		{"2 peers, dual-stack", Desired{Device: a.spec("10.5.112.0", "fd05:112::"), Peers: []Peer{pb, pb6, pc}}},
		{"3 peers, MTU 1400", Desired{Device: withMTU(a.spec("10.5.112.0"), 1400), Peers: []Peer{pb, pc, pd}}},
		{"VNI 7, 2 peers", Desired{Device: withVNI(a.spec("10.5.112.0"), 7), Peers: []Peer{pc, pd}}},
		{"VNI 7, other addresses", Desired{Device: withVNI(a.spec("10.5.113.0"), 7), Peers: []Peer{pb, pd}}},
	}

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, seed))
	tun := a.tunnel(t)
	prev, prevVNI, prevIndex := "none", uint32(0), 0
	for step := range 40 {
		s := states[rnd.IntN(len(states))]
		d := s.d
		d.Peers = slices.Clone(d.Peers)
		rnd.Shuffle(len(d.Peers), func(i, j int) { d.Peers[i], d.Peers[j] = d.Peers[j], d.Peers[i] })
		res, err := tun.Set(t.Context(), d)
		if err != nil {
			t.Fatalf("step %d, %s -> %s: Set: %v", step, prev, s.name, err)
		}
		got := a.state(t, VXLANDevice)
		want := expectedState(a, d, res.Index)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("step %d, %s -> %s: kernel state (-want +got):\n%s", step, prev, s.name, diff)
		}
		vni := uint32(0)
		if d.Device != nil {
			vni = max(d.Device.VNI, DefaultVNI)
		}
		if prevIndex != 0 && vni == prevVNI && res.Index != prevIndex {
			t.Errorf("step %d, %s -> %s: the device was recreated (if%d, was if%d) with the same VNI", step, prev, s.name, res.Index, prevIndex)
		}
		if diff := cmp.Diff(foreign, a.foreign(t)); diff != "" {
			t.Errorf("step %d, %s -> %s: the rest of the namespace changed (-before +after):\n%s", step, prev, s.name, diff)
		}
		// The same state again writes nothing.
		before := tun.Stats()
		if again, err := tun.Set(t.Context(), d); err != nil || again.Writes != 0 || again.Index != res.Index {
			t.Errorf("step %d, %s again: %+v, %v; want no writes", step, s.name, again, err)
		}
		if after := tun.Stats(); after != before {
			t.Errorf("step %d, %s again wrote: %+v, then %+v", step, s.name, before, after)
		}
		if t.Failed() {
			t.FailNow()
		}
		prev, prevVNI, prevIndex = s.name, vni, res.Index
	}
	if s := tun.Stats(); s.Errors != 0 {
		t.Errorf("Stats() = %+v, want no errors", s)
	}
}

// expectedState is what the kernel should hold for d, written
// independently of the code under test.
func expectedState(n *node, d Desired, index int) state {
	if d.Device == nil {
		return state{}
	}
	s := d.Device
	mtu := s.MTU
	if mtu == 0 {
		mtu = 1450
	}
	vni := max(s.VNI, 1)
	st := state{
		Index: index,
		Link:  "ra_vxlan mtu " + itoa(mtu) + " " + MACFor(n.ip).String() + " up|broadcast|multicast|running vni " + itoa(int(vni)) + " port 8472 local " + n.ip.String(),
	}
	seen := map[string]bool{}
	for _, p := range d.Peers {
		fdb := MACFor(p.NodeIP).String() + " dst " + p.NodeIP.String() + " state 128 flags 2"
		if !seen[fdb] {
			seen[fdb] = true
			st.FDB = append(st.FDB, fdb)
		}
		st.Neigh = append(st.Neigh, p.Gateway.String()+" lladdr "+MACFor(p.NodeIP).String()+" state 128")
	}
	for _, a := range s.Addresses {
		st.Addrs = append(st.Addrs, netip.PrefixFrom(a, a.BitLen()).String())
	}
	sortStrings(st.FDB, st.Neigh, st.Addrs)
	return st
}

// foreign describes the namespace apart from the tunnel device: links,
// addresses, and neighbour entries that hold a MAC.
func (n *node) foreign(t testing.TB) []string {
	t.Helper()
	links, err := n.h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		a := l.Attrs()
		if isOurs(a.Name) {
			continue
		}
		out = append(out, "link "+a.Name+" mtu "+itoa(a.MTU)+" "+a.Flags.String())
		addrs, err := n.h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			t.Fatal(err)
		}
		for _, ad := range addrs {
			out = append(out, "addr "+a.Name+" "+ad.IPNet.String())
		}
		for _, f := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			ns, err := n.h.NeighList(a.Index, f)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ns {
				if e.State&netlink.NUD_PERMANENT != 0 {
					out = append(out, "neigh "+a.Name+" "+e.IP.String()+" "+e.HardwareAddr.String())
				}
			}
		}
	}
	slices.Sort(out)
	return slices.DeleteFunc(out, func(s string) bool { return strings.HasPrefix(s, "addr lo ::1") })
}
