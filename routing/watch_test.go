package routing

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestEventFilterRoutes(t *testing.T) {
	a := Route{Dst: netip.MustParsePrefix("10.5.1.0/24"), Gw: netip.MustParseAddr("10.0.0.2"), LinkIndex: 2}
	b := Route{Dst: netip.MustParsePrefix("fd05:1::/64"), LinkIndex: 3, Table: 100}
	want := newDesiredSet([]Route{a, b, {Dst: netip.MustParsePrefix("10.5.2.0/24"), LinkIndex: 2, Table: 100}})
	event := func(typ uint16, r Route, edit func(*netlink.Route)) *netlink.RouteUpdate {
		u := &netlink.RouteUpdate{Type: typ, Route: kernelView(r)}
		if edit != nil {
			edit(&u.Route)
		}
		return u
	}
	static := func(nr *netlink.Route) { nr.Protocol = unix.RTPROT_STATIC }
	kernelProto := func(nr *netlink.Route) { nr.Protocol = unix.RTPROT_KERNEL }
	elsewhere := Route{Dst: netip.MustParsePrefix("10.77.0.0/16"), LinkIndex: 2}
	tests := []struct {
		desc string
		u    *netlink.RouteUpdate
		want bool
	}{
		{"our own add of a desired route, seen back", event(unix.RTM_NEWROUTE, a, nil), false},
		{"our route changed under us", event(unix.RTM_NEWROUTE, a, func(nr *netlink.Route) { nr.Gw = ip("10.0.0.9") }), true},
		{"one of ours that is not desired", event(unix.RTM_NEWROUTE, elsewhere, nil), true},
		{"a desired route of ours deleted", event(unix.RTM_DELROUTE, b, nil), true},
		{"a route of ours nobody wants deleted", event(unix.RTM_DELROUTE, elsewhere, nil), false},
		{"another protocol's route at a desired key", event(unix.RTM_NEWROUTE, a, static), true},
		{"another protocol's route at a desired key goes", event(unix.RTM_DELROUTE, b, static), true},
		{"another protocol's gateway route elsewhere: next hops resolve through it", event(unix.RTM_NEWROUTE, Route{Dst: elsewhere.Dst, Gw: a.Gw, LinkIndex: 2}, static), true},
		{"another protocol's gateway route in another table", event(unix.RTM_NEWROUTE, Route{Dst: elsewhere.Dst, Gw: a.Gw, LinkIndex: 2, Table: 100}, static), false},
		{"another protocol's device route elsewhere: a gateway may be reachable", event(unix.RTM_NEWROUTE, elsewhere, static), true},
		{"another protocol's route at a desired prefix in another table", event(unix.RTM_NEWROUTE, Route{Dst: a.Dst, Gw: a.Gw, LinkIndex: 2, Table: 7}, static), false},
		{"the host's default route changes gateway", func() *netlink.RouteUpdate {
			u := event(unix.RTM_NEWROUTE, Route{Dst: elsewhere.Dst, Gw: a.Gw, LinkIndex: 2}, static)
			u.Dst, u.Table = nil, unix.RT_TABLE_MAIN
			return u
		}(), true},
		{"a cloned route", event(unix.RTM_DELROUTE, b, func(nr *netlink.Route) { nr.Flags |= unix.RTM_F_CLONED }), false},
		{"a connected route back: a gateway may be reachable again", event(unix.RTM_NEWROUTE, Route{Dst: netip.MustParsePrefix("fd01::/64"), LinkIndex: 3}, kernelProto), true},
		{"a connected route in a table the agent uses", event(unix.RTM_DELROUTE, Route{Dst: netip.MustParsePrefix("10.9.0.0/24"), LinkIndex: 3, Table: 100}, kernelProto), true},
		{"a device route in another table", event(unix.RTM_NEWROUTE, Route{Dst: netip.MustParsePrefix("10.9.0.0/24"), LinkIndex: 3, Table: 7}, kernelProto), false},
		{"the link-local prefix", event(unix.RTM_NEWROUTE, Route{Dst: netip.MustParsePrefix("fe80::/64"), LinkIndex: 3}, kernelProto), false},
		{"a multicast route", event(unix.RTM_NEWROUTE, Route{Dst: netip.MustParsePrefix("ff00::/8"), LinkIndex: 3}, kernelProto), false},
		{"a local route", event(unix.RTM_NEWROUTE, Route{Dst: netip.MustParsePrefix("10.0.0.1/32"), LinkIndex: 3}, func(nr *netlink.Route) {
			kernelProto(nr)
			nr.Type = unix.RTN_LOCAL
		}), false},
	}
	for _, tt := range tests {
		ev := eventFilter{links: map[int]uint32{}}
		if got := ev.route(tt.u, want); got != tt.want {
			t.Errorf("%s: matters = %v, want %v", tt.desc, got, tt.want)
		}
	}
	ev := eventFilter{}
	if !ev.route(event(unix.RTM_NEWROUTE, a, nil), nil) {
		t.Error("a route of ours before any Set does not matter")
	}
}

