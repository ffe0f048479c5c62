package config

import (
	"fmt"
	"net/netip"
	"strings"
)

// addrEntry is one element of a pool's addresses, kept until the final pass
// for the overlap check.
type addrEntry struct {
	path     string // e.g. address-pools[0].addresses[1]
	text     string // as written
	pool     string
	isRange  bool
	prefixes []netip.Prefix
	first    netip.Addr
	last     netip.Addr
}

// String describes the entry the way the user wrote it.
func (e addrEntry) String() string {
	if e.isRange {
		return fmt.Sprintf("range %q", e.text)
	}
	return fmt.Sprintf("CIDR %q", e.text)
}

// minBits is the shortest prefix length of the entry; MetalLB checks
// aggregation lengths against it.
func (e addrEntry) minBits() int {
	bits := e.first.BitLen()
	for _, p := range e.prefixes {
		bits = min(bits, p.Bits())
	}
	return bits
}

func (e addrEntry) overlaps(o addrEntry) bool {
	return e.first.BitLen() == o.first.BitLen() &&
		e.first.Compare(o.last) <= 0 && o.first.Compare(e.last) <= 0
}

// parseAddresses parses one element of a pool's addresses: a CIDR, or a
// range "first-last" of addresses of the same family.
func parseAddresses(s string) (addrEntry, error) {
	if !strings.Contains(s, "-") {
		p, err := parseCIDR(s)
		if err != nil {
			return addrEntry{}, err
		}
		return addrEntry{text: s, prefixes: []netip.Prefix{p}, first: p.Addr(), last: lastAddr(p)}, nil
	}
	first, last, err := parseRange(s)
	if err != nil {
		return addrEntry{}, err
	}
	return addrEntry{text: s, isRange: true, prefixes: rangePrefixes(first, last), first: first, last: last}, nil
}

func parseCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" && !a.Is4In6() {
			return netip.Prefix{}, fmt.Errorf("invalid CIDR %q (did you mean %q?)", s, netip.PrefixFrom(a, a.BitLen()).String())
		}
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q", s)
	}
	if p.Addr().Is4In6() {
		// Would silently escape the overlap check against IPv4 pools.
		return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped IPv6 prefix, write it as IPv4", s)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%q is not aligned to a CIDR block (did you mean %q?)", s, m.String())
	}
	return p, nil
}

func parseRange(s string) (first, last netip.Addr, err error) {
	a, b, _ := strings.Cut(s, "-")
	parse := func(which, text string) (netip.Addr, error) {
		addr, err := netip.ParseAddr(strings.TrimSpace(text))
		if err != nil || addr.Zone() != "" {
			return netip.Addr{}, fmt.Errorf("invalid range %q: invalid %s address %q", s, which, strings.TrimSpace(text))
		}
		if addr.Is4In6() {
			return netip.Addr{}, fmt.Errorf("invalid range %q: %s address %q is IPv4-mapped IPv6, write it as IPv4", s, which, addr)
		}
		return addr, nil
	}
	if first, err = parse("start", a); err != nil {
		return first, last, err
	}
	if last, err = parse("end", b); err != nil {
		return first, last, err
	}
	switch {
	case first.BitLen() != last.BitLen():
		return first, last, fmt.Errorf("invalid range %q: start and end are of different IP families", s)
	case first.Compare(last) > 0:
		return first, last, fmt.Errorf("invalid range %q: start %s is after end %s", s, first, last)
	}
	return first, last, nil
}

// rangePrefixes returns the minimal list of prefixes that exactly covers
// first..last, in address order.
func rangePrefixes(first, last netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for {
		// Widen the prefix while first remains its network address and
		// it does not run past last.
		bits := first.BitLen()
		for bits > 0 {
			wider := netip.PrefixFrom(first, bits-1).Masked()
			if wider.Addr() != first || lastAddr(wider).Compare(last) > 0 {
				break
			}
			bits--
		}
		p := netip.PrefixFrom(first, bits)
		out = append(out, p)
		end := lastAddr(p)
		if end.Compare(last) >= 0 {
			return out
		}
		first = end.Next()
	}
}

// lastAddr returns the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
