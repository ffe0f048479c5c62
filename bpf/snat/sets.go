package snat

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// addr16 is the map form of an address: IPv4 is IPv4-mapped.
func addr16(a netip.Addr) [16]byte { return a.As16() }

func addrOf(b [16]byte) netip.Addr { return netip.AddrFrom16(b).Unmap() }

func lpmKeyOf(p netip.Prefix) snatLpmKey {
	var k snatLpmKey
	k.Prefixlen = uint32(p.Bits())
	if p.Addr().Is4() {
		k.Prefixlen += 96
	}
	k.Addr.B = addr16(p.Addr())
	return k
}

func prefixOf(k snatLpmKey) netip.Prefix {
	a := netip.AddrFrom16(k.Addr.B)
	bits := int(k.Prefixlen)
	if a.Is4In6() && bits >= 96 {
		return netip.PrefixFrom(a.Unmap(), bits-96)
	}
	return netip.PrefixFrom(a, bits)
}

// checkPrefixes validates a set given to field, as ip-masq-agent does:
// a prefix must be aligned to its length.
func checkPrefixes(field string, ps []netip.Prefix, max int) (map[snatLpmKey]netip.Prefix, error) {
	want := make(map[snatLpmKey]netip.Prefix, len(ps))
	for i, p := range ps {
		switch {
		case !p.IsValid():
			return nil, fmt.Errorf("%s[%d]: %q is not a valid prefix", field, i, p)
		case p.Addr().Is4In6():
			return nil, fmt.Errorf("%s[%d]: %s is IPv4-mapped IPv6; give the IPv4 prefix", field, i, p)
		case p != p.Masked():
			return nil, fmt.Errorf("%s[%d]: %s is not aligned to a CIDR block (%s is)", field, i, p, p.Masked())
		}
		want[lpmKeyOf(p)] = p
	}
	if len(want) > max {
		return nil, fmt.Errorf("%s: %d prefixes do not fit the map of %d entries", field, len(want), max)
	}
	return want, nil
}

// setPrefixes makes the LPM map m hold exactly ps, touching only what
// differs. Adds go before deletes so that a prefix moving to a shorter
// or longer one is never missing in between. It keeps going after a
// failure and returns what it added and removed.
func setPrefixes(field string, m *ebpf.Map, max int, ps []netip.Prefix) (added, removed []netip.Prefix, err error) {
	want, err := checkPrefixes(field, ps, max)
	if err != nil {
		return nil, nil, err
	}
	have := map[snatLpmKey]bool{}
	var k snatLpmKey
	var v uint8
	it := m.Iterate()
	for it.Next(&k, &v) {
		have[k] = true
	}
	if err := it.Err(); err != nil {
		return nil, nil, fmt.Errorf("%s: reading the current set: %w", field, err)
	}
	var errs []error
	one := uint8(1)
	for k, p := range want {
		if have[k] {
			continue
		}
		if err := m.Put(k, one); err != nil {
			errs = append(errs, fmt.Errorf("%s: adding %s: %w", field, p, err))
			continue
		}
		added = append(added, p)
	}
	for k := range have {
		if _, ok := want[k]; ok {
			continue
		}
		p := prefixOf(k)
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("%s: removing %s: %w", field, p, err))
			continue
		}
		removed = append(removed, p)
	}
	return added, removed, errors.Join(errs...)
}

// SetRoutable sets the destinations that are never masqueraded: what
// the node can route to with pod addresses. Flows already translated
// towards a destination that becomes routable are dropped, so that
// their next packet leaves with the pod's address as the set now says.
func (d *Datapath) SetRoutable(prefixes []netip.Prefix) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	added, _, err := setPrefixes("routable", d.objs.SnatRoutable, d.o.RoutableEntries, prefixes)
	if len(added) > 0 {
		in := newPrefixSet(added)
		_, derr := d.dropFlows(func(f flow) bool { return in.contains(f.remote) })
		err = errors.Join(err, derr)
	}
	return err
}

// SetNonMasqSources sets the pod sources that are never masqueraded.
// Their existing translations are dropped.
func (d *Datapath) SetNonMasqSources(prefixes []netip.Prefix) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	added, _, err := setPrefixes("nonMasqueradeSrcCIDRs", d.objs.SnatNonmasq, d.o.NonMasqEntries, prefixes)
	if len(added) > 0 {
		in := newPrefixSet(added)
		_, derr := d.dropFlows(func(f flow) bool { return in.contains(f.pod) })
		err = errors.Join(err, derr)
	}
	return err
}

