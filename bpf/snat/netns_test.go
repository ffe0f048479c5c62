package snat

import (
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// testNS is a throw-away network namespace for one test: nothing the
// test adds reaches the namespace the tests run in.
type testNS struct {
	name string
	ns   netns.NsHandle
	h    *netlink.Handle
}

func newTestNS(t testing.TB, name string) *testNS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to make network namespaces")
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("getting the current network namespace: %v", err)
	}
	ns, err := netns.New()
	if errSet := netns.Set(orig); errSet != nil {
		// The thread stays locked, so Go retires it rather than run other
		// goroutines in the wrong namespace.
		t.Fatalf("returning to the original network namespace: %v", errSet)
	}
	runtime.UnlockOSThread()
	orig.Close()
	if err != nil {
		t.Fatalf("making a network namespace: %v", err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		t.Fatalf("opening a netlink handle in namespace %s: %v", name, err)
	}
	// Closing the last handle on it tears the namespace down, with its
	// links, routes and attached programs.
	t.Cleanup(func() {
		h.Close()
		ns.Close()
	})
	n := &testNS{name: name, ns: ns, h: h}
	n.up(t, "lo")
	return n
}

// do runs f on a thread in the namespace: sockets f opens live there,
// and netlink and BPF calls that name devices find them there.
func (n *testNS) do(t testing.TB, f func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("getting the current network namespace: %v", err)
	}
	defer orig.Close()
	if err := netns.Set(n.ns); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("entering namespace %s: %v", n.name, err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: Go retires it.
			t.Errorf("leaving namespace %s: %v", n.name, err)
			return
		}
		runtime.UnlockOSThread()
	}()
	f()
}

func (n *testNS) link(t testing.TB, name string) netlink.Link {
	t.Helper()
	l, err := n.h.LinkByName(name)
	if err != nil {
		t.Fatalf("finding %s in %s: %v", name, n.name, err)
	}
	return l
}

func (n *testNS) up(t testing.TB, name string) {
	t.Helper()
	if err := n.h.LinkSetUp(n.link(t, name)); err != nil {
		t.Fatalf("setting %s up in %s: %v", name, n.name, err)
	}
}

func (n *testNS) addAddr(t testing.TB, name, prefix string) {
	t.Helper()
	p := netip.MustParsePrefix(prefix)
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}}
	if err := n.h.AddrAdd(n.link(t, name), a); err != nil {
		t.Fatalf("adding %s to %s in %s: %v", prefix, name, n.name, err)
	}
}

func (n *testNS) defaultRoute(t testing.TB, gw string) {
	t.Helper()
	r := &netlink.Route{Gw: netip.MustParseAddr(gw).AsSlice()}
	if err := n.h.RouteAdd(r); err != nil {
		t.Fatalf("adding a default route via %s in %s: %v", gw, n.name, err)
	}
}

// vethTo links name in n with peerName in peer, both up.
func (n *testNS) vethTo(t testing.TB, name string, peer *testNS, peerName string) {
	t.Helper()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peerName, PeerNamespace: netlink.NsFd(int(peer.ns))}
	if err := n.h.LinkAdd(v); err != nil {
		t.Fatalf("adding veth %s/%s: %v", name, peerName, err)
	}
	n.up(t, name)
	peer.up(t, peerName)
}

func (n *testNS) sysctl(t testing.TB, path, value string) {
	t.Helper()
	n.do(t, func() {
		if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
			t.Fatalf("setting %s in %s: %v", path, n.name, err)
		}
	})
}

// setOffload turns a device's checksum offload on or off (cmd is
// ETHTOOL_STXCSUM or ETHTOOL_SRXCSUM). With offload off on both sides a
// bad checksum is not trusted along a veth but dropped by the receiver.
func (n *testNS) setOffload(t testing.TB, name string, cmd uint32, on bool) {
	t.Helper()
	type ethtoolValue struct{ cmd, data uint32 }
	type ifreq struct {
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [16]byte
	}
	v := &ethtoolValue{cmd: cmd}
	if on {
		v.data = 1
	}
	req := &ifreq{data: unsafe.Pointer(v)}
	copy(req.name[:], name)
	n.do(t, func() {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatalf("opening an ioctl socket: %v", err)
		}
		defer unix.Close(fd)
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(req))); errno != 0 {
			t.Fatalf("ethtool command %#x on %s: %v", cmd, name, errno)
		}
	})
	runtime.KeepAlive(v)
}
