package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Tunnel makes the kernel hold the desired tunnel device and its peers'
// entries. It writes only the devices named ra_vxlan and ra_geneve, their
// addresses and the entries on them.
type Tunnel struct {
	log *slog.Logger
	ns  netns.NsHandle // our own duplicate, so Watch can subscribe after the caller closed theirs
	h   *netlink.Handle

	mu    sync.Mutex // serialises Set and Cleanup
	index int        // the device's index after the last Set, 0 for none

	want  atomic.Pointer[wanted] // what the last Set wanted, for Watch to filter events
	stats struct {
		creates, recreates, repairs, deletes atomic.Uint64
		entrySets, entryDeletes              atomic.Uint64
		addrAdds, addrDeletes                atomic.Uint64
		writes, errors                       atomic.Uint64
	}
}

// Options configure a Tunnel.
type Options struct {
	Logger *slog.Logger
	// NetNS is the network namespace to work in; the zero value and
	// netns.None() mean the current one. The Tunnel keeps its own
	// duplicate of the handle.
	NetNS netns.NsHandle
}

// Result is what Set reached.
type Result struct {
	// Index and Name are the device's, for the routes through it
	// (`podCIDR via <gateway> dev <Index> onlink`); 0 and "" when no device
	// is desired. The index changes when Set recreates the device, which
	// takes the routes through the old one with it.
	Index int
	Name  string
	// MTU is the device's: the MTU for the pods' interfaces.
	MTU int
	// Writes counts the netlink writes this Set made; 0 when the kernel
	// already held the desired state.
	Writes int
}

// Stats are counters since the Tunnel was made, for metrics and tests.
type Stats struct {
	Creates   uint64 // devices created, recreations included
	Recreates uint64 // devices deleted and created again because an attribute the kernel cannot change differed
	Repairs   uint64 // devices changed in place (MAC, MTU, up)
	Deletes   uint64 // devices deleted, recreations included
	// EntrySets and EntryDeletes count the FDB and neighbour entries
	// written (added or replaced) and deleted.
	EntrySets    uint64
	EntryDeletes uint64
	AddrAdds     uint64
	AddrDeletes  uint64
	Writes       uint64 // netlink writes that succeeded, of every kind
	Errors       uint64 // failed writes and dumps
}

// New opens the netlink socket Set uses. Close releases it.
func New(opts Options) (*Tunnel, error) {
	t := &Tunnel{log: opts.Logger, ns: netns.None()}
	if t.log == nil {
		t.log = slog.Default()
	}
	if opts.NetNS != 0 && opts.NetNS.IsOpen() {
		fd, err := unix.FcntlInt(uintptr(opts.NetNS), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("duplicating the network namespace handle: %w", err)
		}
		t.ns = netns.NsHandle(fd)
	}
	var err error
	if t.h, err = netlink.NewHandleAt(t.ns, unix.NETLINK_ROUTE); err != nil {
		t.ns.Close()
		return nil, fmt.Errorf("opening a netlink handle: %w", err)
	}
	return t, nil
}

// Close releases the socket. Watch must have returned.
func (t *Tunnel) Close() {
	t.h.Close()
	t.ns.Close()
}

// Stats returns the counters.
func (t *Tunnel) Stats() Stats {
	s := &t.stats
	return Stats{
		Creates: s.creates.Load(), Recreates: s.recreates.Load(), Repairs: s.repairs.Load(), Deletes: s.deletes.Load(),
		EntrySets: s.entrySets.Load(), EntryDeletes: s.entryDeletes.Load(),
		AddrAdds: s.addrAdds.Load(), AddrDeletes: s.addrDeletes.Load(),
		Writes: s.writes.Load(), Errors: s.errors.Load(),
	}
}

