package tunnel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// link returns the netlink link Set creates for d: up, with d's MTU and
// MAC, never learning, with no default destination or multicast group, so
// that the device sends only where an FDB entry says.
func (d *device) link() netlink.Link {
	attrs := netlink.LinkAttrs{
		Name:         d.name,
		MTU:          d.mtu,
		HardwareAddr: net.HardwareAddr(d.mac[:]),
		Flags:        net.FlagUp,
	}
	switch d.protocol {
	case Geneve:
		// The kernel's geneve device has no FDB: in external (flow-based)
		// mode it sends each packet to the peer its route's encapsulation
		// names (`encap ip id VNI dst PEER`), and receives from any peer
		// on its port.
		return &netlink.Geneve{LinkAttrs: attrs, ID: d.vni, Dport: uint16(d.port), FlowBased: true}
	default:
		return &netlink.Vxlan{
			LinkAttrs:    attrs,
			VxlanId:      int(d.vni),
			VtepDevIndex: d.underlay,
			SrcAddr:      d.local.AsSlice(),
			Port:         d.port,
			Learning:     false,
		}
	}
}

// incompatibility returns why the kernel's device have cannot be made d
// in place, naming the first attribute that differs, or "" when it can.
// The attributes it checks are those the kernel does not let a device
// change (VNI, port, local address, lower link; for Geneve also the remote
// and the external mode), and those that would make a VXLAN device send
// where no FDB entry says (learning, a multicast group, external mode).
func (d *device) incompatibility(have netlink.Link) string {
	if have.Type() != string(d.protocol) {
		return fmt.Sprintf("it is a %s device, want %s", have.Type(), d.protocol)
	}
	switch h := have.(type) {
	case *netlink.Vxlan:
		local, _ := netip.AddrFromSlice(h.SrcAddr)
		group, _ := netip.AddrFromSlice(h.Group)
		switch {
		case h.VxlanId != int(d.vni):
			return fmt.Sprintf("VNI %d, want %d", h.VxlanId, d.vni)
		case h.Port != d.port:
			return fmt.Sprintf("UDP port %d, want %d", h.Port, d.port)
		case local.Unmap() != d.local:
			return fmt.Sprintf("local address %s, want %s", addrOrNone(local.Unmap()), d.local)
		case h.VtepDevIndex != d.underlay:
			return fmt.Sprintf("underlay link %s, want %s", linkOrNone(h.VtepDevIndex), linkOrNone(d.underlay))
		case h.FlowBased:
			return "external (flow-based) mode, want per-peer entries"
		case h.Learning:
			return "learning on, want off"
		case group.IsValid() && !group.IsUnspecified():
			return fmt.Sprintf("default destination %s, want none", group.Unmap())
		}
	case *netlink.Geneve:
		switch {
		case h.ID != d.vni:
			return fmt.Sprintf("VNI %d, want %d", h.ID, d.vni)
		case int(h.Dport) != d.port:
			return fmt.Sprintf("UDP port %d, want %d", h.Dport, d.port)
		case !h.FlowBased:
			return "not in external (flow-based) mode, want external"
		case len(h.Remote) > 0 && !net.IP(h.Remote).IsUnspecified():
			return fmt.Sprintf("remote %s, want none", net.IP(h.Remote))
		}
	default:
		return fmt.Sprintf("it is a %s device the netlink library cannot read", have.Type())
	}
	return ""
}

func addrOrNone(a netip.Addr) string {
	if !a.IsValid() {
		return "none"
	}
	return a.String()
}

func linkOrNone(index int) string {
	if index == 0 {
		return "none"
	}
	return fmt.Sprintf("if%d", index)
}

// repairs returns what differs between have and d that the kernel lets a
// device change in place.
func (d *device) repairs(have netlink.Link) (mac, mtu, up bool) {
	a := have.Attrs()
	mac = len(a.HardwareAddr) != 6 || hwAddr(a.HardwareAddr) != d.mac
	mtu = a.MTU != d.mtu
	up = a.Flags&net.FlagUp == 0
	return mac, mtu, up
}

// addDevice creates d, up, and returns it as the kernel reports it.
func (t *Tunnel) addDevice(d *device) (netlink.Link, error) {
	if err := t.h.LinkAdd(d.link()); err != nil {
		if notSupported(err) {
			return nil, supportError(d.protocol, err)
		}
		return nil, fmt.Errorf("creating %s device %s: %w", d.protocol, d.name, err)
	}
	t.stats.creates.Add(1)
	t.stats.writes.Add(1)
	l, err := t.h.LinkByName(d.name)
	if err != nil {
		return nil, fmt.Errorf("reading back %s after creating it: %w", d.name, err)
	}
	return l, nil
}

// deleteDevice deletes l; a device already gone is not an error.
func (t *Tunnel) deleteDevice(l netlink.Link) error {
	if err := t.h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("deleting %s: %w", l.Attrs().Name, err)
	}
	t.stats.deletes.Add(1)
	t.stats.writes.Add(1)
	return nil
}

