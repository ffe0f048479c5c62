// Package allocator hands out LoadBalancer addresses from the address
// pools of the bgp-config, with MetalLB v0.12 semantics. It is plain data
// and knows nothing of Kubernetes: Services are keys, requests are values.
package allocator

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"routeagent.io/route-agent/bgp/config"
)

// Allocator tracks pools and the addresses Services hold. It is not safe
// for concurrent use.
type Allocator struct {
	pools  []*pool // configuration order
	byName map[string]*pool
	svcs   map[string]*holding
	addrs  map[netip.Addr]*addrUse
	// shared indexes the addresses in use under each sharing key: the
	// only candidates a Service with that key can join, so looking for a
	// shareable address never scans unrelated ones.
	shared map[shareKey]map[netip.Addr]struct{}
}

type shareKey struct{ sharing, backend string }

type holding struct {
	addrs    []netip.Addr
	pool     string
	orphaned bool
	ports    []Port
	key      shareKey
}

func (h *holding) assignment() Assignment {
	return Assignment{Addrs: slices.Clone(h.addrs), Pool: h.pool, Orphaned: h.orphaned}
}

// addrUse records who uses an address. All users share one key.
type addrUse struct {
	key   shareKey
	svcs  map[string]struct{}
	ports map[Port]string // the Service using each port
}

// New returns an Allocator without pools.
func New() *Allocator {
	return &Allocator{
		byName: map[string]*pool{},
		svcs:   map[string]*holding{},
		addrs:  map[netip.Addr]*addrUse{},
		shared: map[shareKey]map[netip.Addr]struct{}{},
	}
}

// SetPools replaces the pools. Assignments are kept whatever the new
// pools: those no pool holds any more become orphaned rather than being
// taken from live Services, and they return to a pool that covers them
// again. Calling SetPools again with the same pools changes nothing.
func (a *Allocator) SetPools(pools []config.Pool) {
	a.pools, a.byName = nil, map[string]*pool{}
	for _, c := range pools {
		p := newPool(c)
		a.pools = append(a.pools, p)
		a.byName[p.name] = p
	}
	for _, h := range a.svcs {
		a.rehome(h)
	}
}

func (a *Allocator) rehome(h *holding) {
	p := a.poolFor(h.addrs)
	if p == nil {
		// Keep the old pool name: it tells users where the address
		// came from.
		h.orphaned = true
		return
	}
	h.pool, h.orphaned = p.name, false
}

// poolFor returns the pool that holds every address of as, or nil.
func (a *Allocator) poolFor(as []netip.Addr) *pool {
	if len(as) == 0 {
		return nil
	}
	p := a.poolOf(as[0])
	if p == nil {
		return nil
	}
	for _, x := range as[1:] {
		if !p.contains(x) {
			return nil
		}
	}
	return p
}

// poolOf returns the pool holding x, or nil. Pools never overlap: the
// config parser rejects that.
func (a *Allocator) poolOf(x netip.Addr) *pool {
	for _, p := range a.pools {
		if p.contains(x) {
			return p
		}
	}
	return nil
}

// Lookup returns what svc holds.
func (a *Allocator) Lookup(svc string) (Assignment, bool) {
	h := a.svcs[svc]
	if h == nil {
		return Assignment{}, false
	}
	return h.assignment(), true
}

// Assign gives svc addresses that satisfy req and returns them. A Service
// that already holds satisfying addresses keeps them; one whose request
// changed moves, but keeps the addresses of its families that still fit
// (a Service turning dual-stack keeps its IPv4 address). On error, svc
// keeps what it held before, which is returned with the error, so a
// request that cannot be met never takes a live address away.
func (a *Allocator) Assign(svc string, req Request) (Assignment, error) {
	if err := req.validate(); err != nil {
		return a.current(svc), err
	}
	key := shareKey{req.SharingKey, req.BackendKey}
	cur := a.svcs[svc]
	if cur != nil && a.satisfies(svc, cur, req, key) {
		// Ports and keys may have changed in ways that still fit:
		// record them for the next Service's checks.
		a.drop(svc)
		cur.ports, cur.key = slices.Clone(req.Ports), key
		a.hold(svc, cur)
		return cur.assignment(), nil
	}
	var prefer, freed []netip.Addr
	if cur != nil {
		prefer = cur.addrs
		freed = a.drop(svc)
	}
	h, err := a.allocate(svc, req, key, prefer)
	if err != nil {
		if cur != nil {
			a.hold(svc, cur)
		}
		return a.current(svc), err
	}
	a.hold(svc, h)
	a.rewind(freed)
	return h.assignment(), nil
}

