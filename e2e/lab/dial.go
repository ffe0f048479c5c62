package lab

import (
	"context"
	"fmt"
	"net"
	"runtime"

	"github.com/vishvananda/netns"
)

// nsDialer dials from inside the network namespace ns. A socket belongs to
// the namespace of the thread that created it, so each dial runs on a
// locked OS thread switched into ns; the thread is never unlocked and so
// dies with the goroutine instead of returning to the pool in the wrong
// namespace.
func nsDialer(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			target, err := netns.GetFromName(ns)
			if err != nil {
				ch <- result{err: fmt.Errorf("opening namespace %s: %w", ns, err)}
				return
			}
			defer target.Close()
			if err := netns.Set(target); err != nil {
				ch <- result{err: fmt.Errorf("entering namespace %s: %w", ns, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}
