package allocator

import (
	"fmt"
	"net/netip"
	"time"

	"routeagent.io/route-agent/bgp/config"
)

// BenchAssign measures assigning n Services from fresh pools: one in four
// dual-stack, one in eight sharing an address with its neighbour, as a
// busy cluster might ask. It returns the time the assignments took and an
// error if any failed or two Services got an address they may not share.
func BenchAssign(n int) (time.Duration, error) {
	const maxN = 1 << 22 // the IPv4 pool below, less avoid-buggy-ips
	if n < 0 || n > maxN {
		return 0, fmt.Errorf("bench size %d out of range [0, %d]", n, maxN)
	}
	a := New()
	a.SetPools([]config.Pool{
		{Name: "v4", AutoAssign: true, AvoidBuggyIPs: true, Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/9")}},
		{Name: "dual", AutoAssign: true, Prefixes: []netip.Prefix{
			netip.MustParsePrefix("10.128.0.0/9"), netip.MustParsePrefix("fd00::/64"),
		}},
	})
	keys := make([]string, n)
	reqs := make([]Request, n)
	for i := range n {
		keys[i] = fmt.Sprintf("ns%d/svc%d", i%50, i)
		reqs[i] = Request{Families: []Family{IPv4}, Ports: []Port{{Protocol: "TCP", Port: 80}}}
		if i%4 == 3 {
			reqs[i].Families = []Family{IPv4, IPv6}
		}
		if i%8 >= 6 {
			// Two Services per key, on different ports.
			reqs[i].SharingKey = fmt.Sprintf("share%d", i/8)
			reqs[i].Ports = []Port{{Protocol: "TCP", Port: int32(8000 + i%8)}}
		}
	}
	start := time.Now()
	for i := range n {
		if _, err := a.Assign(keys[i], reqs[i]); err != nil {
			return 0, fmt.Errorf("assigning %s: %w", keys[i], err)
		}
	}
	elapsed := time.Since(start)
	users := map[netip.Addr][]int{}
	for i := range n {
		as, _ := a.Lookup(keys[i])
		for _, x := range as.Addrs {
			users[x] = append(users[x], i)
		}
	}
	for x, idx := range users {
		if len(idx) > 1 && (reqs[idx[0]].SharingKey == "" || reqs[idx[0]].SharingKey != reqs[idx[1]].SharingKey) {
			return elapsed, fmt.Errorf("address %s handed out to %s and %s", x, keys[idx[0]], keys[idx[1]])
		}
	}
	return elapsed, nil
}
