package snat

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// attachPoint is one hook of one device.
type attachPoint struct {
	ifindex int
	egress  bool
}

func (ap attachPoint) String() string {
	return ap.dir() + " hook of ifindex " + strconv.Itoa(ap.ifindex)
}

func (ap attachPoint) dir() string {
	if ap.egress {
		return "egress"
	}
	return "ingress"
}

func (ap attachPoint) pinName() string { return strconv.Itoa(ap.ifindex) + "_" + ap.dir() }

func points(ifindex int) [2]attachPoint {
	return [2]attachPoint{{ifindex, false}, {ifindex, true}}
}

// The tc fallback's filters are found again by name, at one priority
// and handle, so that replacing one is atomic and nobody else's is hit.
const (
	tcPriority = 0x5a5a
	tcHandle   = 0x5a5a
)

func tcFilterName(egress bool) string {
	if egress {
		return "route-agent-snat-egress"
	}
	return "route-agent-snat-ingress"
}

func (d *Datapath) prog(ap attachPoint) *ebpf.Program {
	if ap.egress {
		return d.objs.SnatEgress
	}
	return d.objs.SnatIngress
}

// Attach hooks the programs on the ingress and egress of the device
// ifindex, in the calling thread's network namespace. SetDevice must
// have given the device its address: an attached device without one
// would drop the pod traffic it should masquerade. Attaching again is
// harmless, and after a restart or upgrade it swaps the program in the
// existing TCX link or tc filter atomically: no packet goes out
// untranslated in between.
func (d *Datapath) Attach(ifindex int) error {
	if ifindex <= 0 {
		return fmt.Errorf("attaching snat: ifindex %d is not a device index", ifindex)
	}
	var dev snatDevice
	if err := d.objs.SnatDevices.Lookup(uint32(ifindex), &dev); errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("attaching snat to ifindex %d: the device has no masquerade address (call SetDevice first)", ifindex)
	} else if err != nil {
		return fmt.Errorf("attaching snat to ifindex %d: reading its device entry: %w", ifindex, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.o.Attach != AttachTC && !d.tc[ifindex] {
		err := d.attachTCX(ifindex)
		if err == nil || d.o.Attach == AttachTCX || !errors.Is(err, ebpf.ErrNotSupported) {
			return err
		}
		d.log.Info("kernel has no TCX, attaching snat with tc clsact filters", "ifindex", ifindex)
	}
	return d.attachTC(ifindex)
}

func (d *Datapath) attachTCX(ifindex int) error {
	for _, ap := range points(ifindex) {
		prog := d.prog(ap)
		if l, ok := d.links[ap]; ok {
			if runs(l, prog) {
				continue
			}
			if err := l.Update(prog); err != nil {
				return fmt.Errorf("replacing the program on the %s: %w", ap, err)
			}
			continue
		}
		// Reverse translation comes first on ingress, so that other
		// programs see pod addresses; masquerade comes last on egress.
		anchor, typ := link.Head(), ebpf.AttachTCXIngress
		if ap.egress {
			anchor, typ = link.Tail(), ebpf.AttachTCXEgress
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: typ, Anchor: anchor})
		if err != nil {
			return fmt.Errorf("attaching snat to the %s: %w", ap, err)
		}
		if d.o.PinDir != "" {
			path := filepath.Join(d.o.PinDir, "links", ap.pinName())
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				l.Close()
				return fmt.Errorf("creating the link pin directory: %w", err)
			}
			if err := l.Pin(path); err != nil {
				l.Close()
				return fmt.Errorf("pinning the link of the %s: %w", ap, err)
			}
		}
		d.links[ap] = l
	}
	return nil
}

// runs reports whether link l runs prog.
func runs(l link.Link, prog *ebpf.Program) bool {
	li, err := l.Info()
	if err != nil {
		return false
	}
	pi, err := prog.Info()
	if err != nil {
		return false
	}
	id, ok := pi.ID()
	return ok && li.Program == id
}

func (d *Datapath) attachTC(ifindex int) error {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return fmt.Errorf("attaching snat with tc: finding ifindex %d: %w", ifindex, err)
	}
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	// Adding rather than replacing keeps the filters of others on an
	// existing clsact.
	if err := netlink.QdiscAdd(qdisc); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("adding a clsact qdisc to %s: %w", l.Attrs().Name, err)
	}
	for _, ap := range points(ifindex) {
		if err := netlink.FilterReplace(tcFilter(ifindex, ap.egress, d.prog(ap).FD())); err != nil {
			return fmt.Errorf("attaching snat with tc to the %s: %w", ap, err)
		}
	}
	d.tc[ifindex] = true
	return nil
}

