package routing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Kernel makes the kernel's routes of protocol Protocol equal to a desired
// set. It writes only routes of that protocol, and never adds over,
// replaces or deletes a route of another.
type Kernel struct {
	log *slog.Logger
	ns  netns.NsHandle // our own duplicate, so Watch can subscribe again after the caller closed theirs
	h   *netlink.Handle
	w   *writer

	mu        sync.Mutex // serialises Set and Cleanup
	installed map[RouteKey]installedRoute
	reasons   map[RouteKey]string // the last reason logged for a route not installed, so it is logged once
	invalid   map[string]bool     // the same for invalid routes, which may have no key of their own
	tables    map[int]bool        // tables whose protocol-201 routes Set owns
	// sawEncaps: the last dump found routes of ours with an IP
	// encapsulation, so the next one reads them too even when no desired
	// route has one (to remove them).
	sawEncaps bool

	want atomic.Pointer[desiredSet] // the last desired routes, for Watch to filter events
	// eventBuffer is the receive buffer of Watch's route subscription;
	// subscriptions counts Watch's subscribing, for tests.
	eventBuffer   int
	subscriptions atomic.Int64
	stats         struct{ adds, replaces, deletes, heals, errors atomic.Uint64 }
}

type installedRoute struct {
	route Route
	since time.Time
}

// Options configure a Kernel.
type Options struct {
	Logger *slog.Logger
	// NetNS is the network namespace to work in; the zero value and
	// netns.None() mean the current one. The Kernel keeps its own
	// duplicate of the handle.
	NetNS netns.NsHandle
	// Tables are further tables whose protocol-201 routes this Kernel owns,
	// besides main and the tables desired routes use: Set deletes the
	// agent's routes there that are not desired, such as an earlier run's.
	Tables []int
}

// State says where a desired route stands after Set.
type State uint8

const (
	Installed State = iota + 1
	Pending         // waiting for its device to exist or come up
	Refused         // invalid, or another protocol's route holds its key
	Failed          // the kernel returned an error; Set's error says which
)

func (s State) String() string {
	switch s {
	case Installed:
		return "installed"
	case Pending:
		return "pending"
	case Refused:
		return "refused"
	case Failed:
		return "failed"
	}
	return "unknown"
}

// RouteStatus is the outcome of Set for one desired route.
type RouteStatus struct {
	Route  Route
	State  State
	Reason string // why it is not installed: "pending: link eth1 is down"
	// Since is when this process first saw the route installed, counted
	// again from when it was found missing or changed.
	Since time.Time
}

// Result is what Set reached.
type Result struct {
	Routes                   []RouteStatus // one per desired route, in the order given
	Added, Replaced, Deleted int           // the writes this Set made
}

// Count returns how many desired routes are in state s.
func (r Result) Count(s State) int {
	n := 0
	for _, st := range r.Routes {
		if st.State == s {
			n++
		}
	}
	return n
}

// Stats are counters since the Kernel was made, for metrics.
type Stats struct {
	Adds     uint64
	Replaces uint64
	Deletes  uint64
	Heals    uint64 // adds of a route that had been installed and went missing; also counted in Adds
	Errors   uint64 // failed writes and dumps
}

// NewKernel opens the netlink sockets Set uses. Close releases them.
func NewKernel(opts Options) (*Kernel, error) {
	k := &Kernel{
		log:         opts.Logger,
		ns:          netns.None(),
		installed:   map[RouteKey]installedRoute{},
		reasons:     map[RouteKey]string{},
		tables:      map[int]bool{unix.RT_TABLE_MAIN: true},
		eventBuffer: eventBuffer,
	}
	if k.log == nil {
		k.log = slog.Default()
	}
	for _, t := range opts.Tables {
		k.tables[tableOrMain(t)] = true
	}
	if opts.NetNS != 0 && opts.NetNS.IsOpen() {
		fd, err := unix.FcntlInt(uintptr(opts.NetNS), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("duplicating the network namespace handle: %w", err)
		}
		k.ns = netns.NsHandle(fd)
	}
	var err error
	if k.h, err = netlink.NewHandleAt(k.ns, unix.NETLINK_ROUTE); err != nil {
		k.ns.Close()
		return nil, fmt.Errorf("opening a netlink handle: %w", err)
	}
	if k.w, err = newWriter(k.ns); err != nil {
		k.h.Close()
		k.ns.Close()
		return nil, err
	}
	return k, nil
}

// Close releases the sockets. Watch must have returned.
func (k *Kernel) Close() {
	k.w.close()
	k.h.Close()
	k.ns.Close()
}