func (a *Allocator) current(svc string) Assignment {
	as, _ := a.Lookup(svc)
	return as
}

// satisfies reports whether cur meets req. It puts cur.addrs in the order
// of req.Families when it does.
func (a *Allocator) satisfies(svc string, cur *holding, req Request, key shareKey) bool {
	if len(cur.addrs) != len(req.Families) {
		return false
	}
	ordered := make([]netip.Addr, 0, len(cur.addrs))
	for _, f := range req.Families {
		i := slices.IndexFunc(cur.addrs, func(x netip.Addr) bool { return FamilyOf(x) == f })
		if i < 0 {
			return false
		}
		ordered = append(ordered, cur.addrs[i])
	}
	for _, x := range ordered {
		if want, ok := req.addrFor(FamilyOf(x)); ok && want != x {
			return false
		}
		if err := a.shareable(svc, x, key, req.Ports); err != nil {
			return false
		}
	}
	// An orphaned assignment has no pool to compare with; it stays
	// until the Service goes rather than being yanked.
	if req.Pool != "" && !cur.orphaned && cur.pool != req.Pool {
		return false
	}
	cur.addrs = ordered
	return true
}

func (a *Allocator) allocate(svc string, req Request, key shareKey, prefer []netip.Addr) (*holding, error) {
	if req.Pool != "" && a.byName[req.Pool] == nil {
		return nil, &Error{Reason: ReasonUnknownPool, Msg: fmt.Sprintf("pool %q does not exist", req.Pool)}
	}
	if len(req.Addrs) > 0 {
		return a.allocateRequested(svc, req, key)
	}
	var candidates []*pool
	if req.Pool != "" {
		candidates = []*pool{a.byName[req.Pool]}
	} else {
		for _, p := range a.pools {
			if p.autoAssign {
				candidates = append(candidates, p)
			}
		}
	}
	if len(candidates) == 0 {
		if len(a.pools) == 0 {
			return nil, &Error{Reason: ReasonNoPool, Msg: "no address pool is configured"}
		}
		return nil, &Error{Reason: ReasonNoPool, Msg: "no address pool has auto-assign enabled"}
	}
	// A Service moving (e.g. becoming dual-stack) tries its old pool
	// first, where it can keep the addresses it has.
	if len(prefer) > 0 {
		if old := a.poolOf(prefer[0]); old != nil {
			if i := slices.Index(candidates, old); i > 0 {
				candidates = slices.Concat([]*pool{old}, candidates[:i], candidates[i+1:])
			}
		}
	}
	var full []string
	var fullFamily Family
	for _, p := range candidates {
		if f, ok := missingFamily(p, req.Families); !ok {
			if req.Pool != "" {
				return nil, &Error{Reason: ReasonNoPool, Msg: fmt.Sprintf("pool %q has no %s addresses", p.name, f)}
			}
			continue
		}
		addrs, f, ok := a.fromPool(p, svc, req, key, prefer)
		if ok {
			return &holding{addrs: addrs, pool: p.name, ports: slices.Clone(req.Ports), key: key}, nil
		}
		if len(full) == 0 {
			fullFamily = f
		}
		full = append(full, p.name)
	}
	switch {
	case req.Pool != "":
		return nil, &Error{Reason: ReasonPoolExhausted, Msg: fmt.Sprintf("no %s address left in pool %q", fullFamily, req.Pool)}
	case len(full) > 0:
		return nil, &Error{Reason: ReasonPoolExhausted, Msg: fmt.Sprintf("no %s address left in auto-assign pools %q", fullFamily, full)}
	}
	for _, f := range req.Families {
		if !slices.ContainsFunc(candidates, func(p *pool) bool { return p.hasFamily(f) }) {
			return nil, &Error{Reason: ReasonNoPool, Msg: fmt.Sprintf("no auto-assign pool has %s addresses", f)}
		}
	}
	return nil, &Error{Reason: ReasonNoPool, Msg: fmt.Sprintf("no auto-assign pool has addresses of every family of %s", familyList(req.Families))}
}

// missingFamily returns a family of fs that p has no addresses of.
func missingFamily(p *pool, fs []Family) (Family, bool) {
	for _, f := range fs {
		if !p.hasFamily(f) {
			return f, false
		}
	}
	return 0, true
}

// fromPool picks one address per family from p; on failure it returns the
// family it found no address for.
func (a *Allocator) fromPool(p *pool, svc string, req Request, key shareKey, prefer []netip.Addr) ([]netip.Addr, Family, bool) {
	addrs := make([]netip.Addr, 0, len(req.Families))
	for _, f := range req.Families {
		x, ok := a.pick(p, f, svc, key, req.Ports, prefer)
		if !ok {
			return nil, f, false
		}
		addrs = append(addrs, x)
	}
	return addrs, 0, true
}

