package nft

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// lab is three throw-away network namespaces in a row, pod -- node --
// outside, joined by veth pairs; the node forwards between them. Nothing
// is created in the namespace the tests run in.
//
//	pod  eth0 198.51.100.2/24 2001:db8:1::2/64
//	node pod0 198.51.100.1/24 2001:db8:1::1/64
//	node ext0 192.0.2.1/24    2001:db8:2::1/64
//	out  eth0 192.0.2.2/24    2001:db8:2::2/64
type lab struct {
	pod, node, outside netns.NsHandle
}

var (
	podAddr4  = netip.MustParseAddr("198.51.100.2")
	podAddr6  = netip.MustParseAddr("2001:db8:1::2")
	nodeExt4  = netip.MustParseAddr("192.0.2.1")
	nodeExt6  = netip.MustParseAddr("2001:db8:2::1")
	outAddr4  = netip.MustParseAddr("192.0.2.2")
	outAddr6  = netip.MustParseAddr("2001:db8:2::2")
	podNet4   = netip.MustParsePrefix("198.51.100.0/24")
	podNet6   = netip.MustParsePrefix("2001:db8:1::/64")
	outNet4   = netip.MustParsePrefix("192.0.2.0/24")
	outNet6   = netip.MustParsePrefix("2001:db8:2::/64")
	podGW4    = netip.MustParseAddr("198.51.100.1")
	podGW6    = netip.MustParseAddr("2001:db8:1::1")
	nodeIfExt = "ext0"
)

// newNS makes a namespace that goes away with the test, or skips the test
// when not root.
func newNS(t testing.TB) netns.NsHandle {
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
	// Closing the last handle on it tears the namespace down, with its
	// links, addresses and tables.
	t.Cleanup(func() { ns.Close() })
	return ns
}

func handle(t testing.TB, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("opening a netlink handle in a test namespace: %v", err)
	}
	t.Cleanup(h.Close)
	return h
}

