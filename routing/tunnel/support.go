package tunnel

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// CheckSupport reports whether the kernel can create a tunnel device of
// protocol p, so that the agent can fail at start-up rather than at its
// first Set. It creates a device in a new, empty network namespace of its
// own, which goes away with everything in it when CheckSupport returns; the
// caller's namespace and its devices are never touched. Creating the device
// loads the protocol's module when the kernel can. A kernel without the
// driver gives a *SupportError that names the module; CheckSupport needs
// CAP_SYS_ADMIN (to make the namespace) and CAP_NET_ADMIN.
func CheckSupport(p Protocol) error {
	if p.DeviceName() == "" {
		return fmt.Errorf("tunnel protocol %q: unknown (want %q or %q)", p, VXLAN, Geneve)
	}
	ns, err := newNamespace()
	if err != nil {
		return fmt.Errorf("tunnel protocol %s: checking kernel support: %w", p, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("tunnel protocol %s: checking kernel support: %w", p, err)
	}
	defer h.Close()
	d, err := newDevice(DeviceSpec{Protocol: p, LocalIP: netip.MustParseAddr("192.0.2.1")})
	if err != nil {
		return err
	}
	d.mtu = 1450
	l := d.link()
	l.Attrs().Flags = 0
	if err := h.LinkAdd(l); err != nil {
		if notSupported(err) {
			return supportError(p, err)
		}
		return fmt.Errorf("tunnel protocol %s: creating a test device: %w", p, err)
	}
	// Closing the last handle on the namespace deletes it with the device.
	return nil
}

// newNamespace makes a new network namespace and returns a handle on it,
// leaving the calling goroutine's thread in the namespace it was in.
func newNamespace() (netns.NsHandle, error) {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return netns.None(), fmt.Errorf("getting the current network namespace: %w", err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if errSet := netns.Set(orig); errSet != nil {
		// The thread stays locked, so Go retires it rather than run other
		// goroutines in the wrong namespace.
		if err == nil {
			ns.Close()
		}
		return netns.None(), errors.Join(err, fmt.Errorf("returning to the original network namespace: %w", errSet))
	}
	runtime.UnlockOSThread()
	if err != nil {
		return netns.None(), fmt.Errorf("making a network namespace: %w", err)
	}
	return ns, nil
}