// SetLocalPods sets the pod CIDRs of this node: only their traffic is
// masqueraded. Translations of pods outside the new set are dropped.
func (d *Datapath) SetLocalPods(prefixes []netip.Prefix) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, removed, err := setPrefixes("localPodCIDRs", d.objs.SnatLocalPods, d.o.LocalPodEntries, prefixes)
	if len(removed) > 0 {
		in := newPrefixSet(removed)
		_, derr := d.dropFlows(func(f flow) bool { return in.contains(f.pod) })
		err = errors.Join(err, derr)
	}
	return err
}

// SetPortRange sets the NAT source ports, both ends included. The agent
// reserves them from the host (ip_local_reserved_ports) so that no host
// socket shares them. Translations on ports outside the new range are
// dropped: their replies would no longer be recognised.
func (d *Datapath) SetPortRange(min, max uint16) error {
	if min == 0 || min > max {
		return fmt.Errorf("snat port range %d-%d: want 1 <= min <= max", min, max)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var cur snatConfig
	if err := d.objs.SnatConfig.Lookup(uint32(0), &cur); err != nil {
		return fmt.Errorf("reading the snat port range: %w", err)
	}
	if cur.PortMin == min && cur.PortMax == max {
		return nil
	}
	if err := d.objs.SnatConfig.Put(uint32(0), snatConfig{PortMin: min, PortMax: max}); err != nil {
		return fmt.Errorf("setting the snat port range %d-%d: %w", min, max, err)
	}
	_, err := d.dropFlows(func(f flow) bool { return f.nat.Port() < min || f.nat.Port() > max })
	return err
}

// SetDevice gives the masquerade device ifindex the address its
// translated packets leave with. Changing it drops the flows translated
// to the old address, unless another device still uses it.
func (d *Datapath) SetDevice(ifindex int, addr netip.Addr) error {
	switch {
	case ifindex <= 0:
		return fmt.Errorf("snat device: ifindex %d is not a device index", ifindex)
	case !addr.IsValid():
		return fmt.Errorf("snat device ifindex %d: address is missing", ifindex)
	case addr.Is4In6():
		return fmt.Errorf("snat device ifindex %d: address %s is IPv4-mapped IPv6; give the IPv4 address", ifindex, addr)
	case addr.Is6():
		return fmt.Errorf("snat device ifindex %d: address %s: IPv6 masquerade is not implemented", ifindex, addr)
	case addr.IsUnspecified() || addr.IsMulticast():
		return fmt.Errorf("snat device ifindex %d: address %s cannot be a source address", ifindex, addr)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var cur snatDevice
	err := d.objs.SnatDevices.Lookup(uint32(ifindex), &cur)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("reading snat device ifindex %d: %w", ifindex, err)
	}
	want := cur
	want.V4.B = addr16(addr)
	if err == nil && want == cur {
		return nil
	}
	if err := d.objs.SnatDevices.Put(uint32(ifindex), want); err != nil {
		return fmt.Errorf("setting snat device ifindex %d to %s: %w", ifindex, addr, err)
	}
	if cur.V4.B != ([16]byte{}) {
		return d.dropAddrFlows(addrOf(cur.V4.B))
	}
	return nil
}

// RemoveDevice forgets the address of device ifindex; detach it first.
// Removing an unknown device is not an error.
func (d *Datapath) RemoveDevice(ifindex int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var cur snatDevice
	if err := d.objs.SnatDevices.Lookup(uint32(ifindex), &cur); errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("reading snat device ifindex %d: %w", ifindex, err)
	}
	if err := d.objs.SnatDevices.Delete(uint32(ifindex)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("removing snat device ifindex %d: %w", ifindex, err)
	}
	if cur.V4.B != ([16]byte{}) {
		return d.dropAddrFlows(addrOf(cur.V4.B))
	}
	return nil
}

// dropAddrFlows drops the flows translated to old unless a device still
// gives that address.
func (d *Datapath) dropAddrFlows(old netip.Addr) error {
	var k uint32
	var dev snatDevice
	it := d.objs.SnatDevices.Iterate()
	for it.Next(&k, &dev) {
		if addrOf(dev.V4.B) == old {
			return nil
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("reading snat devices: %w", err)
	}
	_, err := d.dropFlows(func(f flow) bool { return f.nat.Addr() == old })
	return err
}

// prefixSet answers "is this address in one of these prefixes" with one
// map lookup per prefix length present, not a walk of the prefixes.
type prefixSet struct {
	bits map[int]bool
	set  map[netip.Prefix]bool
}

func newPrefixSet(ps []netip.Prefix) prefixSet {
	s := prefixSet{bits: map[int]bool{}, set: map[netip.Prefix]bool{}}
	for _, p := range ps {
		s.bits[p.Bits()] = true
		s.set[p] = true
	}
	return s
}

func (s prefixSet) contains(a netip.Addr) bool {
	for b := range s.bits {
		if p, err := a.Prefix(b); err == nil && s.set[p] {
			return true
		}
	}
	return false
}
