package routing

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// TestSetStateSequence applies a table of desired states in random order
// and checks after every transition that the kernel's routes of protocol
// 201 are exactly the desired ones, and that the routes of other protocols
// set up at the start are as they were.
func TestSetStateSequence(t *testing.T) {
	l := newLab(t)
	// Other protocols' routes: the namespace's default routes, a host route
	// inside a desired prefix, a route in a table the agent uses, and one
	// that holds a key a state wants.
	l.addRoute(t, staticRoute("0.0.0.0/0", "10.0.0.254", l.eth0))
	l.addRoute(t, staticRoute("::/0", "fd00::fe", l.eth0))
	l.addRoute(t, staticRoute("10.5.1.7/32", "10.1.0.9", l.eth1))
	inTable := staticRoute("10.9.0.0/16", "10.0.0.9", l.eth0)
	inTable.Table = 100
	l.addRoute(t, inTable)
	l.addRoute(t, staticRoute("10.5.8.0/24", "10.0.0.8", l.eth0))
	foreign := l.foreign(t)

	pfx, addr := netip.MustParsePrefix, netip.MustParseAddr
	type state struct {
		name    string
		desired []Route
		refused int // routes another protocol's route keeps out
	}
	states := []state{
		{name: "empty"},
		{name: "IPv4", desired: []Route{
			route("10.5.1.0/24", "10.0.0.2", l.eth0),
			route("10.5.2.0/24", "", l.eth1),
			{Dst: pfx("10.5.3.0/24"), Gw: addr("192.0.2.1"), LinkIndex: l.eth1, OnLink: true, Table: 100, MTU: 1400},
		}},
		{name: "IPv4, other gateways and devices", desired: []Route{
			route("10.5.1.0/24", "10.1.0.2", l.eth1),
			route("10.5.2.0/24", "10.0.0.3", l.eth0),
			{Dst: pfx("10.5.3.0/24"), Gw: addr("192.0.2.1"), LinkIndex: l.eth1, Table: 100, OnLink: true},
		}},
		{name: "IPv6", desired: []Route{
			route("fd05:1::/64", "fd00::2", l.eth0),
			route("fd05:2::/64", "", l.eth1),
			{Dst: pfx("fd05:3::/64"), Gw: addr("fd99::1"), LinkIndex: l.eth0, OnLink: true, MTU: 1280},
		}},
		{name: "both families, a conflict", refused: 1, desired: []Route{
			route("10.5.1.0/24", "10.0.0.2", l.eth0),
			route("fd05:1::/64", "fd01::2", l.eth1),
			{Dst: pfx("10.5.4.0/24"), LinkIndex: l.eth0, Table: 200},
			{Dst: pfx("fd05:4::/64"), Gw: addr("fd00::4"), LinkIndex: l.eth0, Table: 200},
			route("10.5.8.0/24", "10.0.0.2", l.eth0), // the static route holds it
		}},
		{name: "many", desired: append(manyRoutes(200, "10.0.0.2", l.eth0), manyRoutes6(100, "fd01::2", l.eth1)...)},
	}

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, seed))
	k := l.kernel(t)
	prev := "none"
	for step := range 50 {
		s := states[rnd.IntN(len(states))]
		// A reordered list is the same desired state.
		desired := append([]Route(nil), s.desired...)
		rnd.Shuffle(len(desired), func(i, j int) { desired[i], desired[j] = desired[j], desired[i] })
		res, err := k.Set(t.Context(), desired)
		if err != nil {
			t.Fatalf("step %d, %s -> %s: Set: %v", step, prev, s.name, err)
		}
		want := map[RouteKey]Route{}
		for _, st := range res.Routes {
			if st.State == Installed {
				want[st.Route.Key()] = st.Route
			}
		}
		if got := res.Count(Refused); got != s.refused || len(want) != len(desired)-s.refused {
			t.Errorf("step %d, %s -> %s: %d installed, %d refused; want %d, %d", step, prev, s.name, len(want), got, len(desired)-s.refused, s.refused)
		}
		if diff := cmp.Diff(sorted(want), sorted(l.routes(t, Protocol))); diff != "" {
			t.Errorf("step %d, %s -> %s: kernel routes of protocol %d (-want +got):\n%s", step, prev, s.name, Protocol, diff)
		}
		if diff := cmp.Diff(foreign, l.foreign(t)); diff != "" {
			t.Errorf("step %d, %s -> %s: other protocols' routes changed (-before +after):\n%s", step, prev, s.name, diff)
		}
		// The same state again writes nothing.
		before := k.Stats()
		if _, err := k.Set(t.Context(), desired); err != nil {
			t.Fatalf("step %d, %s again: %v", step, s.name, err)
		}
		if after := k.Stats(); after != before {
			t.Errorf("step %d, %s again wrote: %+v, then %+v", step, s.name, before, after)
		}
		if t.Failed() {
			t.FailNow()
		}
		prev = s.name
	}
	if s := k.Stats(); s.Errors != 0 || s.Heals != 0 {
		t.Errorf("Stats() = %+v, want no errors and no heals", s)
	}
	mustSet(t, k, nil)
	l.assertOurs(t)
	if got := l.routes(t, unix.RTPROT_STATIC); len(got) != 5 {
		t.Errorf("%d static routes left, want 5", len(got))
	}
}

// manyRoutes6 returns n distinct /64s from fd64:: on, via gw.
func manyRoutes6(n int, gw string, link int) []Route {
	routes := make([]Route, n)
	for i := range routes {
		a := netip.AddrFrom16([16]byte{0xfd, 0x64, 0, 0, byte(i >> 8), byte(i)})
		routes[i] = route(netip.PrefixFrom(a, 64).String(), gw, link)
	}
	return routes
}