// Stats returns the counters.
func (k *Kernel) Stats() Stats {
	return Stats{
		Adds:     k.stats.adds.Load(),
		Replaces: k.stats.replaces.Load(),
		Deletes:  k.stats.deletes.Load(),
		Heals:    k.stats.heals.Load(),
		Errors:   k.stats.errors.Load(),
	}
}

// Set makes the kernel hold exactly desired among the routes of protocol
// 201, IPv4 and IPv6, in main, the tables desired routes use (now or in an
// earlier Set) and Options.Tables.
//
// A route the kernel already holds is adopted without a write, so calling
// Set again with the same routes writes nothing. New routes are added with
// NLM_F_EXCL, so that the kernel itself refuses to overwrite a route of
// another protocol; only a route of ours is replaced. Adds and replaces go
// before deletes. Set keeps going after a failure and returns the failures
// joined; Result says where each desired route stands. A route whose device
// is down or missing is pending, not an error: Watch notifies when the
// device comes back and the next Set installs it.
func (k *Kernel) Set(ctx context.Context, desired []Route) (Result, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	start := time.Now()
	ds := newDesiredSet(desired)
	k.publish(ds)
	for t := range ds.tables {
		k.tables[t] = true
	}
	links, err := k.links()
	if err != nil {
		k.stats.errors.Add(1)
		return Result{}, err
	}
	ks, err := k.list(ds)
	if err != nil {
		k.stats.errors.Add(1)
		return Result{}, err
	}
	p := makePlan(ds, ks, links, k.installed)
	names := linkNames(links)
	res, errs := k.apply(ctx, ds, p, names)
	k.record(ds, &res, names, start)
	return res, joinErrors(errs)
}

// outcome is where a desired route stands while Set applies its plan.
type outcome struct {
	state  State
	reason string
}

func (k *Kernel) apply(ctx context.Context, ds *desiredSet, p plan, names map[int]string) (Result, []error) {
	res := Result{Routes: make([]RouteStatus, len(ds.routes))}
	outs := make([]outcome, len(ds.routes))
	var errs []error
	fail := func(i int, o op, err error) {
		err = fmt.Errorf("%s %s: %w", o.verb(), ds.routes[i].format(names), err)
		outs[i] = outcome{state: Failed, reason: "failed: " + err.Error()}
		errs = append(errs, err)
		k.stats.errors.Add(1)
	}

	for i, s := range p.steps {
		switch s.action {
		case actAdopt:
			outs[i] = outcome{state: Installed}
		case actPending:
			outs[i] = outcome{state: Pending, reason: s.reason}
		case actRefuse:
			outs[i] = outcome{state: Refused, reason: s.reason}
		}
	}

	// Device routes first: adding a gateway route checks that the gateway
	// is reachable, which may be through one of them.
	var writes requests
	var owners []int
	for _, gateways := range []bool{false, true} {
		for i, s := range p.steps {
			if r := ds.routes[i]; (s.action == actAdd || s.action == actReplace) && r.Gw.IsValid() == gateways {
				o := opAdd
				if s.action == actReplace {
					o = opReplace
				}
				nr := toNetlink(r)
				writes.add(o, &nr)
				owners = append(owners, i)
			}
		}
	}
	conflicts := map[RouteKey]error{}
	for round := 0; writes.len() > 0; round++ {
		var again requests
		var againOwners []int
		for j, err := range k.w.run(ctx, &writes) {
			i := owners[j]
			r, s := ds.routes[i], p.steps[i]
			o := opAdd
			if s.action == actReplace && round == 0 {
				o = opReplace
			}
			switch {
			case err == nil:
				outs[i] = outcome{state: Installed}
				if o == opReplace {
					res.Replaced++
					k.stats.replaces.Add(1)
					break
				}
				res.Added++
				k.stats.adds.Add(1)
				if s.heal {
					k.stats.heals.Add(1)
				}
			case o == opReplace && errors.Is(err, unix.ENOENT):
				// Our route went between the dump and now: add it afresh.
				nr := toNetlink(r)
				again.add(opAdd, &nr)
				againOwners = append(againOwners, i)
			case o == opAdd && errors.Is(err, unix.EEXIST):
				// Someone took the key after the dump; who, a dump says.
				conflicts[r.Key()] = err
			case errors.Is(err, unix.ENETDOWN):
				outs[i] = outcome{state: Pending, reason: fmt.Sprintf("pending: link %s is down", linkName(names, r.LinkIndex))}
			case errors.Is(err, unix.ENODEV):
				outs[i] = outcome{state: Pending, reason: fmt.Sprintf("pending: link %s does not exist", linkName(names, r.LinkIndex))}
			case errors.Is(err, unix.ENETUNREACH), errors.Is(err, unix.EHOSTUNREACH):
				// No connected route covers the gateway: its address is not
				// (or no longer: IPv6 drops addresses when a link goes down)
				// on the link. Watch notifies when one comes.
				outs[i] = outcome{state: Pending, reason: fmt.Sprintf("pending: gateway %s is not reachable through %s", r.Gw, linkName(names, r.LinkIndex))}
			default:
				fail(i, o, err)
			}
		}
		writes, owners = again, againOwners
	}
	if len(conflicts) > 0 {
		k.explainConflicts(ds, conflicts, outs, names, fail)
	}

	var dels requests
	for _, own := range p.deletes {
		nr := deleteRequest(own)
		dels.add(opDelete, &nr)
	}
	for j, err := range k.w.run(ctx, &dels) {
		switch {
		case err == nil:
			res.Deleted++
			k.stats.deletes.Add(1)
		case errors.Is(err, unix.ESRCH), errors.Is(err, unix.ENOENT):
			// Gone already, which is what we wanted.
		default:
			errs = append(errs, fmt.Errorf("deleting %s: %w", p.deletes[j].format(names), err))
			k.stats.errors.Add(1)
		}
	}

	for i, r := range ds.routes {
		if p.steps[i].action == 0 { // a repeat: it shares the outcome of the route holding its key
			outs[i] = outs[ds.owner[r.Key()]]
		}
		res.Routes[i] = RouteStatus{Route: r, State: outs[i].state, Reason: outs[i].reason}
	}
	return res, errs
}

