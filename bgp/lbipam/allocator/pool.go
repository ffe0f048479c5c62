package allocator

import (
	"net/netip"

	"routeagent.io/route-agent/bgp/config"
)

// pool is a configured address pool with one search cursor per prefix.
type pool struct {
	name       string
	autoAssign bool
	avoidBuggy bool
	ranges     []*addrRange // configuration order
}

// addrRange is one prefix of a pool. next is the lowest address of the
// prefix that may be free: every address below it is in use or skipped.
// It is the zero Addr when the whole prefix is in use. Allocation resumes
// from next and releasing an address lowers it, so assigning n addresses
// walks each prefix about once instead of rescanning from the start.
type addrRange struct {
	prefix netip.Prefix
	next   netip.Addr
}

func newPool(c config.Pool) *pool {
	p := &pool{name: c.Name, autoAssign: c.AutoAssign, avoidBuggy: c.AvoidBuggyIPs}
	for _, pfx := range c.Prefixes {
		pfx = pfx.Masked()
		p.ranges = append(p.ranges, &addrRange{prefix: pfx, next: pfx.Addr()})
	}
	return p
}

// contains reports whether a belongs to the pool. As in MetalLB, the
// addresses avoid-buggy-ips skips are not part of the pool even when
// requested explicitly.
func (p *pool) contains(a netip.Addr) bool {
	return p.rangeOf(a) != nil
}

func (p *pool) rangeOf(a netip.Addr) *addrRange {
	if p.avoidBuggy && buggy(a) {
		return nil
	}
	for _, r := range p.ranges {
		if r.prefix.Contains(a) {
			return r
		}
	}
	return nil
}

func (p *pool) hasFamily(f Family) bool {
	for _, r := range p.ranges {
		if FamilyOf(r.prefix.Addr()) == f {
			return true
		}
	}
	return false
}

// rewind makes a, just freed, findable again.
func (p *pool) rewind(a netip.Addr) {
	r := p.rangeOf(a)
	if r != nil && (!r.next.IsValid() || a.Less(r.next)) {
		r.next = a
	}
}

// firstFree returns the first address of family f, in configuration
// order, that inUse does not report.
func (p *pool) firstFree(f Family, inUse func(netip.Addr) bool) (netip.Addr, bool) {
	for _, r := range p.ranges {
		if FamilyOf(r.prefix.Addr()) != f {
			continue
		}
		for a := r.next; a.IsValid() && r.prefix.Contains(a); a = a.Next() {
			if (p.avoidBuggy && buggy(a)) || inUse(a) {
				continue
			}
			r.next = a
			return a, true
		}
		r.next = netip.Addr{}
	}
	return netip.Addr{}, false
}

// buggy reports whether a is an IPv4 address ending in .0 or .255, which
// some consumer routers' smurf protection drops.
func buggy(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	b := a.As4()
	return b[3] == 0 || b[3] == 255
}