func TestEventFilterLinks(t *testing.T) {
	ev := eventFilter{links: map[int]uint32{}}
	link := func(typ uint16, index int32, flags uint32) *netlink.LinkUpdate {
		u := &netlink.LinkUpdate{Header: unix.NlMsghdr{Type: typ}}
		u.Index, u.Flags = index, flags
		return u
	}
	up := uint32(unix.IFF_UP | unix.IFF_RUNNING)
	steps := []struct {
		desc string
		u    *netlink.LinkUpdate
		want bool
	}{
		{"a new link", link(unix.RTM_NEWLINK, 2, up), true},
		{"the same link, same state (an MTU change, say)", link(unix.RTM_NEWLINK, 2, up|unix.IFF_MULTICAST), false},
		{"carrier lost", link(unix.RTM_NEWLINK, 2, unix.IFF_UP), true},
		{"set down", link(unix.RTM_NEWLINK, 2, 0), true},
		{"set up", link(unix.RTM_NEWLINK, 2, up), true},
		{"deleted", link(unix.RTM_DELLINK, 2, up), true},
	}
	listed := link(unix.RTM_NEWLINK, 3, 0)
	listed.Header.Flags = unix.NLM_F_MULTI
	steps = append(steps, struct {
		desc string
		u    *netlink.LinkUpdate
		want bool
	}{"a link listed on subscribing", listed, false}, struct {
		desc string
		u    *netlink.LinkUpdate
		want bool
	}{"that link set up", link(unix.RTM_NEWLINK, 3, unix.IFF_UP), true})
	for _, s := range steps {
		if got := ev.link(s.u); got != s.want {
			t.Errorf("%s: matters = %v, want %v", s.desc, got, s.want)
		}
	}
}

func TestAddrMatters(t *testing.T) {
	for _, tt := range []struct {
		addr string
		want bool
	}{{"10.0.0.1/24", true}, {"169.254.1.1/16", true}, {"fd00::1/64", true}, {"fe80::1/64", false}} {
		u := &netlink.AddrUpdate{LinkAddress: *ipNet(tt.addr), NewAddr: true}
		if got := addrMatters(u); got != tt.want {
			t.Errorf("addrMatters(%s) = %v, want %v", tt.addr, got, tt.want)
		}
	}
}

// reconciler runs Set whenever Watch notifies, as the agent's engine does.
type reconciler struct {
	k       *Kernel
	notes   atomic.Int64
	last    atomic.Pointer[Result]
	mu      sync.Mutex
	desired []Route
}

func startReconciler(t *testing.T, k *Kernel, desired []Route) *reconciler {
	t.Helper()
	r := &reconciler{k: k, desired: desired}
	ctx, cancel := context.WithCancel(context.Background())
	kick := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		err := k.Watch(ctx, func() {
			r.notes.Add(1)
			select {
			case kick <- struct{}{}:
			default:
			}
		})
		if err != nil {
			t.Errorf("Watch: %v", err)
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-kick:
			}
			r.mu.Lock()
			desired := r.desired
			r.mu.Unlock()
			res, err := k.Set(ctx, desired)
			if err != nil && ctx.Err() == nil {
				t.Errorf("Set: %v", err)
			}
			r.last.Store(&res)
		}
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return r
}