// Set makes the kernel hold exactly the desired device and entries.
//
// The device is created once, and adopted without a write when it already
// matches (after an agent restart). What the kernel lets a device change
// (MAC, MTU, up) is changed in place; when an attribute it does not
// (protocol, VNI, port, local address, underlay link) or one that would
// make it flood or learn differs, Set logs the first difference and
// recreates the device, which gets a new index. The device of the other
// protocol is deleted once the desired one exists. With d.Device nil, Set
// deletes both ra_vxlan and ra_geneve.
//
// On the device Set keeps exactly the desired addresses (IPv6 link-local
// aside), one permanent FDB entry per peer MAC and one permanent neighbour
// entry per peer gateway, deleting every other FDB entry and every other
// neighbour entry that holds a MAC. Forwarding entries are written before
// neighbour entries, so a packet never has a MAC the device cannot send
// to; deletions go the other way round.
//
// Calling Set again with the same Desired writes nothing. Set keeps going
// after a failure and returns the failures joined; an invalid peer is
// skipped with an error, the others are still written. A Geneve device is
// flow-based (external) and has no FDB: it gets the neighbour entries, and
// the routes through it name their peer with an encapsulation
// (routing.Encap). A kernel without the driver gives a *SupportError.
func (t *Tunnel) Set(ctx context.Context, d Desired) (Result, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	before := t.stats.writes.Load()
	res, err := t.set(d)
	res.Writes = int(t.stats.writes.Load() - before)
	level := slog.LevelDebug
	if res.Writes > 0 {
		level = slog.LevelInfo
	}
	if err != nil {
		level = slog.LevelWarn
	}
	t.log.Log(ctx, level, "tunnel reconciled", "device", res.Name, "index", res.Index, "mtu", res.MTU,
		"peers", len(d.Peers), "writes", res.Writes, "error", err)
	return res, err
}

func (t *Tunnel) set(d Desired) (Result, error) {
	if d.Device == nil {
		t.publish(&wanted{})
		err := t.deleteDevices("")
		t.index = 0
		return Result{}, t.count(err)
	}
	dev, err := newDevice(*d.Device)
	if err != nil {
		return Result{}, err
	}
	ul, err := t.resolve(dev)
	if err != nil {
		return Result{}, t.count(err)
	}
	var errs []error
	ents, perrs := planEntries(dev, d.Peers)
	errs = append(errs, perrs...)
	if dev.protocol == Geneve {
		// No forwarding database: each route names its peer (Encap).
		ents.fdb = map[hwAddr]netip.Addr{}
	}
	w := &wanted{device: dev, underlayMTU: ul.Attrs().MTU, followUnderlay: d.Device.MTU == 0, fdb: ents.fdb, neigh: ents.neigh}
	// Published before writing: Watch then takes our own writes, seen
	// back, for what they are.
	t.publish(w)

	link, err := t.ensureDevice(dev)
	if err != nil {
		// The other protocol's device, if any, stays until this one
		// exists: the routes through it may still carry traffic.
		return Result{}, errors.Join(append(errs, t.count(err))...)
	}
	a := link.Attrs()
	res := Result{Index: a.Index, Name: a.Name, MTU: a.MTU}
	w2 := *w
	w2.index = a.Index
	t.publish(&w2)
	t.index = a.Index
	errs = append(errs, t.count(t.deleteDevices(dev.name)))

	errs = append(errs, t.ensureAddrs(link, dev.addrs)...)
	// FDB entries first, then neighbour entries; deletes the other way
	// round: a neighbour entry never names a MAC with no destination.
	var fdbSet, fdbDel []netlink.Neigh
	if dev.protocol == VXLAN {
		fdbSet, fdbDel, err = t.planFDB(a.Index, ents.fdb, dev.local.Is6())
		errs = append(errs, err)
	}
	errs = append(errs, t.writeEntries("adding", fdbSet, t.setEntry)...)
	nSet, nDel, err := t.planNeigh(a.Index, ents.neigh)
	errs = append(errs, err)
	errs = append(errs, t.writeEntries("adding", nSet, t.setEntry)...)
	errs = append(errs, t.writeEntries("deleting", nDel, t.delEntry)...)
	errs = append(errs, t.writeEntries("deleting", fdbDel, t.delEntry)...)
	return res, errors.Join(errs...)
}