// repairDevice changes have in place into d: MAC, MTU, up. A VXLAN device
// refuses a new MAC while it is up (EBUSY), so for that it goes down
// first; going down flushes its neighbour entries, which Set writes after.
func (t *Tunnel) repairDevice(d *device, have netlink.Link) (netlink.Link, error) {
	mac, mtu, up := d.repairs(have)
	if !mac && !mtu && !up {
		return have, nil
	}
	a := have.Attrs()
	var what []string
	write := func(err error) error {
		if err == nil {
			t.stats.writes.Add(1)
		}
		return err
	}
	if mac {
		what = append(what, fmt.Sprintf("MAC %s to %s", a.HardwareAddr, d.mac))
		err := t.h.LinkSetHardwareAddr(have, net.HardwareAddr(d.mac[:]))
		if errors.Is(err, unix.EBUSY) {
			if err = write(t.h.LinkSetDown(have)); err == nil {
				up = true
				err = t.h.LinkSetHardwareAddr(have, net.HardwareAddr(d.mac[:]))
			}
		}
		if err = write(err); err != nil {
			return nil, fmt.Errorf("setting the MAC of %s to %s: %w", d.name, d.mac, err)
		}
	}
	if mtu {
		what = append(what, fmt.Sprintf("MTU %d to %d", a.MTU, d.mtu))
		if err := write(t.h.LinkSetMTU(have, d.mtu)); err != nil {
			return nil, fmt.Errorf("setting the MTU of %s to %d: %w", d.name, d.mtu, err)
		}
	}
	if up {
		what = append(what, "up")
		if err := write(t.h.LinkSetUp(have)); err != nil {
			return nil, fmt.Errorf("setting %s up: %w", d.name, err)
		}
	}
	t.stats.repairs.Add(1)
	t.log.Info("tunnel device repaired", "device", d.name, "changed", strings.Join(what, ", "))
	l, err := t.h.LinkByIndex(a.Index)
	if err != nil {
		return nil, fmt.Errorf("reading back %s after changing it: %w", d.name, err)
	}
	return l, nil
}

// fdbEntry is the forwarding entry that sends frames for mac to the node
// at dst: `bridge fdb add <mac> dev <index> dst <dst> self permanent`.
func fdbEntry(index int, mac hwAddr, dst netip.Addr) netlink.Neigh {
	return netlink.Neigh{
		LinkIndex:    index,
		Family:       unix.AF_BRIDGE,
		State:        netlink.NUD_PERMANENT,
		Flags:        netlink.NTF_SELF,
		HardwareAddr: net.HardwareAddr(mac[:]),
		IP:           dst.AsSlice(),
	}
}

// neighEntry is the neighbour entry that resolves a peer's gateway:
// `ip neigh replace <gw> lladdr <mac> dev <index> nud permanent`.
func neighEntry(index int, gw netip.Addr, mac hwAddr) netlink.Neigh {
	return netlink.Neigh{
		LinkIndex:    index,
		Family:       familyOf(gw),
		State:        netlink.NUD_PERMANENT,
		HardwareAddr: net.HardwareAddr(mac[:]),
		IP:           gw.AsSlice(),
	}
}

func familyOf(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// setEntry adds or replaces an FDB or neighbour entry.
func (t *Tunnel) setEntry(n netlink.Neigh) error { return t.h.NeighSet(&n) }

// delEntry deletes an FDB or neighbour entry; one already gone is not an
// error.
func (t *Tunnel) delEntry(n netlink.Neigh) error {
	if err := t.h.NeighDel(&n); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ESRCH) {
		return err
	}
	return nil
}

// addAddr gives the device a host address. IPv6 skips duplicate address
// detection: nobody else on the tunnel can hold the address, and a
// tentative address is not used as a source.
func (t *Tunnel) addAddr(l netlink.Link, p netip.Prefix) error {
	a := &netlink.Addr{IPNet: ipNet(p)}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := t.h.AddrAdd(l, a); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}

func (t *Tunnel) delAddr(l netlink.Link, a netlink.Addr) error {
	if err := t.h.AddrDel(l, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return err
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// notSupported reports whether creating a link failed because the kernel
// has no driver for its kind: EOPNOTSUPP, with "Unknown device type" as
// the kernel's message when the netlink socket asks for messages.
func notSupported(err error) bool {
	if errors.Is(err, unix.EOPNOTSUPP) {
		return true
	}
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "operation not supported") || strings.Contains(msg, "unknown device type")
}

// supportError says that the kernel lacks protocol p, which module to
// load, and for Geneve that VXLAN is the way out.
func supportError(p Protocol, err error) error {
	hint := fmt.Sprintf("modprobe %s", p)
	if p != VXLAN {
		hint += ", or use --tunnel-protocol vxlan"
	}
	return &SupportError{Protocol: p, Err: err, hint: hint}
}

// SupportError is the error of creating a tunnel device of a protocol the
// kernel has no driver for.
type SupportError struct {
	Protocol Protocol
	Err      error // the kernel's answer
	hint     string
}

func (e *SupportError) Error() string {
	return fmt.Sprintf("tunnel protocol %s: this kernel has no %s support (module %q not loaded or not built; %s)", e.Protocol, e.Protocol, string(e.Protocol), e.hint)
}

func (e *SupportError) Unwrap() error { return e.Err }
