package routing

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// lab is a namespace with two veth pairs: eth0 (10.0.0.1/24, fd00::1/64)
// and eth1 (10.1.0.1/24, fd01::1/64).
type lab struct {
	*testNS
	eth0, eth1 int
}

func newLab(t *testing.T) *lab {
	n := newTestNS(t)
	return &lab{
		testNS: n,
		eth0:   n.veth(t, "eth0", "peer0", "10.0.0.1/24", "fd00::1/64"),
		eth1:   n.veth(t, "eth1", "peer1", "10.1.0.1/24", "fd01::1/64"),
	}
}

func route(dst, gw string, link int) Route {
	r := Route{Dst: netip.MustParsePrefix(dst), LinkIndex: link}
	if gw != "" {
		r.Gw = netip.MustParseAddr(gw)
	}
	return r
}

// sorted formats routes as sorted lines, to compare sets of routes.
func sorted[M ~map[RouteKey]Route](m M) []string {
	var out []string
	for _, r := range m {
		out = append(out, r.normalize().String())
	}
	slices.Sort(out)
	return out
}

func byKey(routes ...Route) map[RouteKey]Route {
	m := map[RouteKey]Route{}
	for _, r := range routes {
		m[r.Key()] = r
	}
	return m
}

// assertOurs checks that the kernel's routes of protocol 201 are exactly want.
func (l *lab) assertOurs(t *testing.T, want ...Route) {
	t.Helper()
	if diff := cmp.Diff(sorted(byKey(want...)), sorted(l.routes(t, Protocol))); diff != "" {
		t.Errorf("kernel routes of protocol %d (-want +got):\n%s", Protocol, diff)
	}
}

// foreign returns the routes of every other protocol, to check that they
// stay as they were. It leaves out what the kernel adds by itself, when it
// likes, as links come up: the local table, IPv6 link-local and multicast.
func (l *lab) foreign(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, nr := range l.kernelRoutes(t, -1) {
		if int(nr.Protocol) == Protocol || nr.Table == markerTable || nr.Table == unix.RT_TABLE_LOCAL ||
			nr.Dst.IP.IsLinkLocalUnicast() || nr.Dst.IP.IsMulticast() {
			continue
		}
		out = append(out, nr.String()+" proto "+nr.Protocol.String())
	}
	slices.Sort(out)
	return out
}

func states(res Result) []string {
	var out []string
	for _, st := range res.Routes {
		s := st.Route.String() + ": " + st.State.String()
		if st.Reason != "" {
			s += " (" + st.Reason + ")"
		}
		out = append(out, s)
	}
	return out
}

