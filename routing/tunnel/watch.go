package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// wanted is what the last Set wanted, for Watch to tell events that undo
// it from our own writes seen back.
type wanted struct {
	device *device // nil: no device
	index  int     // the device's index, once known
	// underlayMTU is the underlay link's MTU when Set last looked;
	// followUnderlay says the device's MTU derives from it.
	underlayMTU    int
	followUnderlay bool
	fdb            map[hwAddr]netip.Addr
	neigh          map[netip.Addr]hwAddr
}

const (
	resubscribeMin = 100 * time.Millisecond
	resubscribeMax = 10 * time.Second
	eventBuffer    = 1 << 20
)

// Watch subscribes to the kernel's link and neighbour events and calls
// notify when one may make the kernel differ from the last Set: the tunnel
// device deleted, going down or changing MTU or MAC, a tunnel device of
// ours appearing when none or another is desired, one of our FDB or
// neighbour entries deleted or changed, a foreign entry that Set would
// remove added on the device, and the underlay link deleted or (when the
// tunnel's MTU follows it) changing MTU. Our own writes seen back do not
// count.
//
// notify must not block; Watch calls it once per burst of events, and once
// after subscribing, for what happened before. When a subscription fails
// (ENOBUFS: the kernel dropped events) Watch subscribes again and
// notifies. It returns nil when ctx ends, or the error of its first
// subscription.
func (t *Tunnel) Watch(ctx context.Context, notify func()) error {
	delay := resubscribeMin
	for first := true; ; first = false {
		began := time.Now()
		err := t.watch(ctx, notify)
		if ctx.Err() != nil {
			return nil
		}
		if _, ok := errors.AsType[subscribeError](err); ok && first {
			return err
		}
		if time.Since(began) > time.Minute {
			delay = resubscribeMin
		}
		t.log.Warn("netlink events lost, subscribing again", "error", err, "in", delay)
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

func (t *Tunnel) watch(ctx context.Context, notify func()) error {
	done := make(chan struct{})
	links := make(chan netlink.LinkUpdate, 64)
	neighs := make(chan netlink.NeighUpdate, 256)
	var drains []func()
	defer func() {
		close(done)
		// The library's readers block on a full channel: read them out.
		for _, drain := range drains {
			drain()
		}
	}()
	failed := make(chan error, 2)
	onError := func(err error) {
		select {
		case <-done: // closing the socket makes the reader fail; nothing was lost
		case failed <- err:
		default:
		}
	}
	ns := &t.ns
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{
		Namespace: ns, ErrorCallback: onError, ReceiveBufferSize: eventBuffer, ReceiveBufferForceSize: true,
	}); err != nil {
		return subscribeError{fmt.Errorf("subscribing to link events: %w", err)}
	}
	drains = append(drains, func() {
		for range links {
		}
	})
	if err := netlink.NeighSubscribeWithOptions(neighs, done, netlink.NeighSubscribeOptions{
		Namespace: ns, ErrorCallback: onError, ReceiveBufferSize: eventBuffer, ReceiveBufferForceSize: true,
	}); err != nil {
		return subscribeError{fmt.Errorf("subscribing to neighbour events: %w", err)}
	}
	drains = append(drains, func() {
		for range neighs {
		}
	})

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
	onLink := func(u netlink.LinkUpdate, ok bool) error {
		if !ok {
			return closed("link")
		}
		dirty = linkMatters(&u, t.want.Load()) || dirty
		return nil
	}
	onNeigh := func(u netlink.NeighUpdate, ok bool) error {
		if !ok {
			return closed("neighbour")
		}
		dirty = neighMatters(&u, t.want.Load()) || dirty
		return nil
	}
	for {
		var err error
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-links:
			err = onLink(u, ok)
		case u, ok := <-neighs:
			err = onNeigh(u, ok)
		}
		// Take what is queued already, so that a burst makes one call.
	queued:
		for err == nil {
			select {
			case u, ok := <-links:
				err = onLink(u, ok)
			case u, ok := <-neighs:
				err = onNeigh(u, ok)
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

func isOurs(name string) bool { return name == VXLANDevice || name == GeneveDevice }

// linkMatters reports whether a link event may undo the last Set, w.
func linkMatters(u *netlink.LinkUpdate, w *wanted) bool {
	if w == nil {
		return false
	}
	a := u.Attrs()
	index := int(u.Index)
	deleted := u.Header.Type == unix.RTM_DELLINK
	d := w.device
	if d == nil {
		// No device desired: one of ours appearing is to be deleted.
		return isOurs(a.Name) && !deleted
	}
	if index == d.underlay {
		return deleted || (w.followUnderlay && a.MTU != w.underlayMTU)
	}
	if !isOurs(a.Name) && index != w.index {
		return false
	}
	if deleted {
		// The other protocol's device going is what Set does.
		return index == w.index || a.Name == d.name
	}
	if a.Name != d.name || (w.index != 0 && index != w.index) {
		// The other protocol's device, or ours made again by someone else.
		return true
	}
	return a.Flags&net.FlagUp == 0 || a.MTU != d.mtu || len(a.HardwareAddr) != 6 || hwAddr(a.HardwareAddr) != d.mac
}

// neighMatters reports whether a neighbour or FDB event on the device may
// undo the last Set, w.
func neighMatters(u *netlink.NeighUpdate, w *wanted) bool {
	if w == nil || w.device == nil || w.index == 0 || u.LinkIndex != w.index {
		return false
	}
	deleted := u.Type == unix.RTM_DELNEIGH
	if u.Family == unix.AF_BRIDGE {
		if len(u.HardwareAddr) != 6 {
			return false
		}
		dst, ok := w.fdb[hwAddr(u.HardwareAddr)]
		got := entryAddr(u.IP, w.device.local.Is6())
		if deleted {
			return ok && got == dst
		}
		return !ok || got != dst || u.State&netlink.NUD_PERMANENT == 0
	}
	ip, valid := netip.AddrFromSlice(u.IP)
	if !valid {
		return false
	}
	if u.Family == netlink.FAMILY_V4 {
		ip = ip.Unmap()
	}
	mac, ok := w.neigh[ip]
	switch {
	case deleted:
		return ok
	case ok:
		return u.State&netlink.NUD_PERMANENT == 0 || len(u.HardwareAddr) != 6 || hwAddr(u.HardwareAddr) != mac
	}
	// Set deletes another entry only when it holds a MAC.
	return holdsMAC(u.State)
}