func newLab(t testing.TB) *lab {
	t.Helper()
	l := &lab{pod: newNS(t), node: newNS(t), outside: newNS(t)}
	hPod, hNode, hOut := handle(t, l.pod), handle(t, l.node), handle(t, l.outside)

	// Both pairs are made inside the node namespace, with the peer put
	// straight into its own.
	for _, p := range []struct {
		name string
		peer netns.NsHandle
	}{{"pod0", l.pod}, {nodeIfExt, l.outside}} {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: p.name}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(p.peer))}
		if err := hNode.LinkAdd(v); err != nil {
			t.Fatalf("adding veth %s: %v", p.name, err)
		}
	}
	configure(t, hPod, "eth0", "198.51.100.2/24", "2001:db8:1::2/64")
	configure(t, hNode, "pod0", "198.51.100.1/24", "2001:db8:1::1/64")
	configure(t, hNode, nodeIfExt, "192.0.2.1/24", "2001:db8:2::1/64")
	configure(t, hOut, "eth0", "192.0.2.2/24", "2001:db8:2::2/64")
	route(t, hPod, netip.MustParsePrefix("0.0.0.0/0"), podGW4)
	route(t, hPod, netip.MustParsePrefix("::/0"), podGW6)
	// The outside can answer a pod that is not masqueraded.
	route(t, hOut, podNet4, nodeExt4)
	route(t, hOut, podNet6, nodeExt6)

	err := l.in(l.node, func() error {
		for _, key := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
			if err := os.WriteFile("/proc/sys/"+key, []byte("1"), 0o644); err != nil {
				return fmt.Errorf("setting %s: %w", key, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func configure(t testing.TB, h *netlink.Handle, name string, addrs ...string) {
	t.Helper()
	for _, n := range []string{"lo", name} {
		link, err := h.LinkByName(n)
		if err != nil {
			t.Fatalf("finding link %s: %v", n, err)
		}
		if n == name {
			for _, a := range addrs {
				p := netip.MustParsePrefix(a)
				// No duplicate address detection: a tentative IPv6
				// address cannot send for a second or two.
				addr := &netlink.Addr{IPNet: ipNet(p), Flags: unix.IFA_F_NODAD}
				if err := h.AddrAdd(link, addr); err != nil {
					t.Fatalf("adding %s to %s: %v", a, n, err)
				}
			}
		}
		if err := h.LinkSetUp(link); err != nil {
			t.Fatalf("setting %s up: %v", n, err)
		}
	}
}

func route(t testing.TB, h *netlink.Handle, dst netip.Prefix, gw netip.Addr) {
	t.Helper()
	if err := h.RouteAdd(&netlink.Route{Dst: ipNet(dst), Gw: gw.AsSlice()}); err != nil {
		t.Fatalf("adding route to %s via %s: %v", dst, gw, err)
	}
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// in runs fn on a thread in namespace ns. Sockets fn opens stay in ns
// after it returns.
func (l *lab) in(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("getting the current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering a test namespace: %w", err)
			return
		}
		err = fn()
		if errSet := netns.Set(orig); errSet != nil {
			// Locked, the thread ends with this goroutine.
			errc <- errors.Join(err, fmt.Errorf("leaving a test namespace: %w", errSet))
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// seen is where the outside saw a flow come from.
type seen struct {
	addr netip.Addr
	port uint16
}

func (s seen) String() string { return netip.AddrPortFrom(s.addr, s.port).String() }

// flow sends one new flow of proto ("udp" or "tcp") from the pod to the
// outside's address dst and returns the source the outside saw.
func (l *lab) flow(t testing.TB, proto string, dst netip.Addr) seen {
	t.Helper()
	network := proto + "4"
	if dst.Is6() {
		network = proto + "6"
	}
	var (
		pc net.PacketConn
		ln net.Listener
	)
	err := l.in(l.outside, func() error {
		var err error
		if proto == "udp" {
			pc, err = net.ListenPacket(network, netip.AddrPortFrom(dst, 0).String())
		} else {
			ln, err = net.Listen(network, netip.AddrPortFrom(dst, 0).String())
		}
		return err
	})
	if err != nil {
		t.Fatalf("listening on %s %s in the outside namespace: %v", network, dst, err)
	}
	var target string
	if pc != nil {
		defer pc.Close()
		target = pc.LocalAddr().String()
	} else {
		defer ln.Close()
		target = ln.Addr().String()
	}

	var c net.Conn
	err = l.in(l.pod, func() error {
		var err error
		c, err = net.DialTimeout(network, target, 5*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("dialling %s %s from the pod namespace: %v", network, target, err)
	}
	defer c.Close()
	deadline := time.Now().Add(5 * time.Second)

	var from net.Addr
	if pc != nil {
		// A lost first datagram (neighbour resolution) is sent again.
		buf := make([]byte, 64)
		for from == nil && time.Now().Before(deadline) {
			if _, err := c.Write([]byte("hello")); err != nil {
				t.Fatalf("sending from the pod: %v", err)
			}
			pc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			if _, addr, err := pc.ReadFrom(buf); err == nil {
				from = addr
			}
		}
		if from == nil {
			t.Fatalf("%s to %s: nothing arrived", network, target)
		}
	} else {
		ln.(*net.TCPListener).SetDeadline(deadline)
		a, err := ln.Accept()
		if err != nil {
			t.Fatalf("%s to %s: accepting: %v", network, target, err)
		}
		from = a.RemoteAddr()
		a.Close()
	}
	ap, err := netip.ParseAddrPort(from.String())
	if err != nil {
		t.Fatalf("parsing %s: %v", from, err)
	}
	return seen{addr: ap.Addr().Unmap(), port: ap.Port()}
}

// masqueraded fails the test unless each kind of flow to the outside
// reaches it from the node's address and a port in range.
func (l *lab) masqueraded(t testing.TB, portMin, portMax uint16) {
	t.Helper()
	for _, dst := range []netip.Addr{outAddr4, outAddr6} {
		want := nodeExt4
		if dst.Is6() {
			want = nodeExt6
		}
		for _, proto := range []string{"udp", "tcp"} {
			s := l.flow(t, proto, dst)
			if s.addr != want || s.port < portMin || s.port > portMax {
				t.Errorf("%s to %s came from %s, want %s with a port in %d-%d", proto, dst, s, want, portMin, portMax)
			}
		}
	}
}

// notMasqueraded fails the test unless the flows of the families named
// reach the outside from the pod's own address.
func (l *lab) notMasqueraded(t testing.TB, dsts ...netip.Addr) {
	t.Helper()
	for _, dst := range dsts {
		want := podAddr4
		if dst.Is6() {
			want = podAddr6
		}
		for _, proto := range []string{"udp", "tcp"} {
			if s := l.flow(t, proto, dst); s.addr != want {
				t.Errorf("%s to %s came from %s, want the pod's %s", proto, dst, s, want)
			}
		}
	}
}

func joinLines(lines []string) string { return strings.Join(lines, "\n") }
