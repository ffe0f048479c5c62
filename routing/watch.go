package routing

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	// eventBuffer is the receive buffer of the route subscription: a Set
	// of many routes sends as many events at once.
	eventBuffer    = 8 << 20
	resubscribeMin = 100 * time.Millisecond
	resubscribeMax = 10 * time.Second
)

// Watch subscribes to the kernel's route, link and address events (IPv4
// and IPv6) and calls notify whenever something happened that may make the
// kernel differ from the last Set, or the plan differ from the last one:
// one of our routes deleted or changed, a unicast route of another protocol
// coming or going in the main table (a connected prefix makes gateways
// reachable; the planner decides on-link nodes and resolves BGP next hops
// through the main table, default route included) or at a desired key, a
// link coming, going, going up or down, an address added or removed. Our
// own writes seen back, other tables' routes and IPv6 link-local churn do
// not count.
//
// notify must not block; Watch calls it once per burst of events, and once
// after subscribing, for what happened before. When a subscription fails
// (ENOBUFS: the kernel dropped events under load) Watch subscribes again
// and notifies, since events were lost. It returns nil when ctx ends, or
// the error of its first subscription.
func (k *Kernel) Watch(ctx context.Context, notify func()) error {
	delay := resubscribeMin
	for first := true; ; first = false {
		began := time.Now()
		err := k.watch(ctx, notify)
		if ctx.Err() != nil {
			return nil
		}
		var sub subscribeError
		if first && errors.As(err, &sub) {
			return err
		}
		if time.Since(began) > time.Minute {
			delay = resubscribeMin
		}
		k.log.Warn("netlink events lost, subscribing again", "error", err, "in", delay)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, resubscribeMax)
	}
}

type subscribeError struct{ error }

func (e subscribeError) Unwrap() error { return e.error }

// watch subscribes once and relays events until ctx ends or a
// subscription breaks.
func (k *Kernel) watch(ctx context.Context, notify func()) error {
	done := make(chan struct{})
	routes := make(chan netlink.RouteUpdate, 1024)
	links := make(chan netlink.LinkUpdate, 64)
	addrs := make(chan netlink.AddrUpdate, 64)
	var drains []func()
	defer func() {
		close(done)
		// The library's readers block on a full channel: read them out.
		for _, drain := range drains {
			drain()
		}
	}()
	failed := make(chan error, 3)
	onError := func(err error) {
		select {
		case <-done: // closing the socket makes the reader fail; nothing was lost
		case failed <- err:
		default:
		}
	}
	ns := &k.ns
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{
		Namespace: ns, ErrorCallback: onError, ReceiveBufferSize: k.eventBuffer, ReceiveBufferForceSize: true,
	}); err != nil {
		return subscribeError{fmt.Errorf("subscribing to route events: %w", err)}
	}
	drains = append(drains, func() {
		for range routes {
		}
	})
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{
		Namespace: ns, ErrorCallback: onError, ListExisting: true, ReceiveBufferSize: eventBuffer / 8, ReceiveBufferForceSize: true,
	}); err != nil {
		return subscribeError{fmt.Errorf("subscribing to link events: %w", err)}
	}
	drains = append(drains, func() {
		for range links {
		}
	})
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{
		Namespace: ns, ErrorCallback: onError, ReceiveBufferSize: eventBuffer / 8, ReceiveBufferForceSize: true,
	}); err != nil {
		return subscribeError{fmt.Errorf("subscribing to address events: %w", err)}
	}
	drains = append(drains, func() {
		for range addrs {
		}
	})

	k.subscriptions.Add(1)
	ev := eventFilter{links: map[int]uint32{}}
	// Anything before the subscriptions was missed.
	notify()
	closed := func(what string) error {
		select {
		case err := <-failed:
			return fmt.Errorf("%s events: %w", what, err)
		default:
			return fmt.Errorf("%s events: subscription closed", what)
		}
	}
	dirty := false
	onRoute := func(u netlink.RouteUpdate, ok bool) error {
		if !ok {
			return closed("route")
		}
		dirty = ev.route(&u, k.want.Load()) || dirty
		return nil
	}
	onLink := func(u netlink.LinkUpdate, ok bool) error {
		if !ok {
			return closed("link")
		}
		dirty = ev.link(&u) || dirty
		return nil
	}
	onAddr := func(u netlink.AddrUpdate, ok bool) error {
		if !ok {
			return closed("address")
		}
		dirty = addrMatters(&u) || dirty
		return nil
	}
	for {
		var err error
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-routes:
			err = onRoute(u, ok)
		case u, ok := <-links:
			err = onLink(u, ok)
		case u, ok := <-addrs:
			err = onAddr(u, ok)
		}
		// Take what is queued already, so that a burst makes one call.
	queued:
		for err == nil {
			select {
			case u, ok := <-routes:
				err = onRoute(u, ok)
			case u, ok := <-links:
				err = onLink(u, ok)
			case u, ok := <-addrs:
				err = onAddr(u, ok)
			default:
				break queued
			}
		}
		if err != nil {
			return err
		}
		if dirty {
			notify()
			dirty = false
		}
	}
}