// count counts err, when not nil, and returns it.
func (t *Tunnel) count(err error) error {
	if err != nil {
		t.stats.errors.Add(1)
	}
	return err
}

// resolve finds d's underlay link (the one holding d.local when d names
// none) and, for an MTU of 0, derives the MTU from it.
func (t *Tunnel) resolve(d *device) (netlink.Link, error) {
	if d.underlay == 0 {
		var addrs []netlink.Addr
		// Pods come and go with addresses of their own; a dump they
		// interrupt is done again.
		err := retryInterrupted(func() (err error) {
			addrs, err = t.h.AddrList(nil, familyOf(d.local))
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("looking for the link holding %s: %w", d.local, err)
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == d.local {
				d.underlay = a.LinkIndex
				break
			}
		}
		if d.underlay == 0 {
			return nil, fmt.Errorf("tunnel local address %s: no link holds it", d.local)
		}
	}
	ul, err := t.h.LinkByIndex(d.underlay)
	if err != nil {
		return nil, fmt.Errorf("tunnel underlay link %d: %w", d.underlay, err)
	}
	if d.mtu == 0 {
		d.mtu = ul.Attrs().MTU - Overhead(d.protocol, d.local.Is6())
		if d.mtu < 68 {
			return nil, fmt.Errorf("tunnel MTU: the underlay link %s has MTU %d, too small for %d bytes of %s overhead", ul.Attrs().Name, ul.Attrs().MTU, Overhead(d.protocol, d.local.Is6()), d.protocol)
		}
	}
	return ul, nil
}

// ensureDevice makes the kernel's device d: created, adopted as it is,
// repaired in place or, as a last resort, recreated.
func (t *Tunnel) ensureDevice(d *device) (netlink.Link, error) {
	have, err := t.h.LinkByName(d.name)
	if err != nil {
		if _, missing := errors.AsType[netlink.LinkNotFoundError](err); !missing {
			return nil, fmt.Errorf("looking for %s: %w", d.name, err)
		}
		l, err := t.addDevice(d)
		if err == nil {
			t.log.Info("tunnel device created", "device", d.name, "index", l.Attrs().Index, "vni", d.vni, "port", d.port, "local", d.local, "mtu", d.mtu, "mac", d.mac)
		}
		return l, err
	}
	if why := d.incompatibility(have); why != "" {
		t.log.Warn("tunnel device differs in what cannot be changed: recreating it", "device", d.name, "index", have.Attrs().Index, "difference", why)
		if err := t.deleteDevice(have); err != nil {
			return nil, fmt.Errorf("recreating %s (%s): %w", d.name, why, err)
		}
		t.stats.recreates.Add(1)
		l, err := t.addDevice(d)
		if err != nil {
			return nil, fmt.Errorf("recreating %s (%s): %w", d.name, why, err)
		}
		t.log.Info("tunnel device recreated", "device", d.name, "index", l.Attrs().Index, "was", have.Attrs().Index)
		return l, nil
	}
	if t.index != have.Attrs().Index {
		t.log.Info("tunnel device adopted", "device", d.name, "index", have.Attrs().Index)
	}
	return t.repairDevice(d, have)
}

// deleteDevices deletes ra_vxlan and ra_geneve, but keep.
func (t *Tunnel) deleteDevices(keep string) error {
	var errs []error
	for _, name := range []string{VXLANDevice, GeneveDevice} {
		if name == keep {
			continue
		}
		l, err := t.h.LinkByName(name)
		if err != nil {
			if _, missing := errors.AsType[netlink.LinkNotFoundError](err); !missing {
				errs = append(errs, fmt.Errorf("looking for %s: %w", name, err))
			}
			continue
		}
		if err := t.deleteDevice(l); err != nil {
			errs = append(errs, err)
			continue
		}
		t.log.Info("tunnel device deleted", "device", name, "index", l.Attrs().Index)
	}
	return errors.Join(errs...)
}

func (t *Tunnel) ensureAddrs(l netlink.Link, want []netip.Prefix) []error {
	var have []netlink.Addr
	err := retryInterrupted(func() (err error) {
		have, err = t.h.AddrList(l, netlink.FAMILY_ALL)
		return err
	})
	if err != nil {
		return []error{t.count(fmt.Errorf("listing the addresses of %s: %w", l.Attrs().Name, err))}
	}
	add, del := diffAddrs(want, have)
	var errs []error
	for _, p := range add {
		if err := t.addAddr(l, p); err != nil {
			errs = append(errs, t.count(fmt.Errorf("adding %s to %s: %w", p, l.Attrs().Name, err)))
			continue
		}
		t.stats.writes.Add(1)
		t.stats.addrAdds.Add(1)
	}
	for _, a := range del {
		if err := t.delAddr(l, a); err != nil {
			errs = append(errs, t.count(fmt.Errorf("deleting %s from %s: %w", a.IPNet, l.Attrs().Name, err)))
			continue
		}
		t.stats.writes.Add(1)
		t.stats.addrDeletes.Add(1)
	}
	return errs
}

func (t *Tunnel) planFDB(index int, want map[hwAddr]netip.Addr, underlay6 bool) (set, del []netlink.Neigh, err error) {
	var have []netlink.Neigh
	err = retryInterrupted(func() (err error) {
		have, err = t.h.NeighList(index, unix.AF_BRIDGE)
		return err
	})
	if err != nil {
		return nil, nil, t.count(fmt.Errorf("listing the FDB of if%d: %w", index, err))
	}
	set, del = diffFDB(index, want, have, underlay6)
	return set, del, nil
}

func (t *Tunnel) planNeigh(index int, want map[netip.Addr]hwAddr) (set, del []netlink.Neigh, err error) {
	var have []netlink.Neigh
	for _, f := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		var list []netlink.Neigh
		err = retryInterrupted(func() (err error) {
			list, err = t.h.NeighList(index, f)
			return err
		})
		if err != nil {
			return nil, nil, t.count(fmt.Errorf("listing the neighbour entries of if%d: %w", index, err))
		}
		have = append(have, list...)
	}
	set, del = diffNeigh(index, want, have)
	return set, del, nil
}

