package routing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// BenchResult is what BenchInstall measured.
type BenchResult struct {
	Routes int
	// Serial is the baseline: one netlink RouteReplace per route.
	Serial time.Duration
	// Install is Set installing the same routes from nothing.
	Install time.Duration
	// Noop is Set again with the same routes, and NoopChanges the events
	// of protocol-201 routes the kernel sent meanwhile, which must be none.
	Noop        time.Duration
	NoopChanges int
}

// Speedup is how many times faster Set installed than serial RouteReplace.
func (b BenchResult) Speedup() float64 { return b.Serial.Seconds() / b.Install.Seconds() }

func (b BenchResult) String() string {
	return fmt.Sprintf("%d routes: serial RouteReplace %v, Set %v (%.1f×), no-op Set %v with %d route changes",
		b.Routes, b.Serial.Round(time.Millisecond), b.Install.Round(time.Millisecond), b.Speedup(),
		b.Noop.Round(time.Millisecond), b.NoopChanges)
}

// BenchInstall measures, in the network namespace ns, installing n IPv4
// gateway routes with Set against serial RouteReplace, and a Set that has
// nothing to do. ns must be a throw-away namespace: BenchInstall makes a
// veth pair there, and refuses to run in its caller's own namespace.
func BenchInstall(ns netns.NsHandle, n int) (BenchResult, error) {
	res := BenchResult{Routes: n}
	if n <= 0 || n > 1<<20 {
		return res, fmt.Errorf("%d routes: want 1 to %d", n, 1<<20)
	}
	if !ns.IsOpen() {
		return res, errors.New("no network namespace given")
	}
	if self, err := netns.Get(); err == nil {
		same := self.Equal(ns)
		self.Close()
		if same {
			return res, errors.New("refusing to benchmark in the current network namespace")
		}
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return res, fmt.Errorf("opening a netlink handle: %w", err)
	}
	defer h.Close()
	dev, err := addBenchLink(h)
	if err != nil {
		return res, err
	}
	defer h.LinkDel(dev)

	gw := netip.MustParseAddr("192.168.255.2")
	routes := make([]Route, n)
	for i := range routes {
		// Distinct /28s from 10.0.0.0 on.
		a := netip.AddrFrom4([4]byte{10, byte(i >> 12), byte(i >> 4), byte(i << 4)})
		routes[i] = Route{Dst: netip.PrefixFrom(a, 28), Gw: gw, LinkIndex: dev.Attrs().Index}
	}

	k, err := NewKernel(Options{NetNS: ns, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return res, err
	}
	defer k.Close()
	ctx := context.Background()

	start := time.Now()
	for _, r := range routes {
		nr := toNetlink(r)
		if err := h.RouteReplace(&nr); err != nil {
			return res, fmt.Errorf("replacing %s: %w", r, err)
		}
	}
	res.Serial = time.Since(start)
	if _, err := k.Cleanup(ctx); err != nil {
		return res, err
	}

	start = time.Now()
	if _, err := k.Set(ctx, routes); err != nil {
		return res, err
	}
	res.Install = time.Since(start)

	events, err := watchRouteEvents(ns)
	if err != nil {
		return res, err
	}
	defer events.stop()
	start = time.Now()
	if _, err := k.Set(ctx, routes); err != nil {
		return res, err
	}
	res.Noop = time.Since(start)
	seen, err := events.settle(h)
	if err != nil {
		return res, err
	}
	res.NoopChanges = len(seen)
	_, err = k.Cleanup(ctx)
	return res, err
}

func addBenchLink(h *netlink.Handle) (netlink.Link, error) {
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "rabench0"}, PeerName: "rabench1"}
	if err := h.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("adding veth rabench0: %w", err)
	}
	dev, err := h.LinkByName("rabench0")
	if err == nil {
		err = h.AddrAdd(dev, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(192, 168, 255, 1), Mask: net.CIDRMask(24, 32)}})
	}
	for _, name := range []string{"rabench0", "rabench1"} {
		if err == nil {
			var l netlink.Link
			if l, err = h.LinkByName(name); err == nil {
				err = h.LinkSetUp(l)
			}
		}
	}
	if err != nil {
		h.LinkDel(veth)
		return nil, fmt.Errorf("setting up veth rabench0: %w", err)
	}
	return dev, nil
}

// routeEvents records the route events of a namespace, to count the
// changes an operation made.
type routeEvents struct {
	ch   chan netlink.RouteUpdate
	done chan struct{}
}

func watchRouteEvents(ns netns.NsHandle) (*routeEvents, error) {
	e := &routeEvents{ch: make(chan netlink.RouteUpdate, 4096), done: make(chan struct{})}
	err := netlink.RouteSubscribeWithOptions(e.ch, e.done, netlink.RouteSubscribeOptions{
		Namespace: &ns, ReceiveBufferSize: eventBuffer, ReceiveBufferForceSize: true,
	})
	if err != nil {
		return nil, fmt.Errorf("subscribing to route events: %w", err)
	}
	return e, nil
}

func (e *routeEvents) stop() {
	close(e.done)
	for range e.ch {
	}
}

// markerDst is the route settle adds as a barrier, in a table Set never
// uses unless asked to.
var markerDst = &net.IPNet{IP: net.IPv4(192, 0, 2, 255).To4(), Mask: net.CIDRMask(32, 32)}

const markerTable = 252

// settle returns the events of protocol-201 routes sent since the last
// settle: the changes the agent made. (The kernel's own routes come and go
// as links settle.) The kernel queues events in order, so once the event
// of a marker route added now arrives, every event caused earlier has
// arrived too.
func (e *routeEvents) settle(h *netlink.Handle) ([]netlink.RouteUpdate, error) {
	lo, err := h.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("finding lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return nil, fmt.Errorf("setting lo up: %w", err)
	}
	marker := &netlink.Route{Dst: markerDst, LinkIndex: lo.Attrs().Index, Table: markerTable, Protocol: unix.RTPROT_STATIC, Scope: netlink.SCOPE_LINK}
	if err := h.RouteAdd(marker); err != nil {
		return nil, fmt.Errorf("adding the marker route: %w", err)
	}
	isMarker := func(u netlink.RouteUpdate) bool {
		return u.Table == markerTable && u.Dst != nil && u.Dst.IP.Equal(markerDst.IP)
	}
	var seen []netlink.RouteUpdate
	timeout := time.After(30 * time.Second)
	for {
		select {
		case u, ok := <-e.ch:
			if !ok {
				return seen, errors.New("route events: subscription closed")
			}
			if !isMarker(u) {
				if int(u.Protocol) == Protocol {
					seen = append(seen, u)
				}
				continue
			}
			if u.Type == unix.RTM_NEWROUTE {
				if err := h.RouteDel(marker); err != nil {
					return seen, fmt.Errorf("deleting the marker route: %w", err)
				}
				continue
			}
			return seen, nil // its deletion: the channel is clean for the next settle
		case <-timeout:
			return seen, errors.New("route events: no marker after 30s")
		}
	}
}
