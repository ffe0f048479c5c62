package routing

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// testNS is a throw-away network namespace for one test. Nothing a
// privileged test does reaches the namespace the tests run in.
type testNS struct {
	ns netns.NsHandle
	h  *netlink.Handle
}

// newTestNS makes a namespace that goes away with the test, or skips the
// test when not root.
func newTestNS(t testing.TB) *testNS {
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
		t.Fatalf("opening a netlink handle in the test namespace: %v", err)
	}
	// Closing the last handle on it tears the namespace down, with its
	// links and routes.
	t.Cleanup(func() {
		h.Close()
		ns.Close()
	})
	n := &testNS{ns: ns, h: h}
	n.up(t, n.link(t, "lo"))
	return n
}

func (n *testNS) link(t testing.TB, name string) netlink.Link {
	t.Helper()
	l, err := n.h.LinkByName(name)
	if err != nil {
		t.Fatalf("finding link %s: %v", name, err)
	}
	return l
}

func (n *testNS) up(t testing.TB, l netlink.Link) {
	t.Helper()
	if err := n.h.LinkSetUp(l); err != nil {
		t.Fatalf("setting %s up: %v", l.Attrs().Name, err)
	}
}

func (n *testNS) down(t testing.TB, l netlink.Link) {
	t.Helper()
	if err := n.h.LinkSetDown(l); err != nil {
		t.Fatalf("setting %s down: %v", l.Attrs().Name, err)
	}
}

// veth adds a veth pair, gives name the addresses and sets both ends up.
// It returns the index of name.
func (n *testNS) veth(t testing.TB, name, peer string, addrs ...string) int {
	t.Helper()
	if err := n.h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer}); err != nil {
		t.Fatalf("adding veth %s: %v", name, err)
	}
	l := n.link(t, name)
	for _, a := range addrs {
		p := netip.MustParsePrefix(a)
		// No duplicate address detection: a tentative IPv6 address would
		// make the gateway routes of the test fail for a second or two.
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}, Flags: unix.IFA_F_NODAD}
		if err := n.h.AddrAdd(l, addr); err != nil {
			t.Fatalf("adding %s to %s: %v", a, name, err)
		}
	}
	n.up(t, l)
	n.up(t, n.link(t, peer))
	return l.Attrs().Index
}

// kernel makes a Kernel in the namespace, closed with the test.
func (n *testNS) kernel(t testing.TB) *Kernel {
	t.Helper()
	k, err := NewKernel(Options{NetNS: n.ns, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("NewKernel: %v", err)
	}
	t.Cleanup(k.Close)
	return k
}

// routes returns the kernel's routes of protocol p, in every table and
// both families, as Routes; it fails on one that toNetlink cannot write.
func (n *testNS) routes(t testing.TB, p int) map[RouteKey]Route {
	t.Helper()
	got := map[RouteKey]Route{}
	for _, nr := range n.kernelRoutes(t, p) {
		r, ok := fromNetlink(&nr)
		if !ok {
			t.Fatalf("kernel route %+v is not one the agent writes", nr)
		}
		if _, dup := got[r.Key()]; dup {
			t.Fatalf("two routes of protocol %d for %s", p, r.Key())
		}
		got[r.Key()] = r
	}
	return got
}

// kernelRoutes returns the kernel's routes of protocol p in every table,
// both families; p < 0 means every protocol.
func (n *testNS) kernelRoutes(t testing.TB, p int) []netlink.Route {
	t.Helper()
	filter, mask := &netlink.Route{Protocol: netlink.RouteProtocol(p)}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL
	if p < 0 {
		mask = netlink.RT_FILTER_TABLE
	}
	var all []netlink.Route
	for _, f := range families {
		rs, err := n.h.RouteListFiltered(f.af, filter, mask)
		if err != nil {
			t.Fatalf("listing %s routes: %v", f.name, err)
		}
		all = append(all, rs...)
	}
	return all
}

// addRoute adds a route as an operator or another daemon would.
func (n *testNS) addRoute(t testing.TB, nr netlink.Route) {
	t.Helper()
	if err := n.h.RouteAdd(&nr); err != nil {
		t.Fatalf("adding %v: %v", nr, err)
	}
}

// events records route events in the namespace until the test ends.
func (n *testNS) events(t testing.TB) *routeEvents {
	t.Helper()
	e, err := watchRouteEvents(n.ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.stop)
	return e
}

// settle returns the route events since the last call.
func (n *testNS) settle(t testing.TB, e *routeEvents) []netlink.RouteUpdate {
	t.Helper()
	seen, err := e.settle(n.h)
	if err != nil {
		t.Fatal(err)
	}
	return seen
}

func staticRoute(dst string, gw string, link int) netlink.Route {
	p := netip.MustParsePrefix(dst)
	nr := netlink.Route{
		Dst:       &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
		LinkIndex: link,
		Protocol:  unix.RTPROT_STATIC,
	}
	if gw != "" {
		nr.Gw = netip.MustParseAddr(gw).AsSlice()
	} else if p.Addr().Is4() {
		nr.Scope = netlink.SCOPE_LINK
	}
	return nr
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func mustSet(t testing.TB, k *Kernel, routes []Route) Result {
	t.Helper()
	res, err := k.Set(context.Background(), routes)
	if err != nil {
		t.Fatalf("Set: %v", err)
	}
	return res
}
