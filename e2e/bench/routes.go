package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RouteWatch follows a namespace's kernel route events through a netlink
// subscription inside it. It counts every route event (any protocol), and
// keeps the set of present routes that match its filter with the time each
// event arrived, so that "the n-th route appeared at" can be read off.
type RouteWatch struct {
	ns    string
	match func(*netlink.Route) bool

	mu      sync.Mutex
	cond    *sync.Cond
	present map[netip.Prefix]bool
	events  int               // every RTM_NEWROUTE/RTM_DELROUTE seen
	dels    int               // of which RTM_DELROUTE
	last    time.Time         // arrival of the last matching event
	reached map[int]time.Time // when the count first became each wanted n
	lastAt  map[int]time.Time // when it last became n
	prev    int               // the count before the last event
	want    []int
	err     error
	closed  bool

	done chan struct{}
	once sync.Once
}

// WatchRoutes subscribes to route events in namespace ns. match selects the
// routes counted as present (nil: none); the caller's view starts empty:
// routes present before the subscription are not listed.
func WatchRoutes(ns string, match func(*netlink.Route) bool) (*RouteWatch, error) {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return nil, fmt.Errorf("opening namespace %s: %w", ns, err)
	}
	defer h.Close()
	w := &RouteWatch{ns: ns, match: match, present: map[netip.Prefix]bool{}, reached: map[int]time.Time{}, lastAt: map[int]time.Time{}, done: make(chan struct{})}
	w.cond = sync.NewCond(&w.mu)
	ch := make(chan netlink.RouteUpdate, 1<<16)
	err = netlink.RouteSubscribeWithOptions(ch, w.done, netlink.RouteSubscribeOptions{
		Namespace:              &h,
		ReceiveBufferSize:      128 << 20,
		ReceiveBufferForceSize: true,
		ErrorCallback: func(err error) {
			w.mu.Lock()
			if !w.closed && w.err == nil {
				w.err = err
			}
			w.cond.Broadcast()
			w.mu.Unlock()
		},
	})
	if err != nil {
		return nil, fmt.Errorf("subscribing to route events in %s: %w", ns, err)
	}
	go w.run(ch)
	return w, nil
}

func (w *RouteWatch) run(ch chan netlink.RouteUpdate) {
	for u := range ch {
		now := time.Now()
		w.mu.Lock()
		if u.Type == unix.RTM_NEWROUTE || u.Type == unix.RTM_DELROUTE {
			w.events++
		}
		if u.Type == unix.RTM_DELROUTE {
			w.dels++
		}
		if w.match != nil && u.Flags&unix.RTM_F_CLONED == 0 && w.match(&u.Route) && u.Dst != nil {
			if p, ok := netip.AddrFromSlice(u.Dst.IP); ok {
				ones, _ := u.Dst.Mask.Size()
				pfx := netip.PrefixFrom(p.Unmap(), ones)
				switch u.Type {
				case unix.RTM_NEWROUTE:
					w.present[pfx] = true
				case unix.RTM_DELROUTE:
					delete(w.present, pfx)
				}
				w.last = now
				w.note(now)
			}
		}
		w.cond.Broadcast()
		w.mu.Unlock()
	}
	w.mu.Lock()
	w.closed = true
	w.cond.Broadcast()
	w.mu.Unlock()
}

// note records when the count became a wanted one; w.mu is held.
func (w *RouteWatch) note(now time.Time) {
	n := len(w.present)
	for _, t := range w.want {
		if n != t {
			continue
		}
		if _, ok := w.reached[t]; !ok {
			w.reached[t] = now
		}
		if w.prev != t {
			w.lastAt[t] = now
		}
	}
	w.prev = n
}

// Seed adds the matching routes the kernel holds now (after the
// subscription, so none is missed) to the present ones.
func (w *RouteWatch) Seed() error {
	var found []netip.Prefix
	_, err := CountRoutes(w.ns, func(r *netlink.Route) bool {
		if w.match == nil || !w.match(r) || r.Dst == nil {
			return false
		}
		if a, ok := netip.AddrFromSlice(r.Dst.IP); ok {
			ones, _ := r.Dst.Mask.Size()
			found = append(found, netip.PrefixFrom(a.Unmap(), ones))
		}
		return true
	})
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range found {
		w.present[p] = true
	}
	w.note(time.Now())
	return nil
}

// Complete reports whether exactly n matching routes are present (n must
// have been passed to Expect), and since when.
func (w *RouteWatch) Complete(n int) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.present) != n {
		return time.Time{}, false
	}
	return w.lastAt[n], true
}

// Close ends the subscription; closing again does nothing.
func (w *RouteWatch) Close() {
	w.once.Do(func() {
		w.mu.Lock()
		w.closed = true
		w.mu.Unlock()
		close(w.done)
	})
}

// Events returns how many route events arrived so far.
func (w *RouteWatch) Events() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.events
}

// Deletes returns how many of the events were RTM_DELROUTE.
func (w *RouteWatch) Deletes() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dels
}

// Present returns how many matching routes are present.
func (w *RouteWatch) Present() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.present)
}

// Err returns the subscription's error (events lost), if any.
func (w *RouteWatch) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Expect asks the watch to note when exactly n matching routes are present;
// call it before the routes can arrive.
func (w *RouteWatch) Expect(n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.want = append(w.want, n)
	delete(w.reached, n)
	delete(w.lastAt, n)
	if len(w.present) == n {
		w.reached[n] = time.Now()
		w.lastAt[n] = w.reached[n]
	}
}

// ErrTimeout is Wait's error when the routes did not come in time.
var ErrTimeout = errors.New("timed out")

// Wait waits until n matching routes are present (n must have been passed
// to Expect) and returns when that first happened.
func (w *RouteWatch) Wait(ctx context.Context, n int, timeout time.Duration) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		w.mu.Lock()
		w.cond.Broadcast()
		w.mu.Unlock()
	})
	defer stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		if t, ok := w.reached[n]; ok {
			return t, nil
		}
		if w.err != nil {
			return time.Time{}, fmt.Errorf("route events: %w", w.err)
		}
		if w.closed {
			return time.Time{}, fmt.Errorf("route events: subscription closed")
		}
		if err := ctx.Err(); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return time.Time{}, fmt.Errorf("%w: %d routes present after %v, waiting for %d", ErrTimeout, len(w.present), timeout, n)
			}
			return time.Time{}, err
		}
		w.cond.Wait()
	}
}

// CountRoutes dumps namespace ns's routes (every table, IPv4) and counts
// those matching.
func CountRoutes(ns string, match func(*netlink.Route) bool) (int, error) {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return 0, err
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h, unix.NETLINK_ROUTE)
	if err != nil {
		return 0, err
	}
	defer nh.Close()
	n := 0
	err = nh.RouteListFilteredIter(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE, func(r netlink.Route) bool {
		if match(&r) {
			n++
		}
		return true
	})
	return n, err
}
