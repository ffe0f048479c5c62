package tunnel

import (
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The writes that make a device's FDB, neighbour table or addresses equal
// to the desired ones. Entries to set come before entries to delete, so
// that a peer whose entry is replaced never goes without one.

// diffFDB compares the device's FDB (a dump of family AF_BRIDGE on its
// index) with want. Every entry of a desired MAC that is not exactly ours
// (permanent, self, the desired destination, no VLAN or VNI of its own) is
// replaced; every other destination of a desired MAC, and every entry of
// another MAC, is deleted. underlay6 gives the family of an entry the
// kernel dumps without a destination.
func diffFDB(index int, want map[hwAddr]netip.Addr, have []netlink.Neigh, underlay6 bool) (set, del []netlink.Neigh) {
	ok := map[hwAddr]bool{}
	for _, h := range have {
		if h.LinkIndex != index || h.Family != unix.AF_BRIDGE || len(h.HardwareAddr) != 6 {
			continue
		}
		mac := hwAddr(h.HardwareAddr)
		dst := entryAddr(h.IP, underlay6)
		wantDst, wanted := want[mac]
		switch {
		case wanted && dst == wantDst:
			if h.State&netlink.NUD_PERMANENT != 0 && h.Flags&netlink.NTF_SELF != 0 && h.Vlan == 0 && h.VNI == 0 {
				ok[mac] = true
			}
			// Otherwise the set below replaces it.
		default:
			del = append(del, fdbEntry(index, mac, dst))
		}
	}
	for _, mac := range sortedKeys(want, func(a, b hwAddr) int { return slices.Compare(a[:], b[:]) }) {
		if !ok[mac] {
			set = append(set, fdbEntry(index, mac, want[mac]))
		}
	}
	return set, del
}

// diffNeigh compares the device's neighbour entries (dumps of IPv4 and
// IPv6 on its index) with want. A desired gateway whose entry is not
// permanent with the desired MAC is replaced. Other entries holding a MAC
// (permanent, reachable, stale...) are deleted; the kernel's own entries
// without one (incomplete, failed, and the noarp entries of multicast
// addresses) are left alone, since the kernel makes them again whenever
// traffic asks and they send nothing anywhere.
func diffNeigh(index int, want map[netip.Addr]hwAddr, have []netlink.Neigh) (set, del []netlink.Neigh) {
	ok := map[netip.Addr]bool{}
	for _, h := range have {
		if h.LinkIndex != index || (h.Family != netlink.FAMILY_V4 && h.Family != netlink.FAMILY_V6) {
			continue
		}
		ip, valid := netip.AddrFromSlice(h.IP)
		if !valid {
			continue
		}
		if h.Family == netlink.FAMILY_V4 {
			ip = ip.Unmap()
		}
		if mac, wanted := want[ip]; wanted {
			if h.State&netlink.NUD_PERMANENT != 0 && len(h.HardwareAddr) == 6 && hwAddr(h.HardwareAddr) == mac {
				ok[ip] = true
			}
			continue
		}
		if holdsMAC(h.State) {
			del = append(del, netlink.Neigh{LinkIndex: index, Family: h.Family, IP: h.IP, HardwareAddr: h.HardwareAddr})
		}
	}
	for _, gw := range sortedKeys(want, netip.Addr.Compare) {
		if !ok[gw] {
			set = append(set, neighEntry(index, gw, want[gw]))
		}
	}
	return set, del
}

// holdsMAC reports whether a neighbour entry in state s maps its address to
// a MAC that the kernel would send to.
func holdsMAC(s int) bool {
	return s&(netlink.NUD_PERMANENT|netlink.NUD_REACHABLE|netlink.NUD_STALE|netlink.NUD_DELAY|netlink.NUD_PROBE) != 0
}

// diffAddrs compares the device's addresses with want (host prefixes). The
// kernel's IPv6 link-local addresses are left alone.
func diffAddrs(want []netip.Prefix, have []netlink.Addr) (add []netip.Prefix, del []netlink.Addr) {
	seen := map[netip.Prefix]bool{}
	for _, h := range have {
		p, ok := prefixOf(h.IPNet)
		if !ok || (p.Addr().Is6() && p.Addr().IsLinkLocalUnicast()) {
			continue
		}
		if slices.Contains(want, p) {
			seen[p] = true
			continue
		}
		del = append(del, h)
	}
	for _, p := range want {
		if !seen[p] {
			add = append(add, p)
		}
	}
	return add, del
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if a.Is4In6() && bits == 128 {
		a, ones = a.Unmap(), ones-96
	}
	return netip.PrefixFrom(a, ones), true
}

// entryAddr reads the destination of an FDB entry; the kernel dumps none
// for the unspecified address.
func entryAddr(ip net.IP, underlay6 bool) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	switch {
	case ok && len(ip) == 4:
		return a
	case ok:
		if !underlay6 {
			return a.Unmap()
		}
		return a
	case underlay6:
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

func sortedKeys[K comparable, V any](m map[K]V, cmp func(a, b K) int) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, cmp)
	return keys
}