func (t *Tunnel) writeEntries(verb string, list []netlink.Neigh, write func(netlink.Neigh) error) []error {
	var errs []error
	for _, n := range list {
		if err := write(n); err != nil {
			errs = append(errs, t.count(fmt.Errorf("%s %s: %w", verb, describeEntry(n), err)))
			continue
		}
		t.stats.writes.Add(1)
		if verb == "adding" {
			t.stats.entrySets.Add(1)
		} else {
			t.stats.entryDeletes.Add(1)
		}
	}
	return errs
}

// describeEntry formats an entry as `bridge fdb` or `ip neigh` would.
func describeEntry(n netlink.Neigh) string {
	if n.Family == unix.AF_BRIDGE {
		return fmt.Sprintf("FDB entry %s dev if%d dst %s", n.HardwareAddr, n.LinkIndex, n.IP)
	}
	return fmt.Sprintf("neighbour entry %s lladdr %s dev if%d", n.IP, n.HardwareAddr, n.LinkIndex)
}

func retryInterrupted(dump func() error) error {
	var err error
	for range 3 {
		if err = dump(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return err
		}
	}
	return err
}

// Cleanup deletes ra_vxlan and ra_geneve with everything on them, for
// uninstalling the agent.
func (t *Tunnel) Cleanup(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	t.publish(&wanted{})
	t.index = 0
	return t.count(t.deleteDevices(""))
}

func (t *Tunnel) publish(w *wanted) { t.want.Store(w) }