func tcFilter(ifindex int, egress bool, fd int) *netlink.BpfFilter {
	parent := uint32(netlink.HANDLE_MIN_INGRESS)
	if egress {
		parent = netlink.HANDLE_MIN_EGRESS
	}
	return &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    parent,
			Handle:    tcHandle,
			Priority:  tcPriority,
			Protocol:  unix.ETH_P_ALL,
		},
		Fd:           fd,
		Name:         tcFilterName(egress),
		DirectAction: true,
	}
}

// Detach unhooks the programs from the device ifindex, in the calling
// thread's network namespace. Detaching a device that is not attached
// is not an error.
func (d *Datapath) Detach(ifindex int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for _, ap := range points(ifindex) {
		l, ok := d.links[ap]
		if !ok {
			continue
		}
		if d.o.PinDir != "" {
			if err := l.Unpin(); err != nil {
				errs = append(errs, fmt.Errorf("unpinning the link of the %s: %w", ap, err))
				continue
			}
		}
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detaching from the %s: %w", ap, err))
			continue
		}
		delete(d.links, ap)
	}
	if d.tc[ifindex] {
		if err := deleteTCFilters(ifindex); err != nil {
			errs = append(errs, err)
		} else {
			delete(d.tc, ifindex)
		}
	}
	return errors.Join(errs...)
}

// Attached returns the indexes of the devices the programs are attached
// to, in increasing order.
func (d *Datapath) Attached() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	var idx []int
	for ap := range d.links {
		idx = append(idx, ap.ifindex)
	}
	for ifindex := range d.tc {
		idx = append(idx, ifindex)
	}
	slices.Sort(idx)
	return slices.Compact(idx)
}

// openPinnedLinks reopens the TCX links of an earlier run. A link whose
// device is gone is defunct: it is unpinned.
func (d *Datapath) openPinnedLinks() error {
	dir := filepath.Join(d.o.PinDir, "links")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing pinned links in %s: %w", dir, err)
	}
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		l, err := link.LoadPinnedLink(path, nil)
		if err != nil {
			return fmt.Errorf("opening pinned link %s: %w", path, err)
		}
		info, err := l.Info()
		var tcx *link.TCXInfo
		if err == nil {
			tcx = info.TCX()
		}
		if tcx == nil || tcx.Ifindex == 0 {
			d.log.Info("removing the pin of a link whose device is gone", "path", path)
			if err := l.Unpin(); err != nil {
				l.Close()
				return fmt.Errorf("unpinning defunct link %s: %w", path, err)
			}
			l.Close()
			continue
		}
		ap := attachPoint{ifindex: int(tcx.Ifindex), egress: ebpf.AttachType(tcx.AttachType) == ebpf.AttachTCXEgress}
		d.links[ap] = l
	}
	return nil
}

// findTCFilters learns which devices carry this datapath's tc filters,
// which outlive the agent without pins.
func (d *Datapath) findTCFilters() error {
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("listing devices to find snat tc filters: %w", err)
	}
	for _, l := range links {
		found, err := ourTCFilters(l)
		if err != nil {
			return err
		}
		if len(found) > 0 {
			d.tc[l.Attrs().Index] = true
		}
	}
	return nil
}

func ourTCFilters(l netlink.Link) ([]*netlink.BpfFilter, error) {
	var found []*netlink.BpfFilter
	for _, egress := range []bool{false, true} {
		parent := uint32(netlink.HANDLE_MIN_INGRESS)
		if egress {
			parent = netlink.HANDLE_MIN_EGRESS
		}
		filters, err := netlink.FilterList(l, parent)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			// No clsact on this device.
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("listing tc filters of %s: %w", l.Attrs().Name, err)
		}
		for _, f := range filters {
			if bf, ok := f.(*netlink.BpfFilter); ok && bf.Name == tcFilterName(egress) && bf.Priority == tcPriority {
				found = append(found, bf)
			}
		}
	}
	return found, nil
}

func deleteTCFilters(ifindex int) error {
	l, err := netlink.LinkByIndex(ifindex)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("finding ifindex %d to remove snat tc filters: %w", ifindex, err)
	}
	found, err := ourTCFilters(l)
	if err != nil {
		return err
	}
	for _, f := range found {
		if err := netlink.FilterDel(f); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("removing snat tc filter from %s: %w", l.Attrs().Name, err)
		}
	}
	return nil
}

func removeTCFilters() error {
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("listing devices to remove snat tc filters: %w", err)
	}
	var errs []error
	for _, l := range links {
		if err := deleteTCFilters(l.Attrs().Index); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