// explainConflicts looks again at the keys where an add met EEXIST: a route
// of another protocol makes the desired one refused; our own equal route
// (another writer got there first) makes it installed.
func (k *Kernel) explainConflicts(ds *desiredSet, conflicts map[RouteKey]error, outs []outcome, names map[int]string, fail func(int, op, error)) {
	var routes []Route
	for key := range conflicts {
		routes = append(routes, ds.routes[ds.owner[key]])
	}
	held := newDesiredSet(routes)
	ks, err := k.list(held)
	for j, r := range held.routes {
		key := r.Key()
		i, addErr := ds.owner[key], conflicts[key]
		switch {
		case err != nil:
			fail(i, opAdd, fmt.Errorf("%w (and looking for the route holding it: %w)", addErr, err))
		case len(ks.foreign[key]) > 0:
			outs[i] = outcome{state: Refused, reason: "refused: conflicts with " + describeKernelRoute(&ks.foreign[key][0], names)}
		default:
			if ks.found[j] && ks.held[j].exact && ks.held[j].route == r {
				outs[i] = outcome{state: Installed}
				continue
			}
			fail(i, opAdd, addErr)
		}
	}
}

// record keeps what Set reached for the next one and logs what changed.
func (k *Kernel) record(ds *desiredSet, res *Result, names map[int]string, start time.Time) {
	now := time.Now()
	reasons := map[RouteKey]string{}
	installed := 0
	// k.installed is updated in place: rebuilding it each time would cost
	// a no-op Set over 100,000 routes as much again.
	for i := range res.Routes {
		if !ds.owns[i] {
			continue // invalid, or a repeat of the route holding its key
		}
		st := &res.Routes[i]
		key := st.Route.Key()
		if st.State == Installed {
			installed++
			if prev, ok := k.installed[key]; ok && prev.route == st.Route {
				st.Since = prev.since
				continue
			}
			st.Since = now
			k.installed[key] = installedRoute{route: st.Route, since: now}
			continue
		}
		delete(k.installed, key)
		reasons[key] = st.Reason
		if k.reasons[key] != st.Reason {
			level := slog.LevelWarn
			if st.State == Pending {
				level = slog.LevelInfo
			}
			k.log.Log(context.Background(), level, "kernel route not installed", "route", st.Route.format(names), "reason", st.Reason)
		}
	}
	for i := range res.Routes {
		if st := &res.Routes[i]; !ds.owns[i] && st.State == Installed {
			st.Since = res.Routes[ds.owner[st.Route.Key()]].Since
		}
	}
	if len(k.installed) != installed { // some are no longer desired
		for key := range k.installed {
			if i, ok := ds.owner[key]; !ok || res.Routes[i].State != Installed {
				delete(k.installed, key)
			}
		}
	}
	invalid := make(map[string]bool, len(ds.invalid))
	for i := range ds.invalid {
		reason := res.Routes[i].Reason
		invalid[reason] = true
		if !k.invalid[reason] {
			k.log.Warn("kernel route not installed", "reason", reason)
		}
	}
	k.reasons, k.invalid = reasons, invalid
	level := slog.LevelDebug
	if res.Added+res.Replaced+res.Deleted > 0 {
		level = slog.LevelInfo
	}
	k.log.Log(context.Background(), level, "kernel routes reconciled",
		"desired", len(ds.routes), "installed", installed, "pending", res.Count(Pending),
		"refused", res.Count(Refused), "failed", res.Count(Failed),
		"added", res.Added, "replaced", res.Replaced, "deleted", res.Deleted, "took", time.Since(start))
}