// eventFilter decides which events may make the kernel differ from the
// last Set.
type eventFilter struct {
	links map[int]uint32 // IFF_UP and IFF_RUNNING of each link, as last seen
}

// route reports whether a route event matters, given the last desired
// routes.
func (ev *eventFilter) route(u *netlink.RouteUpdate, want *desiredSet) bool {
	if u.Flags&unix.RTM_F_CLONED != 0 {
		return false
	}
	key, ok := kernelKey(&u.Route)
	if !ok {
		// The host's default route (it has no Dst): next hops may resolve
		// through it.
		return want != nil && u.Dst == nil && int(u.Protocol) != Protocol && u.Table == unix.RT_TABLE_MAIN && u.Route.Type == unix.RTN_UNICAST
	}
	var desired Route
	wanted := false
	if want != nil {
		var i int
		if i, wanted = want.owner[key]; wanted {
			desired = want.routes[i]
		}
	}
	if int(u.Protocol) != Protocol {
		// Another protocol's route can take or free a key we want; in the
		// main table it can change what the planner resolves through (a
		// connected route back after a link bounce, a new default gateway).
		return wanted || (want != nil && isUnicastRoute(&u.Route) && (key.Table == unix.RT_TABLE_MAIN || want.tables[key.Table] && isDeviceRoute(&u.Route)))
	}
	switch u.Type {
	case unix.RTM_NEWROUTE:
		// Our own write, seen back, changes nothing.
		got, ok := fromNetlink(&u.Route)
		return !ok || !wanted || got != desired
	case unix.RTM_DELROUTE:
		// Deleting a route nobody wants is what Set does.
		return wanted
	}
	return false
}

func isDeviceRoute(nr *netlink.Route) bool {
	return nr.Gw == nil && len(nr.MultiPath) == 0 && isUnicastRoute(nr)
}

// isUnicastRoute: a unicast route other than the link-local and multicast
// ones every link has.
func isUnicastRoute(nr *netlink.Route) bool {
	if nr.Type != unix.RTN_UNICAST {
		return false
	}
	if nr.Dst == nil {
		return true // a default route
	}
	return !nr.Dst.IP.IsLinkLocalUnicast() && !nr.Dst.IP.IsMulticast()
}

// link reports whether a link came, went, or went up or down.
func (ev *eventFilter) link(u *netlink.LinkUpdate) bool {
	index := int(u.Index)
	if u.Header.Type == unix.RTM_DELLINK {
		delete(ev.links, index)
		return true
	}
	flags := u.Flags & (unix.IFF_UP | unix.IFF_RUNNING)
	prev, known := ev.links[index]
	ev.links[index] = flags
	if u.Header.Flags&unix.NLM_F_MULTI != 0 {
		// The listing asked for on subscribing: the state to compare
		// later events with. Watch notified on subscribing already.
		return false
	}
	return !known || prev != flags
}

// addrMatters reports whether an address event may matter: a gateway can
// become reachable or unreachable. IPv6 link-local addresses come and go
// with duplicate address detection and link state, and no route of the
// agent depends on them.
func addrMatters(u *netlink.AddrUpdate) bool {
	return !u.LinkAddress.IP.IsLinkLocalUnicast() || u.LinkAddress.IP.To4() != nil
}