// pick chooses an address of family f in p: the Service's previous one if
// it still fits, else the lowest address it may share, else the first
// free one. MetalLB takes the first address it may use, shared or free;
// preferring to share whenever possible keeps Services that carry a
// sharing key together, which is why users give them one.
func (a *Allocator) pick(p *pool, f Family, svc string, key shareKey, ports []Port, prefer []netip.Addr) (netip.Addr, bool) {
	for _, x := range prefer {
		if FamilyOf(x) == f && p.contains(x) && a.shareable(svc, x, key, ports) == nil {
			return x, true
		}
	}
	if key.sharing != "" {
		var best netip.Addr
		for x := range a.shared[key] {
			if FamilyOf(x) == f && (!best.IsValid() || x.Less(best)) && p.contains(x) && a.shareable(svc, x, key, ports) == nil {
				best = x
			}
		}
		if best.IsValid() {
			return best, true
		}
	}
	return p.firstFree(f, func(x netip.Addr) bool { return a.addrs[x] != nil })
}

func (a *Allocator) allocateRequested(svc string, req Request, key shareKey) (*holding, error) {
	var p *pool
	addrs := make([]netip.Addr, 0, len(req.Families))
	for _, f := range req.Families {
		x, _ := req.addrFor(f) // validate made sure there is one
		xp := a.poolOf(x)
		switch {
		case xp == nil && req.Pool != "":
			return nil, &Error{Reason: ReasonNotInPool, Msg: fmt.Sprintf("requested address %s is not in pool %q", x, req.Pool)}
		case xp == nil:
			return nil, &Error{Reason: ReasonNotInPool, Msg: fmt.Sprintf("requested address %s is not in any address pool", x)}
		case req.Pool != "" && xp.name != req.Pool:
			return nil, &Error{Reason: ReasonNotInPool, Msg: fmt.Sprintf("requested address %s is in pool %q, not in the requested pool %q", x, xp.name, req.Pool)}
		case p != nil && xp != p:
			return nil, &Error{Reason: ReasonInvalidRequest, Msg: fmt.Sprintf("requested addresses %s (pool %q) and %s (pool %q) are in different pools", addrs[0], p.name, x, xp.name)}
		}
		p = xp
		if err := a.shareable(svc, x, key, req.Ports); err != nil {
			return nil, err
		}
		addrs = append(addrs, x)
	}
	return &holding{addrs: addrs, pool: p.name, ports: slices.Clone(req.Ports), key: key}, nil
}

// shareable returns an error unless svc may use x alongside its current
// users. The rules are MetalLB's: every user carries the same sharing key,
// no two expose the same protocol and port, and they have the same
// backend key. The last rule matters for externalTrafficPolicy Local,
// where an address is announced only from nodes running the Service's
// pods: Services with different pods would need different announcements
// of one address, which routing cannot express.
func (a *Allocator) shareable(svc string, x netip.Addr, key shareKey, ports []Port) error {
	u := a.addrs[x]
	if u == nil {
		return nil
	}
	n := len(u.svcs)
	if _, self := u.svcs[svc]; self {
		n--
	}
	if n == 0 {
		return nil
	}
	var msg string
	switch {
	case u.key.sharing == "":
		msg = fmt.Sprintf("address %s is in use by %s, which does not allow sharing", x, u.others(svc))
	case key.sharing == "":
		msg = fmt.Sprintf("address %s is in use by %s and this Service has no sharing key", x, u.others(svc))
	case u.key.sharing != key.sharing:
		msg = fmt.Sprintf("address %s is in use by %s with sharing key %q, not %q", x, u.others(svc), u.key.sharing, key.sharing)
	case u.key.backend != key.backend:
		msg = fmt.Sprintf("address %s is in use by %s, which serves %s, not %s", x, u.others(svc), describeBackend(u.key.backend), describeBackend(key.backend))
	default:
		for _, p := range ports {
			if o, ok := u.ports[p]; ok && o != svc {
				msg = fmt.Sprintf("port %s of address %s is already used by %s", p, x, o)
				break
			}
		}
	}
	if msg == "" {
		return nil
	}
	return &Error{Reason: ReasonAddressInUse, Msg: msg}
}

func describeBackend(k string) string {
	if k == "" {
		return "externalTrafficPolicy Cluster"
	}
	return fmt.Sprintf("externalTrafficPolicy Local with selector %q", k)
}