func TestSetAddsReplacesAndDeletes(t *testing.T) {
	l := newLab(t)
	k := l.kernel(t)
	a := route("10.5.1.0/24", "10.0.0.2", l.eth0)
	b := route("10.5.2.0/24", "", l.eth1)
	c := Route{Dst: netip.MustParsePrefix("10.5.3.0/24"), Gw: netip.MustParseAddr("192.0.2.1"), LinkIndex: l.eth1, OnLink: true, Table: 100, MTU: 1400}
	a6 := route("fd05:1::/64", "fd00::2", l.eth0)
	b6 := route("fd05:2::/64", "", l.eth1)

	res := mustSet(t, k, []Route{a, b, c, a6, b6})
	if res.Added != 5 || res.Count(Installed) != 5 {
		t.Errorf("first Set: %+v, want 5 added and installed", states(res))
	}
	l.assertOurs(t, a, b, c, a6, b6)

	a2 := route("10.5.1.0/24", "10.0.0.3", l.eth0)
	c2 := c
	c2.MTU = 1300
	b62 := route("fd05:2::/64", "fd01::2", l.eth1)
	res = mustSet(t, k, []Route{a2, b, c2, a6, b62})
	if res.Replaced != 3 || res.Added != 0 || res.Deleted != 0 {
		t.Errorf("second Set replaced %d, added %d, deleted %d; want 3, 0, 0", res.Replaced, res.Added, res.Deleted)
	}
	l.assertOurs(t, a2, b, c2, a6, b62)

	res = mustSet(t, k, []Route{b})
	if res.Deleted != 4 {
		t.Errorf("third Set deleted %d, want 4", res.Deleted)
	}
	l.assertOurs(t, b)
	res = mustSet(t, k, nil)
	l.assertOurs(t)
	if got, want := k.Stats(), (Stats{Adds: 5, Replaces: 3, Deletes: 5}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
}

func TestSetTwiceWritesNothing(t *testing.T) {
	l := newLab(t)
	k := l.kernel(t)
	routes := []Route{
		route("10.5.1.0/24", "10.0.0.2", l.eth0),
		route("fd05:1::/64", "", l.eth0),
		{Dst: netip.MustParsePrefix("10.5.3.0/24"), Gw: netip.MustParseAddr("192.0.2.1"), LinkIndex: l.eth0, OnLink: true, Table: 100, MTU: 1400},
		{Dst: netip.MustParsePrefix("fd05:3::/64"), Gw: netip.MustParseAddr("fd99::1"), LinkIndex: l.eth0, OnLink: true, MTU: 1280},
		route("10.5.4.0/24", "10.1.0.2", l.eth1), // pending: eth1 is down
	}
	l.down(t, l.link(t, "eth1"))
	first := mustSet(t, k, routes)
	events := l.events(t)
	l.settle(t, events)
	before := k.Stats()
	again := mustSet(t, k, routes)
	if seen := l.settle(t, events); len(seen) != 0 {
		t.Errorf("the second Set changed %d kernel routes, want none: %v", len(seen), seen)
	}
	if after := k.Stats(); after != before {
		t.Errorf("the second Set wrote: stats %+v, then %+v", before, after)
	}
	if diff := cmp.Diff(states(first), states(again)); diff != "" {
		t.Errorf("the second Set reached another state (-first +second):\n%s", diff)
	}
	for i, st := range again.Routes {
		if st.State == Installed && !st.Since.Equal(first.Routes[i].Since) {
			t.Errorf("%s: installed since %v, then since %v", st.Route, first.Routes[i].Since, st.Since)
		}
	}
}

func TestSetAdoptsWhatTheKernelHolds(t *testing.T) {
	l := newLab(t)
	routes := []Route{
		route("10.5.1.0/24", "10.0.0.2", l.eth0),
		route("10.5.2.0/24", "", l.eth1),
		{Dst: netip.MustParsePrefix("10.5.3.0/24"), Gw: netip.MustParseAddr("192.0.2.1"), LinkIndex: l.eth1, OnLink: true, Table: 100, MTU: 1400},
		route("fd05:1::/64", "fd00::2", l.eth0),
		route("fd05:2::/64", "", l.eth1),
	}
	// An earlier run of the agent left these.
	earlier := l.kernel(t)
	mustSet(t, earlier, routes)

	k := l.kernel(t)
	events := l.events(t)
	res := mustSet(t, k, routes)
	if seen := l.settle(t, events); len(seen) != 0 {
		t.Errorf("adopting changed %d kernel routes, want none: %v", len(seen), seen)
	}
	if got := k.Stats(); got != (Stats{}) {
		t.Errorf("adopting wrote: %+v", got)
	}
	if res.Count(Installed) != len(routes) {
		t.Errorf("adopted routes: %v", states(res))
	}
	for _, st := range res.Routes {
		if st.Since.IsZero() {
			t.Errorf("%s: no installed-since time", st.Route)
		}
	}
}

func TestSetDeletesLeftovers(t *testing.T) {
	l := newLab(t)
	keep := route("10.5.1.0/24", "10.0.0.2", l.eth0)
	// An earlier run left routes no longer desired, in main and in a table
	// it owned, and one at a metric the agent never uses.
	earlier := l.kernel(t)
	mustSet(t, earlier, []Route{
		keep,
		route("10.5.2.0/24", "", l.eth1),
		route("fd05:1::/64", "fd00::2", l.eth0),
		{Dst: netip.MustParsePrefix("10.5.9.0/24"), LinkIndex: l.eth0, Table: 100},
	})
	stray := toNetlink(route("10.5.7.0/24", "10.0.0.7", l.eth0))
	stray.Priority = 50
	l.addRoute(t, stray)

	k, err := NewKernel(Options{NetNS: l.ns, Logger: testLogger(t), Tables: []int{100}})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	res := mustSet(t, k, []Route{keep})
	if res.Deleted != 4 || res.Added != 0 {
		t.Errorf("deleted %d, added %d; want 4, 0", res.Deleted, res.Added)
	}
	l.assertOurs(t, keep)
}

func TestSetRefusesKeysOfOtherProtocols(t *testing.T) {
	l := newLab(t)
	// An operator's static route, and the kernel's connected route for eth1.
	l.addRoute(t, staticRoute("10.5.1.0/24", "10.0.0.9", l.eth0))
	l.addRoute(t, staticRoute("fd05:1::/64", "fd00::9", l.eth0))
	foreign := l.foreign(t)
	k := l.kernel(t)
	routes := []Route{
		route("10.5.1.0/24", "10.0.0.2", l.eth0),
		route("10.1.0.0/24", "", l.eth1),
		route("fd05:1::/64", "fd00::2", l.eth0),
		route("10.5.2.0/24", "10.0.0.2", l.eth0),
	}
	res, err := k.Set(context.Background(), routes)
	if err != nil {
		t.Errorf("Set: %v; a refusal is not an error", err)
	}
	want := []string{
		"10.5.1.0/24 via 10.0.0.2 dev " + "if" + itoa(l.eth0) + ": refused (refused: conflicts with a route of protocol static (4) via 10.0.0.9 dev eth0)",
		"10.1.0.0/24 dev if" + itoa(l.eth1) + ": refused (refused: conflicts with a route of protocol kernel (2) dev eth1)",
		"fd05:1::/64 via fd00::2 dev if" + itoa(l.eth0) + ": refused (refused: conflicts with a route of protocol static (4) via fd00::9 dev eth0)",
		"10.5.2.0/24 via 10.0.0.2 dev if" + itoa(l.eth0) + ": installed",
	}
	if diff := cmp.Diff(want, states(res)); diff != "" {
		t.Errorf("states (-want +got):\n%s", diff)
	}
	l.assertOurs(t, routes[3])
	if diff := cmp.Diff(foreign, l.foreign(t)); diff != "" {
		t.Errorf("other protocols' routes changed (-before +after):\n%s", diff)
	}
	// And again: still refused, nothing written.
	before := k.Stats()
	mustSet(t, k, routes)
	if after := k.Stats(); after != before {
		t.Errorf("Set again wrote: %+v, then %+v", before, after)
	}
}

// TestSetRefusesARouteAddedAfterTheDump makes the kernel refuse the add:
// the foreign route arrives between Set's dump and its write.
func TestSetRefusesARouteAddedAfterTheDump(t *testing.T) {
	l := newLab(t)
	k := l.kernel(t)
	r := route("10.5.1.0/24", "10.0.0.2", l.eth0)
	ds := newDesiredSet([]Route{r})
	ks, err := k.list(ds)
	if err != nil {
		t.Fatal(err)
	}
	links, err := k.links()
	if err != nil {
		t.Fatal(err)
	}
	l.addRoute(t, staticRoute("10.5.1.0/24", "10.0.0.9", l.eth0))
	res, errs := k.apply(context.Background(), ds, makePlan(ds, ks, links, nil), linkNames(links))
	if len(errs) != 0 {
		t.Errorf("apply: %v", errs)
	}
	if st := res.Routes[0]; st.State != Refused || !strings.Contains(st.Reason, "protocol static (4) via 10.0.0.9 dev eth0") {
		t.Errorf("status %+v, want refused for the static route", st)
	}
	if got := l.routes(t, unix.RTPROT_STATIC); len(got) != 1 {
		t.Errorf("static routes: %v", got)
	}
}

func TestSetLeavesOtherRoutesAlone(t *testing.T) {
	l := newLab(t)
	l.addRoute(t, staticRoute("0.0.0.0/0", "10.0.0.254", l.eth0))
	l.addRoute(t, staticRoute("::/0", "fd00::fe", l.eth0))
	l.addRoute(t, staticRoute("10.5.1.7/32", "10.0.0.9", l.eth0)) // inside a desired prefix
	other := staticRoute("10.5.2.0/24", "10.0.0.9", l.eth0)
	other.Table = 100 // in a table the agent uses
	l.addRoute(t, other)
	foreign := l.foreign(t)

	k := l.kernel(t)
	routes := []Route{
		route("10.5.1.0/24", "10.0.0.2", l.eth0),
		{Dst: netip.MustParsePrefix("10.5.3.0/24"), Gw: netip.MustParseAddr("10.0.0.2"), LinkIndex: l.eth0, Table: 100},
		route("0.0.0.0/0", "10.1.0.2", l.eth1), // would take the namespace's default route over
	}
	res := mustSet(t, k, routes)
	if got := res.Routes[2]; got.State != Refused || !strings.Contains(got.Reason, "protocol static (4) via 10.0.0.254 dev eth0") {
		t.Errorf("default route: %+v, want refused", got)
	}
	l.assertOurs(t, routes[0], routes[1])
	mustSet(t, k, nil)
	if _, err := k.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	l.assertOurs(t)
	if diff := cmp.Diff(foreign, l.foreign(t)); diff != "" {
		t.Errorf("other protocols' routes changed (-before +after):\n%s", diff)
	}
}

func TestSetPendingWhileLinkIsDown(t *testing.T) {
	l := newLab(t)
	k := l.kernel(t)
	eth1 := l.link(t, "eth1")
	l.down(t, eth1)
	routes := []Route{
		route("10.5.1.0/24", "10.0.0.2", l.eth0),
		route("10.5.2.0/24", "10.1.0.2", l.eth1),
		route("fd05:2::/64", "", l.eth1),
		route("10.5.3.0/24", "", 999),
	}
	res, err := k.Set(context.Background(), routes)
	if err != nil {
		t.Errorf("Set: %v; a pending route is not an error", err)
	}
	want := []State{Installed, Pending, Pending, Pending}
	for i, st := range res.Routes {
		if st.State != want[i] {
			t.Errorf("%s: %s (%s), want %s", st.Route, st.State, st.Reason, want[i])
		}
	}
	if got := res.Routes[1].Reason; got != "pending: link eth1 is down" {
		t.Errorf("reason %q", got)
	}
	if got := res.Routes[3].Reason; got != "pending: link if999 does not exist" {
		t.Errorf("reason %q", got)
	}
	l.up(t, eth1)
	res = mustSet(t, k, routes)
	if res.Count(Installed) != 3 {
		t.Errorf("after the link came up: %v", states(res))
	}
	l.assertOurs(t, routes[:3]...)
}

func TestCleanupDeletesOnlyOurRoutes(t *testing.T) {
	l := newLab(t)
	l.addRoute(t, staticRoute("10.9.0.0/16", "10.0.0.9", l.eth0))
	l.addRoute(t, staticRoute("fd09::/64", "fd00::9", l.eth0))
	foreign := l.foreign(t)
	earlier := l.kernel(t)
	mustSet(t, earlier, []Route{
		route("10.5.1.0/24", "10.0.0.2", l.eth0),
		route("fd05:1::/64", "", l.eth1),
		{Dst: netip.MustParsePrefix("10.5.3.0/24"), LinkIndex: l.eth1, Table: 4000},
	})
	k := l.kernel(t)
	n, err := k.Cleanup(context.Background())
	if err != nil || n != 3 {
		t.Errorf("Cleanup = %d, %v; want 3, nil", n, err)
	}
	l.assertOurs(t)
	if diff := cmp.Diff(foreign, l.foreign(t)); diff != "" {
		t.Errorf("other protocols' routes changed (-before +after):\n%s", diff)
	}
	if n, err := k.Cleanup(context.Background()); n != 0 || err != nil {
		t.Errorf("Cleanup again = %d, %v; want 0, nil", n, err)
	}
}

func TestSetReportsKernelErrors(t *testing.T) {
	l := newLab(t)
	k := l.kernel(t)
	routes := []Route{
		route("10.5.1.0/24", "10.0.0.255", l.eth0), // the broadcast address
		route("10.5.2.0/24", "10.0.0.2", l.eth0),
		route("10.5.3.0/24", "10.9.9.9", l.eth0), // on no connected prefix, and not onlink
		route("fd05:3::/64", "fd09::1", l.eth0),
	}
	res, err := k.Set(context.Background(), routes)
	if err == nil || !errors.Is(err, unix.EINVAL) || !strings.HasPrefix(err.Error(), "adding 10.5.1.0/24 via 10.0.0.255 dev eth0: invalid argument") {
		t.Errorf("Set error = %v, want one naming the route and wrapping EINVAL", err)
	}
	want := []string{
		"10.5.1.0/24 via 10.0.0.255 dev if" + itoa(l.eth0) + ": failed (failed: " + err.Error() + ")",
		"10.5.2.0/24 via 10.0.0.2 dev if" + itoa(l.eth0) + ": installed",
		"10.5.3.0/24 via 10.9.9.9 dev if" + itoa(l.eth0) + ": pending (pending: gateway 10.9.9.9 is not reachable through eth0)",
		"fd05:3::/64 via fd09::1 dev if" + itoa(l.eth0) + ": pending (pending: gateway fd09::1 is not reachable through eth0)",
	}
	if diff := cmp.Diff(want, states(res)); diff != "" {
		t.Errorf("states (-want +got):\n%s", diff)
	}
	if got := k.Stats().Errors; got != 1 {
		t.Errorf("Stats().Errors = %d, want 1", got)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