// untilQuiet waits until notes stops counting: links still settling in
// a new namespace notify.
func untilQuiet(notes *atomic.Int64) {
	for n := int64(-1); n != notes.Load(); time.Sleep(300 * time.Millisecond) {
		n = notes.Load()
	}
}

// manyRoutes returns n distinct /28s from 10.64.0.0 on, via gw.
func manyRoutes(n int, gw string, link int) []Route {
	routes := make([]Route, n)
	for i := range routes {
		a := netip.AddrFrom4([4]byte{10, byte(64 + i>>12), byte(i >> 4), byte(i << 4)})
		routes[i] = route(netip.PrefixFrom(a, 28).String(), gw, link)
	}
	return routes
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (l *lab) holds(t *testing.T, routes ...Route) func() bool {
	return func() bool {
		got := l.routes(t, Protocol)
		for _, r := range routes {
			if got[r.Key()] != r.normalize() {
				return false
			}
		}
		return len(got) == len(routes)
	}
}

func TestWatchHealsADeletedRoute(t *testing.T) {
	l := newLab(t)
	k := l.kernel(t)
	routes := []Route{route("10.5.1.0/24", "10.0.0.2", l.eth0), route("fd05:1::/64", "fd00::2", l.eth0)}
	startReconciler(t, k, routes)
	waitFor(t, 5*time.Second, "routes installed", l.holds(t, routes...))

	for _, r := range routes {
		events := l.events(t)
		nr := toNetlink(r)
		start := time.Now()
		if err := l.h.RouteDel(&nr); err != nil {
			t.Fatalf("deleting %s by hand: %v", r, err)
		}
		timeout := time.After(5 * time.Second)
	wait:
		for {
			select {
			case u := <-events.ch:
				if got, ok := fromNetlink(&u.Route); u.Type == unix.RTM_NEWROUTE && ok && got == r {
					break wait
				}
			case <-timeout:
				t.Fatalf("%s: not back 5s after it was deleted", r)
			}
		}
		t.Logf("%s back %v after it was deleted", r, time.Since(start))
	}
	// The kernel's event may come before Set has counted its write.
	waitFor(t, 5*time.Second, "two heals counted", func() bool { return k.Stats().Heals == 2 })
	if got := k.Stats().Heals; got != 2 {
		t.Errorf("Stats().Heals = %d, want 2", got)
	}
}

func TestWatchGetsRoutesBackAfterALinkBounce(t *testing.T) {
	l := newLab(t)
	k := l.kernel(t)
	routes := []Route{
		route("10.5.0.0/24", "10.0.0.2", l.eth0), // a link that stays up
		route("10.5.1.0/24", "10.1.0.2", l.eth1),
		route("10.5.2.0/24", "", l.eth1),
		{Dst: netip.MustParsePrefix("10.5.3.0/24"), Gw: netip.MustParseAddr("192.0.2.1"), LinkIndex: l.eth1, OnLink: true, Table: 100, MTU: 1400},
		route("fd05:1::/64", "fd01::2", l.eth1),
		route("fd05:2::/64", "", l.eth1),
	}
	rec := startReconciler(t, k, routes)
	waitFor(t, 5*time.Second, "routes installed", l.holds(t, routes...))

	eth1 := l.link(t, "eth1")
	for bounce := range 3 {
		l.down(t, eth1)
		waitFor(t, 5*time.Second, "routes through eth1 reported pending", func() bool {
			res := rec.last.Load()
			return res != nil && res.Count(Pending) == len(routes)-1 && res.Routes[1].Reason == "pending: link eth1 is down"
		})
		if got := l.routes(t, Protocol); len(got) != 1 {
			t.Errorf("bounce %d: with eth1 down the kernel holds %d routes of ours, want 1", bounce, len(got))
		}
		start := time.Now()
		l.up(t, eth1)
		// The kernel dropped the IPv6 address when the link went down; a
		// network manager puts it back.
		if err := l.h.AddrAdd(eth1, &netlink.Addr{IPNet: ipNet("fd01::1/64"), Flags: unix.IFA_F_NODAD}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "every route back after eth1 came up", l.holds(t, routes...))
		t.Logf("bounce %d: every route back %v after eth1 came up", bounce, time.Since(start))
	}
}

func TestWatchIgnoresOwnWritesAndOtherChurn(t *testing.T) {
	l := newLab(t)
	k := l.kernel(t)
	a := route("10.5.1.0/24", "10.0.0.2", l.eth0)
	var notes atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- k.Watch(ctx, func() { notes.Add(1) }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	}()
	waitFor(t, 5*time.Second, "the notification after subscribing", func() bool { return notes.Load() >= 1 })
	quiet := func(what string) {
		t.Helper()
		before := notes.Load()
		time.Sleep(300 * time.Millisecond)
		if n := notes.Load() - before; n != 0 {
			t.Errorf("%s: %d notifications, want none", what, n)
		}
	}
	loud := func(what string, action func()) {
		t.Helper()
		before := notes.Load()
		action()
		waitFor(t, 5*time.Second, what+" notifies", func() bool { return notes.Load() > before })
	}
	untilQuiet(&notes)

	mustSet(t, k, append(manyRoutes(500, "10.0.0.2", l.eth0), a))
	quiet("our own adds")
	mustSet(t, k, []Route{a})
	quiet("our own deletes")
	// The planner resolves next hops through the main table, so another
	// protocol's route there counts.
	loud("another protocol's route elsewhere in main", func() { l.addRoute(t, staticRoute("10.77.0.0/16", "10.0.0.9", l.eth0)) })

	loud("deleting our route", func() {
		nr := toNetlink(a)
		if err := l.h.RouteDel(&nr); err != nil {
			t.Fatal(err)
		}
	})
	loud("another protocol taking a desired key", func() { l.addRoute(t, staticRoute("10.5.1.0/24", "10.0.0.9", l.eth0)) })
	loud("an address added", func() {
		if err := l.h.AddrAdd(l.link(t, "eth0"), &netlink.Addr{IPNet: ipNet("10.0.1.1/24")}); err != nil {
			t.Fatal(err)
		}
	})
	loud("a link going down", func() { l.down(t, l.link(t, "eth1")) })
}

func TestWatchSubscribesAgainAfterLosingEvents(t *testing.T) {
	l := newLab(t)
	k := l.kernel(t)
	// A receive buffer this small overflows at once under a burst.
	k.eventBuffer = 4096
	var notes atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- k.Watch(ctx, func() { notes.Add(1) }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	}()
	waitFor(t, 5*time.Second, "subscribed", func() bool { return k.subscriptions.Load() == 1 && notes.Load() >= 1 })
	untilQuiet(&notes)

	// Our own writes make no notification, but losing events does.
	before := notes.Load()
	many := manyRoutes(5000, "10.0.0.2", l.eth0)
	mustSet(t, k, many)
	mustSet(t, k, nil)
	waitFor(t, 10*time.Second, "subscribed again", func() bool { return k.subscriptions.Load() >= 2 })
	waitFor(t, 5*time.Second, "a notification after subscribing again", func() bool { return notes.Load() > before })

	// And it still works.
	mustSet(t, k, many[:1])
	before = notes.Load()
	nr := toNetlink(many[0])
	if err := l.h.RouteDel(&nr); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a notification for a deleted route", func() bool { return notes.Load() > before })
}

func TestWatchFailsOnABadNamespace(t *testing.T) {
	l := newLab(t)
	k := l.kernel(t)
	k.ns.Close()
	k.ns = 1 << 20 // no such descriptor
	err := k.Watch(context.Background(), func() {})
	if err == nil || !strings.Contains(err.Error(), "subscribing to route events") {
		t.Errorf("Watch = %v, want a subscription error", err)
	}
	k.ns = -1
}
