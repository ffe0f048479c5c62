package routing

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// desiredSet is the desired state after validation.
type desiredSet struct {
	routes  []Route           // as given to Set, normalized; the index is the position
	owns    []bool            // whether routes[i] holds its key: valid, and not a repeat
	owner   map[RouteKey]int  // the route that holds each key
	invalid map[int]rejection // why a route is refused before the kernel is looked at
	tables  map[int]bool      // tables the valid routes use
	encaps  bool              // some route has an IP encapsulation
}

func newDesiredSet(routes []Route) *desiredSet {
	ds := &desiredSet{
		routes:  make([]Route, len(routes)),
		owns:    make([]bool, len(routes)),
		owner:   make(map[RouteKey]int, len(routes)),
		invalid: map[int]rejection{},
		tables:  map[int]bool{},
	}
	for i, r := range routes {
		r = r.normalize()
		ds.routes[i] = r
		if err := r.check(); err != nil {
			ds.invalid[i] = rejection{err: err}
			continue
		}
		key := r.Key()
		if j, dup := ds.owner[key]; dup {
			// The same route twice is harmless; two routes for one key are a
			// planning bug, and the first one given wins.
			if ds.routes[j] != r {
				ds.invalid[i] = rejection{holder: j}
			}
			continue
		}
		ds.owner[key] = i
		ds.owns[i] = true
		ds.encaps = ds.encaps || !r.Encap.IsZero()
		ds.tables[key.Table] = true
	}
	return ds
}

// rejection is why a desired route is refused before the kernel is looked
// at: it is invalid, or another desired route holds its key.
type rejection struct {
	err    error
	holder int
}

func (ds *desiredSet) reason(i int, names map[int]string) string {
	rj := ds.invalid[i]
	if rj.err != nil {
		return fmt.Sprintf("refused: invalid route %s: %v", ds.routes[i].format(names), rj.err)
	}
	return fmt.Sprintf("refused: another desired route holds %s: %s", ds.routes[i].Key(), ds.routes[rj.holder].format(names))
}

// kernelState is what the dumps found that matters to Set, against one
// desiredSet.
type kernelState struct {
	// held[i] is our route at the key of desired route i, at the kernel's
	// default metric, where found[i].
	held  []ownRoute
	found []bool
	// others are the rest of our routes in the tables Set manages: at keys
	// no desired route holds, a second route for a key, another metric or
	// TOS.
	others []ownRoute
	// foreign holds other protocols' routes at a desired key and the
	// kernel's default metric, where an add of ours would clash, and any
	// default route of another protocol that a desired default route would
	// take over.
	foreign map[RouteKey][]netlink.Route
}

// ownRoute is one of the agent's routes as a dump found it.
type ownRoute struct {
	route Route // as fromNetlink read it
	exact bool  // fromNetlink read all of it: writing route gives this kernel route
	// What deleting exactly this route takes, beyond its key.
	key      RouteKey
	gw       netip.Addr // a single next hop's
	link     int
	tos      uint8
	priority int
}

func newKernelState(ds *desiredSet) *kernelState {
	return &kernelState{
		held:    make([]ownRoute, len(ds.routes)),
		found:   make([]bool, len(ds.routes)),
		foreign: map[RouteKey][]netlink.Route{},
	}
}

// observe files one route from a dump; manages says whether Set owns the
// agent's routes in a table.
func (ks *kernelState) observe(nr *netlink.Route, ds *desiredSet, manages func(table int) bool) {
	key, ok := kernelKey(nr)
	if !ok {
		return
	}
	atDefault := nr.Priority == familyByAF(nr.Family).defaultPriority && nr.Tos == 0
	i, wanted := ds.owner[key]
	if int(nr.Protocol) != Protocol {
		if wanted && (atDefault || key.Dst.Bits() == 0) {
			ks.foreign[key] = append(ks.foreign[key], *nr)
		}
		return
	}
	if !manages(key.Table) {
		return
	}
	own := ownRoute{key: key, tos: uint8(nr.Tos), priority: nr.Priority, link: nr.LinkIndex}
	own.route, own.exact = fromNetlink(nr)
	if len(nr.MultiPath) == 0 {
		own.gw, _ = netip.AddrFromSlice(nr.Gw)
		if familyByAF(nr.Family) == ipv4 {
			own.gw = own.gw.Unmap()
		}
	} else {
		own.link = 0
	}
	if wanted && atDefault && !ks.found[i] {
		ks.held[i], ks.found[i] = own, true
		return
	}
	ks.others = append(ks.others, own)
}

// format describes o for messages, like `ip route`.
func (o ownRoute) format(names map[int]string) string {
	var b strings.Builder
	b.WriteString(o.key.Dst.String())
	if o.gw.IsValid() {
		fmt.Fprintf(&b, " via %s", o.gw)
	}
	if o.link > 0 {
		fmt.Fprintf(&b, " dev %s", linkName(names, o.link))
	}
	if o.key.Table != unix.RT_TABLE_MAIN {
		fmt.Fprintf(&b, " table %d", o.key.Table)
	}
	if o.priority != familyOf(o.key.Dst.Addr()).defaultPriority {
		fmt.Fprintf(&b, " metric %d", o.priority)
	}
	return b.String()
}