// others lists the users of an address other than svc, for messages.
func (u *addrUse) others(svc string) string {
	var names []string
	for s := range u.svcs {
		if s != svc {
			names = append(names, s)
		}
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

func (a *Allocator) hold(svc string, h *holding) {
	a.svcs[svc] = h
	for _, x := range h.addrs {
		u := a.addrs[x]
		if u == nil {
			u = &addrUse{key: h.key, svcs: map[string]struct{}{}, ports: map[Port]string{}}
			a.addrs[x] = u
			if h.key.sharing != "" {
				if a.shared[h.key] == nil {
					a.shared[h.key] = map[netip.Addr]struct{}{}
				}
				a.shared[h.key][x] = struct{}{}
			}
		}
		u.svcs[svc] = struct{}{}
		for _, p := range h.ports {
			u.ports[p] = svc
		}
	}
}

// drop forgets what svc holds and returns the addresses nobody uses any
// more. It leaves the pool cursors alone: the caller rewinds them once it
// knows the addresses stay free.
func (a *Allocator) drop(svc string) []netip.Addr {
	h := a.svcs[svc]
	if h == nil {
		return nil
	}
	delete(a.svcs, svc)
	var freed []netip.Addr
	for _, x := range h.addrs {
		u := a.addrs[x]
		delete(u.svcs, svc)
		for _, p := range h.ports {
			if u.ports[p] == svc {
				delete(u.ports, p)
			}
		}
		if len(u.svcs) > 0 {
			continue
		}
		delete(a.addrs, x)
		if set := a.shared[u.key]; set != nil {
			delete(set, x)
			if len(set) == 0 {
				delete(a.shared, u.key)
			}
		}
		freed = append(freed, x)
	}
	return freed
}

func (a *Allocator) rewind(freed []netip.Addr) {
	for _, x := range freed {
		if a.addrs[x] != nil {
			continue
		}
		if p := a.poolOf(x); p != nil {
			p.rewind(x)
		}
	}
}

// Release frees what svc holds and returns it.
func (a *Allocator) Release(svc string) (Assignment, bool) {
	as, ok := a.Lookup(svc)
	a.rewind(a.drop(svc))
	return as, ok
}

// Restore replaces all assignments with those found in the cluster, e.g.
// on start-up or after a change of leader. Where Services hold an address
// they may not share, the older Service (by Created, then by key) keeps
// it and each loser gets a Conflict; losers keep their other addresses.
// Addresses outside every pool are kept, orphaned.
func (a *Allocator) Restore(holdings []Holding) []Conflict {
	a.svcs, a.addrs = map[string]*holding{}, map[netip.Addr]*addrUse{}
	a.shared = map[shareKey]map[netip.Addr]struct{}{}
	for _, p := range a.pools {
		for _, r := range p.ranges {
			r.next = r.prefix.Addr()
		}
	}
	sorted := slices.Clone(holdings)
	slices.SortStableFunc(sorted, func(x, y Holding) int {
		return cmp.Or(x.Created.Compare(y.Created), strings.Compare(x.Service, y.Service))
	})
	var conflicts []Conflict
	for _, h := range sorted {
		conflicts = append(conflicts, a.Adopt(h)...)
	}
	return conflicts
}

// Adopt takes over the addresses a Service is found holding, replacing
// what the allocator had for it. Addresses held by others that the
// Service may not share are not adopted: each is reported as a Conflict.
// Only the first address of each family is considered.
func (a *Allocator) Adopt(h Holding) []Conflict {
	a.rewind(a.drop(h.Service))
	key := shareKey{h.Request.SharingKey, h.Request.BackendKey}
	var kept []netip.Addr
	var conflicts []Conflict
	seen := map[Family]bool{}
	for _, x := range h.Addrs {
		x = x.Unmap()
		if !x.IsValid() || seen[FamilyOf(x)] {
			continue
		}
		seen[FamilyOf(x)] = true
		if err := a.shareable(h.Service, x, key, h.Request.Ports); err != nil {
			holder := a.addrs[x].others(h.Service)
			holder, _, _ = strings.Cut(holder, ", ")
			conflicts = append(conflicts, Conflict{Service: h.Service, Addr: x, Holder: holder, Err: err})
			continue
		}
		kept = append(kept, x)
	}
	if len(kept) == 0 {
		return conflicts
	}
	hd := &holding{addrs: kept, ports: slices.Clone(h.Request.Ports), key: key}
	a.rehome(hd)
	a.hold(h.Service, hd)
	return conflicts
}
