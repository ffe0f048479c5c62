package tunnel

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// TestWatch: every way the kernel can lose what Set made notifies, and Set
// then puts it back; our own writes and the kernel's chatter on the device
// do not notify.
func TestWatch(t *testing.T) {
	a, b := twoNodes(t, false)
	tun := a.tunnel(t)
	c := Peer{NodeIP: netip.MustParseAddr("10.99.0.3"), Gateway: netip.MustParseAddr("10.5.116.0")}
	d := Desired{Device: a.spec("10.5.112.0", "fd05:112::"), Peers: []Peer{b.peer("10.5.114.0"), c}}
	mustSet(t, tun, d)

	notes := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- tun.Watch(ctx, func() {
			select {
			case notes <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	})
	wait := func(what string) {
		t.Helper()
		select {
		case <-notes:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no notification", what)
		}
	}
	quiet := func(what string) {
		t.Helper()
		select {
		case <-notes:
			t.Errorf("%s: notified", what)
		case <-time.After(300 * time.Millisecond):
		}
	}
	drain := func() {
		for {
			select {
			case <-notes:
			case <-time.After(300 * time.Millisecond):
				return
			}
		}
	}
	wait("subscribing")
	mustSet(t, tun, d)
	quiet("a Set that writes nothing")
	// Traffic makes the kernel try to resolve an address nobody has: an
	// incomplete entry, which Set leaves alone.
	a.route(t, "10.5.250.0/24", "10.5.250.1", a.link(t, VXLANDevice).Attrs().Index)
	_, _ = a.pingWait("10.5.250.1", 0, 1)
	quiet("an incomplete neighbour entry")

	index := func() int { return a.link(t, VXLANDevice).Attrs().Index }
	for _, c := range []struct {
		name    string
		disturb func(t *testing.T)
	}{
		{"FDB entry deleted", func(t *testing.T) {
			n := fdbEntry(index(), hwAddr(MACFor(b.ip)), b.ip)
			if err := a.h.NeighDel(&n); err != nil {
				t.Fatal(err)
			}
		}},
		{"FDB entry pointed elsewhere", func(t *testing.T) {
			n := fdbEntry(index(), hwAddr(MACFor(b.ip)), netip.MustParseAddr("10.99.0.9"))
			if err := a.h.NeighSet(&n); err != nil {
				t.Fatal(err)
			}
		}},
		{"foreign FDB entry", func(t *testing.T) {
			n := fdbEntry(index(), hwAddr{}, netip.MustParseAddr("10.99.0.9"))
			if err := a.h.NeighAppend(&n); err != nil {
				t.Fatal(err)
			}
		}},
		{"neighbour entry deleted", func(t *testing.T) {
			n := neighEntry(index(), netip.MustParseAddr("10.5.116.0"), hwAddr(MACFor(c.NodeIP)))
			if err := a.h.NeighDel(&n); err != nil {
				t.Fatal(err)
			}
		}},
		{"neighbour entry changed", func(t *testing.T) {
			n := neighEntry(index(), netip.MustParseAddr("10.5.114.0"), hwAddr{2, 0, 0, 0, 0, 1})
			if err := a.h.NeighSet(&n); err != nil {
				t.Fatal(err)
			}
		}},
		{"foreign neighbour entry", func(t *testing.T) {
			n := neighEntry(index(), netip.MustParseAddr("10.5.199.0"), hwAddr{2, 0, 0, 0, 0, 1})
			if err := a.h.NeighSet(&n); err != nil {
				t.Fatal(err)
			}
		}},
		{"device down", func(t *testing.T) {
			if err := a.h.LinkSetDown(a.link(t, VXLANDevice)); err != nil {
				t.Fatal(err)
			}
		}},
		{"device MTU", func(t *testing.T) {
			if err := a.h.LinkSetMTU(a.link(t, VXLANDevice), 1280); err != nil {
				t.Fatal(err)
			}
		}},
		{"device MAC", func(t *testing.T) {
			l := a.link(t, VXLANDevice)
			_ = a.h.LinkSetDown(l)
			if err := a.h.LinkSetHardwareAddr(l, net.HardwareAddr{2, 0, 0, 0, 0, 2}); err != nil {
				t.Fatal(err)
			}
		}},
		{"device deleted", func(t *testing.T) {
			if err := a.h.LinkDel(a.link(t, VXLANDevice)); err != nil {
				t.Fatal(err)
			}
		}},
		{"underlay MTU", func(t *testing.T) {
			if err := a.h.LinkSetMTU(a.link(t, "eth0"), 1400); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			want := a.state(t, VXLANDevice)
			c.disturb(t)
			wait(c.name)
			res := mustSet(t, tun, d)
			if res.Writes == 0 {
				t.Errorf("Set after %s wrote nothing", c.name)
			}
			got := a.state(t, VXLANDevice)
			if c.name != "device deleted" && c.name != "underlay MTU" && !equalState(want, got) {
				t.Errorf("Set did not restore the state:\nwant %+v\ngot  %+v", want, got)
			}
			// Set's own writes to the device (not to entries) may notify
			// once; after that, all is quiet.
			drain()
			mustSet(t, tun, d)
			quiet("a Set that writes nothing after " + c.name)
		})
	}

	// No device desired: one made by hand is noticed.
	mustSet(t, tun, Desired{})
	drain()
	v := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: VXLANDevice}, VxlanId: 5, Port: 8472}
	if err := a.h.LinkAdd(v); err != nil {
		t.Fatal(err)
	}
	wait("a tunnel device appearing when none is desired")
	mustSet(t, tun, Desired{})
	if a.linkOrNil(t, VXLANDevice) != nil {
		t.Error("the device made by hand is still there")
	}
}

func equalState(a, b state) bool {
	return a.Index == b.Index && a.Link == b.Link && equalStrings(a.FDB, b.FDB) && equalStrings(a.Neigh, b.Neigh) && equalStrings(a.Addrs, b.Addrs)
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