// linkState is what Set needs to know about a device.
type linkState struct {
	name string
	up   bool // administratively up: the kernel refuses routes through a down device and flushes them
}

type action uint8

const (
	actAdopt action = iota + 1 // the kernel holds it already: nothing to write
	actAdd                     // nothing holds the key: add, refusing to overwrite
	// actReplace: our own route holds the key with other attributes.
	// NLM_F_REPLACE overwrites the first route at the key, which the dump
	// has just shown is ours.
	actReplace
	actPending // its device is down or missing: installed when it is back
	actRefuse  // invalid, or another protocol holds the key
)

func (a action) String() string {
	switch a {
	case actAdopt:
		return "adopt"
	case actAdd:
		return "add"
	case actReplace:
		return "replace"
	case actPending:
		return "pending"
	case actRefuse:
		return "refuse"
	}
	return "none"
}

type step struct {
	action action
	reason string // for pending and refuse
	heal   bool   // an add of a route this process had seen installed
}

// plan is what Set does. It is computed without touching the kernel.
type plan struct {
	// steps has one step per desired route; a route that repeats another
	// gets none and shares its outcome.
	steps []step
	// deletes are our routes that no desired route accounts for.
	deletes []ownRoute
}

// makePlan compares the desired routes with the kernel. installed is what
// the previous Set left installed, to tell a heal from a first add.
func makePlan(ds *desiredSet, ks *kernelState, links map[int]linkState, installed map[RouteKey]installedRoute) plan {
	p := plan{steps: make([]step, len(ds.routes)), deletes: ks.others}
	names := linkNames(links)
	for i, r := range ds.routes {
		if !ds.owns[i] {
			if _, bad := ds.invalid[i]; bad {
				p.steps[i] = step{action: actRefuse, reason: ds.reason(i, names)}
			}
			continue
		}
		cur, have := ks.held[i], ks.found[i]
		if len(ks.foreign) > 0 {
			if held := ks.foreign[r.Key()]; len(held) > 0 {
				// Never add over another protocol's route; ours at the
				// same key (an old append) must not stay either.
				p.steps[i] = step{action: actRefuse, reason: "refused: conflicts with " + describeKernelRoute(&held[0], names)}
				if have {
					p.deletes = append(p.deletes, cur)
				}
				continue
			}
		}
		if have && cur.exact && cur.route == r {
			p.steps[i] = step{action: actAdopt}
			continue
		}
		l, known := links[r.LinkIndex]
		switch {
		case !known:
			p.steps[i] = step{action: actPending, reason: fmt.Sprintf("pending: link %s does not exist", linkName(names, r.LinkIndex))}
		case !l.up:
			p.steps[i] = step{action: actPending, reason: fmt.Sprintf("pending: link %s is down", l.name)}
		case have:
			p.steps[i] = step{action: actReplace}
			continue
		default:
			prev, was := installed[r.Key()]
			p.steps[i] = step{action: actAdd, heal: was && prev.route == r}
			continue
		}
		if have { // a pending route's old version must not stay
			p.deletes = append(p.deletes, cur)
		}
	}
	slices.SortFunc(p.deletes, compareOwnRoutes)
	return p
}

func linkNames(links map[int]linkState) map[int]string {
	names := make(map[int]string, len(links))
	for i, l := range links {
		names[i] = l.name
	}
	return names
}

// compareOwnRoutes orders routes by table, family and destination, so
// that plans and logs are stable.
func compareOwnRoutes(a, b ownRoute) int {
	if c := cmp.Compare(a.key.Table, b.key.Table); c != 0 {
		return c
	}
	if c := a.key.Dst.Addr().Compare(b.key.Dst.Addr()); c != 0 {
		return c
	}
	if c := cmp.Compare(a.key.Dst.Bits(), b.key.Dst.Bits()); c != 0 {
		return c
	}
	return cmp.Compare(a.priority, b.priority)
}

// deleteRequest is the request that deletes o: the kernel matches
// protocol, table, TOS, metric and next hop, so it never removes a route
// of another protocol.
func deleteRequest(o ownRoute) netlink.Route {
	f := familyOf(o.key.Dst.Addr())
	del := netlink.Route{
		Family:    f.af,
		Dst:       &net.IPNet{IP: o.key.Dst.Addr().AsSlice(), Mask: net.CIDRMask(o.key.Dst.Bits(), o.key.Dst.Addr().BitLen())},
		Table:     o.key.Table,
		Tos:       int(o.tos),
		Priority:  o.priority,
		Protocol:  Protocol,
		Scope:     unix.RT_SCOPE_NOWHERE, // any scope, any type
		LinkIndex: o.link,
	}
	if o.gw.IsValid() {
		del.Gw = o.gw.AsSlice()
	}
	return del
}