func (k *Kernel) publish(ds *desiredSet) { k.want.Store(ds) }

// list reads the kernel's routes, one dump per family over all tables,
// keeping ours in the tables Set owns and other protocols' routes at keys
// of ds. A dump that another writer interrupted is done again.
func (k *Kernel) list(ds *desiredSet) (*kernelState, error) {
	manages := func(table int) bool { return k.tables[table] }
	var ks *kernelState
	err := retryInterrupted(func() error {
		ks = newKernelState(ds)
		// The netlink library drops the IP encapsulation of the routes it
		// parses; a second, raw dump reads it, while any route has one.
		var encaps map[encapKey]Encap
		if ds.encaps || k.sawEncaps {
			var err error
			if encaps, err = readEncaps(k.ns); err != nil {
				return fmt.Errorf("listing IPv4 route encapsulations: %w", err)
			}
			k.sawEncaps = len(encaps) > 0
		}
		for _, f := range families {
			err := k.h.RouteListFilteredIter(f.af, &netlink.Route{}, netlink.RT_FILTER_TABLE, func(nr netlink.Route) bool {
				if key, ok := kernelKey(&nr); ok && nr.Encap == nil && int(nr.Protocol) == Protocol && len(encaps) > 0 {
					if e, ok := encaps[key]; ok {
						nr.Encap = &ipEncap{e}
					}
				}
				ks.observe(&nr, ds, manages)
				return true
			})
			if err != nil {
				return fmt.Errorf("listing %s routes: %w", f.name, err)
			}
		}
		return nil
	})
	return ks, err
}

func (k *Kernel) links() (map[int]linkState, error) {
	var list []netlink.Link
	err := retryInterrupted(func() (err error) {
		list, err = k.h.LinkList()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	links := make(map[int]linkState, len(list))
	for _, l := range list {
		a := l.Attrs()
		links[a.Index] = linkState{name: a.Name, up: a.Flags&net.FlagUp != 0}
	}
	return links, nil
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

// Cleanup deletes every route of protocol 201 in every table, for
// uninstalling the agent. It returns how many it deleted.
func (k *Kernel) Cleanup(ctx context.Context) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	// Every table is ours to clean, no route is desired.
	none := newDesiredSet(nil)
	var ks *kernelState
	err := retryInterrupted(func() error {
		ks = newKernelState(none)
		for _, f := range families {
			filter := &netlink.Route{Protocol: Protocol}
			err := k.h.RouteListFilteredIter(f.af, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL, func(nr netlink.Route) bool {
				ks.observe(&nr, none, func(int) bool { return true })
				return true
			})
			if err != nil {
				return fmt.Errorf("listing %s routes: %w", f.name, err)
			}
		}
		return nil
	})
	if err != nil {
		k.stats.errors.Add(1)
		return 0, err
	}
	ours := ks.others
	var dels requests
	for _, own := range ours {
		nr := deleteRequest(own)
		dels.add(opDelete, &nr)
	}
	n := 0
	var errs []error
	for i, err := range k.w.run(ctx, &dels) {
		switch {
		case err == nil:
			n++
			k.stats.deletes.Add(1)
		case errors.Is(err, unix.ESRCH), errors.Is(err, unix.ENOENT):
		default:
			errs = append(errs, fmt.Errorf("deleting %s: %w", ours[i].format(nil), err))
			k.stats.errors.Add(1)
		}
	}
	k.installed = map[RouteKey]installedRoute{}
	k.publish(newDesiredSet(nil))
	k.log.Info("kernel routes cleaned up", "deleted", n, "failed", len(errs))
	return n, joinErrors(errs)
}

// maxErrors bounds the errors Set returns, so that a kernel refusing
// 100,000 routes gives a readable error.
const maxErrors = 10

func joinErrors(errs []error) error {
	if len(errs) > maxErrors {
		errs = append(errs[:maxErrors:maxErrors], fmt.Errorf("and %d more route errors", len(errs)-maxErrors))
	}
	return errors.Join(errs...)
}
