package allocator

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"routeagent.io/route-agent/bgp/config"
)

const basePools = `
address-pools:
- name: small
  protocol: bgp
  addresses: [192.0.2.0/31, 192.0.2.10-192.0.2.11]
- name: manual
  protocol: bgp
  auto-assign: false
  addresses: [198.51.100.0/24]
- name: buggy
  protocol: bgp
  avoid-buggy-ips: true
  addresses: [203.0.113.255-203.0.114.1]
`

const dualPools = `
address-pools:
- name: v4
  protocol: bgp
  addresses: [192.0.2.0/30]
- name: dual
  protocol: bgp
  addresses: [198.51.100.0/30, "2001:db8::/126"]
`

func parsePools(t testing.TB, yaml string) []config.Pool {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("parsing pools: %v", err)
	}
	return cfg.Pools
}

var (
	v4   = []Family{IPv4}
	v6   = []Family{IPv6}
	dual = []Family{IPv4, IPv6}
)

func tcp(ports ...int32) []Port {
	var out []Port
	for _, p := range ports {
		out = append(out, Port{Protocol: "TCP", Port: p})
	}
	return out
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// step is one thing that happens to the allocator.
type step struct {
	svc     string
	req     Request
	release bool
	// pools, when set, replaces the pools before the step; a step with
	// only pools set does nothing else.
	pools string
}

// outcome is what a step returned, or what the Service holds after it.
type outcome struct {
	Addrs    []string
	Pool     string
	Orphaned bool
	Reason   Reason
	Err      string
}

func outcomeOf(as Assignment, err error) outcome {
	o := outcome{Pool: as.Pool, Orphaned: as.Orphaned}
	for _, x := range as.Addrs {
		o.Addrs = append(o.Addrs, x.String())
	}
	if err != nil {
		o.Reason, o.Err = ReasonOf(err), err.Error()
	}
	return o
}

func run(t *testing.T, pools string, steps []step) []outcome {
	t.Helper()
	a := New()
	a.SetPools(parsePools(t, pools))
	var got []outcome
	for _, s := range steps {
		if s.pools != "" {
			a.SetPools(parsePools(t, s.pools))
			if s.svc == "" {
				continue
			}
		}
		if s.release {
			as, _ := a.Release(s.svc)
			got = append(got, outcomeOf(as, nil))
			continue
		}
		got = append(got, outcomeOf(a.Assign(s.svc, s.req)))
	}
	return got
}

func TestAssign(t *testing.T) {
	tests := []struct {
		desc  string
		pools string
		steps []step
		want  []outcome
	}{{
		desc:  "auto-assign pools in config order, CIDR then range, first free address",
		pools: basePools,
		steps: []step{
			{svc: "ns/a", req: Request{Families: v4}},
			{svc: "ns/b", req: Request{Families: v4}},
			{svc: "ns/c", req: Request{Families: v4}},
			{svc: "ns/d", req: Request{Families: v4}},
			// small is full, manual is not auto-assign, buggy has
			// one address that is neither .0 nor .255.
			{svc: "ns/e", req: Request{Families: v4}},
			{svc: "ns/f", req: Request{Families: v4}},
		},
		want: []outcome{
			{Addrs: []string{"192.0.2.0"}, Pool: "small"},
			{Addrs: []string{"192.0.2.1"}, Pool: "small"},
			{Addrs: []string{"192.0.2.10"}, Pool: "small"},
			{Addrs: []string{"192.0.2.11"}, Pool: "small"},
			{Addrs: []string{"203.0.114.1"}, Pool: "buggy"},
			{Reason: ReasonPoolExhausted, Err: `no IPv4 address left in auto-assign pools ["small" "buggy"]`},
		},
	}, {
		desc:  "a named pool reaches a pool without auto-assign",
		pools: basePools,
		steps: []step{
			{svc: "ns/a", req: Request{Families: v4, Pool: "manual"}},
			{svc: "ns/b", req: Request{Families: v4, Pool: "manual"}},
		},
		want: []outcome{
			{Addrs: []string{"198.51.100.0"}, Pool: "manual"},
			{Addrs: []string{"198.51.100.1"}, Pool: "manual"},
		},
	}, {
		desc:  "avoid-buggy-ips: .0 and .255 are never handed out, nor requestable",
		pools: basePools,
		steps: []step{
			{svc: "ns/a", req: Request{Families: v4, Pool: "buggy"}},
			{svc: "ns/b", req: Request{Families: v4, Pool: "buggy"}},
			{svc: "ns/c", req: Request{Families: v4, Addrs: addrs("203.0.114.0")}},
			{svc: "ns/d", req: Request{Families: v4, Addrs: addrs("203.0.113.255"), Pool: "buggy"}},
		},
		want: []outcome{
			{Addrs: []string{"203.0.114.1"}, Pool: "buggy"},
			{Reason: ReasonPoolExhausted, Err: `no IPv4 address left in pool "buggy"`},
			{Reason: ReasonNotInPool, Err: "requested address 203.0.114.0 is not in any address pool"},
			{Reason: ReasonNotInPool, Err: `requested address 203.0.113.255 is not in pool "buggy"`},
		},
	}, {
		desc:  "unknown pool",
		pools: basePools,
		steps: []step{{svc: "ns/a", req: Request{Families: v4, Pool: "gold"}}},
		want:  []outcome{{Reason: ReasonUnknownPool, Err: `pool "gold" does not exist`}},
	}, {
		desc:  "requested addresses: free, taken, outside every pool, in another pool",
		pools: basePools,
		steps: []step{
			{svc: "ns/a", req: Request{Families: v4, Addrs: addrs("198.51.100.7")}},
			{svc: "ns/b", req: Request{Families: v4, Addrs: addrs("198.51.100.7")}},
			{svc: "ns/c", req: Request{Families: v4, Addrs: addrs("10.1.2.3")}},
			{svc: "ns/d", req: Request{Families: v4, Addrs: addrs("192.0.2.1"), Pool: "manual"}},
			{svc: "ns/e", req: Request{Families: v4, Addrs: addrs("192.0.2.1"), Pool: "small"}},
			// Auto-assignment skips the requested address.
			{svc: "ns/f", req: Request{Families: v4}},
			{svc: "ns/g", req: Request{Families: v4}},
		},
		want: []outcome{
			{Addrs: []string{"198.51.100.7"}, Pool: "manual"},
			{Reason: ReasonAddressInUse, Err: "address 198.51.100.7 is in use by ns/a, which does not allow sharing"},
			{Reason: ReasonNotInPool, Err: "requested address 10.1.2.3 is not in any address pool"},
			{Reason: ReasonNotInPool, Err: `requested address 192.0.2.1 is in pool "small", not in the requested pool "manual"`},
			{Addrs: []string{"192.0.2.1"}, Pool: "small"},
			{Addrs: []string{"192.0.2.0"}, Pool: "small"},
			{Addrs: []string{"192.0.2.10"}, Pool: "small"},
		},
	}, {
		desc:  "sharing: same key and distinct ports share, a port collision or another key does not",
		pools: basePools,
		steps: []step{
			{svc: "ns/http", req: Request{Families: v4, SharingKey: "web", Ports: tcp(80)}},
			{svc: "ns/https", req: Request{Families: v4, SharingKey: "web", Ports: tcp(443)}},
			{svc: "ns/http2", req: Request{Families: v4, SharingKey: "web", Ports: tcp(80)}},
			{svc: "ns/ssh", req: Request{Families: v4, SharingKey: "admin", Ports: tcp(22)}},
			{svc: "ns/dns", req: Request{Families: v4, Ports: []Port{{Protocol: "UDP", Port: 53}}, Addrs: addrs("192.0.2.0")}},
			{svc: "ns/dns2", req: Request{Families: v4, SharingKey: "web", Ports: tcp(443), Addrs: addrs("192.0.2.0")}},
			{svc: "ns/dns3", req: Request{Families: v4, SharingKey: "web", Ports: []Port{{Protocol: "UDP", Port: 443}}, Addrs: addrs("192.0.2.0")}},
			{svc: "ns/other", req: Request{Families: v4, SharingKey: "admin", Ports: tcp(8080), Addrs: addrs("192.0.2.0")}},
		},
		want: []outcome{
			{Addrs: []string{"192.0.2.0"}, Pool: "small"},
			{Addrs: []string{"192.0.2.0"}, Pool: "small"},
			{Addrs: []string{"192.0.2.1"}, Pool: "small"},
			{Addrs: []string{"192.0.2.10"}, Pool: "small"},
			{Reason: ReasonAddressInUse, Err: "address 192.0.2.0 is in use by ns/http, ns/https and this Service has no sharing key"},
			{Reason: ReasonAddressInUse, Err: "port TCP/443 of address 192.0.2.0 is already used by ns/https"},
			{Addrs: []string{"192.0.2.0"}, Pool: "small"},
			{Reason: ReasonAddressInUse, Err: `address 192.0.2.0 is in use by ns/dns3, ns/http, ns/https with sharing key "web", not "admin"`},
		},
	}, {
		desc:  "sharing with externalTrafficPolicy Local needs the same pods",
		pools: basePools,
		steps: []step{
			{svc: "ns/a", req: Request{Families: v4, SharingKey: "k", BackendKey: "app=a", Ports: tcp(80)}},
			{svc: "ns/b", req: Request{Families: v4, SharingKey: "k", BackendKey: "app=b", Ports: tcp(81)}},
			{svc: "ns/c", req: Request{Families: v4, SharingKey: "k", BackendKey: "app=a", Ports: tcp(82)}},
			{svc: "ns/d", req: Request{Families: v4, SharingKey: "k", Ports: tcp(83), Addrs: addrs("192.0.2.0")}},
		},
		want: []outcome{
			{Addrs: []string{"192.0.2.0"}, Pool: "small"},
			{Addrs: []string{"192.0.2.1"}, Pool: "small"},
			{Addrs: []string{"192.0.2.0"}, Pool: "small"},
			{Reason: ReasonAddressInUse, Err: `address 192.0.2.0 is in use by ns/a, ns/c, which serves externalTrafficPolicy Local with selector "app=a", not externalTrafficPolicy Cluster`},
		},
	}, {
		desc:  "a released address is handed out again first",
		pools: basePools,
		steps: []step{
			{svc: "ns/a", req: Request{Families: v4}},
			{svc: "ns/b", req: Request{Families: v4}},
			{svc: "ns/a", release: true},
			{svc: "ns/c", req: Request{Families: v4}},
			{svc: "ns/d", req: Request{Families: v4}},
			{svc: "ns/a", release: true},
		},
		want: []outcome{
			{Addrs: []string{"192.0.2.0"}, Pool: "small"},
			{Addrs: []string{"192.0.2.1"}, Pool: "small"},
			{Addrs: []string{"192.0.2.0"}, Pool: "small"},
			{Addrs: []string{"192.0.2.0"}, Pool: "small"},
			{Addrs: []string{"192.0.2.10"}, Pool: "small"},
			{},
		},
	}, {
		desc:  "a shared address stays in use until its last user goes",
		pools: basePools,
		steps: []step{
			{svc: "ns/a", req: Request{Families: v4, SharingKey: "k", Ports: tcp(80)}},
			{svc: "ns/b", req: Request{Families: v4, SharingKey: "k", Ports: tcp(81)}},
			{svc: "ns/a", release: true},
			{svc: "ns/c", req: Request{Families: v4}},
			{svc: "ns/b", release: true},
			{svc: "ns/d", req: Request{Families: v4}},
		},
		want: []outcome{
			{Addrs: []string{"192.0.2.0"}, Pool: "small"},
			{Addrs: []string{"192.0.2.0"}, Pool: "small"},
			{Addrs: []string{"192.0.2.0"}, Pool: "small"},
			{Addrs: []string{"192.0.2.1"}, Pool: "small"},
			{Addrs: []string{"192.0.2.0"}, Pool: "small"},
			{Addrs: []string{"192.0.2.0"}, Pool: "small"},
		},
	}, {
		desc:  "dual-stack: one address per family from one pool",
		pools: dualPools,
		steps: []step{
			{svc: "ns/a", req: Request{Families: dual}},
			{svc: "ns/b", req: Request{Families: []Family{IPv6, IPv4}}},
			{svc: "ns/c", req: Request{Families: v6}},
			{svc: "ns/d", req: Request{Families: v4}},
			{svc: "ns/e", req: Request{Families: dual, Addrs: addrs("2001:db8::3", "198.51.100.3")}},
			{svc: "ns/f", req: Request{Families: dual, Addrs: addrs("192.0.2.3", "2001:db8::3")}},
			{svc: "ns/g", req: Request{Families: dual, Pool: "v4"}},
			{svc: "ns/h", req: Request{Families: dual}},
		},
		want: []outcome{
			{Addrs: []string{"198.51.100.0", "2001:db8::"}, Pool: "dual"},
			{Addrs: []string{"2001:db8::1", "198.51.100.1"}, Pool: "dual"},
			{Addrs: []string{"2001:db8::2"}, Pool: "dual"},
			{Addrs: []string{"192.0.2.0"}, Pool: "v4"},
			{Addrs: []string{"198.51.100.3", "2001:db8::3"}, Pool: "dual"},
			{Reason: ReasonInvalidRequest, Err: `requested addresses 192.0.2.3 (pool "v4") and 2001:db8::3 (pool "dual") are in different pools`},
			{Reason: ReasonNoPool, Err: `pool "v4" has no IPv6 addresses`},
			{Reason: ReasonPoolExhausted, Err: `no IPv6 address left in auto-assign pools ["dual"]`},
		},
	}, {
		desc:  "IPv6 wanted but no IPv6 pool",
		pools: basePools,
		steps: []step{
			{svc: "ns/a", req: Request{Families: v6}},
			{svc: "ns/b", req: Request{Families: dual}},
			{svc: "ns/c", req: Request{Families: v6, Addrs: addrs("2001:db8::1")}},
		},
		want: []outcome{
			{Reason: ReasonNoPool, Err: "no auto-assign pool has IPv6 addresses"},
			{Reason: ReasonNoPool, Err: "no auto-assign pool has IPv6 addresses"},
			{Reason: ReasonNotInPool, Err: "requested address 2001:db8::1 is not in any address pool"},
		},
	}, {
		desc:  "invalid requests",
		pools: dualPools,
		steps: []step{
			{svc: "ns/a", req: Request{}},
			{svc: "ns/b", req: Request{Families: dual, Addrs: addrs("198.51.100.1")}},
			{svc: "ns/c", req: Request{Families: v4, Addrs: addrs("2001:db8::1")}},
			{svc: "ns/d", req: Request{Families: v4, Addrs: addrs("198.51.100.1", "198.51.100.2")}},
			{svc: "ns/e", req: Request{Families: []Family{IPv4, IPv4}}},
		},
		want: []outcome{
			{Reason: ReasonInvalidRequest, Err: "no IP family requested"},
			{Reason: ReasonInvalidRequest, Err: "requested addresses 198.51.100.1 do not cover the Service's IP families IPv4,IPv6"},
			{Reason: ReasonInvalidRequest, Err: "requested address 2001:db8::1 is IPv6, but the Service's IP families are IPv4"},
			{Reason: ReasonInvalidRequest, Err: "requested addresses 198.51.100.1 and 198.51.100.2 are both IPv4: at most one per family"},
			{Reason: ReasonInvalidRequest, Err: "IP family IPv4 requested twice"},
		},
	}, {
		desc:  "a changed request moves the Service, keeping what still fits",
		pools: dualPools,
		steps: []step{
			{svc: "ns/a", req: Request{Families: v4}},
			{svc: "ns/a", req: Request{Families: v4}},
			{svc: "ns/a", req: Request{Families: v4, Pool: "dual"}},
			{svc: "ns/a", req: Request{Families: dual}},
			{svc: "ns/a", req: Request{Families: v4}},
			{svc: "ns/a", req: Request{Families: v4, Addrs: addrs("198.51.100.2")}},
			{svc: "ns/b", req: Request{Families: v4}},
		},
		want: []outcome{
			{Addrs: []string{"192.0.2.0"}, Pool: "v4"},
			{Addrs: []string{"192.0.2.0"}, Pool: "v4"},
			{Addrs: []string{"198.51.100.0"}, Pool: "dual"},
			{Addrs: []string{"198.51.100.0", "2001:db8::"}, Pool: "dual"},
			// Dropping IPv6 keeps the IPv4 address: no pool was named.
			{Addrs: []string{"198.51.100.0"}, Pool: "dual"},
			{Addrs: []string{"198.51.100.2"}, Pool: "dual"},
			{Addrs: []string{"192.0.2.0"}, Pool: "v4"},
		},
	}, {
		desc:  "a change that cannot be met keeps the old address",
		pools: basePools,
		steps: []step{
			{svc: "ns/a", req: Request{Families: v4}},
			{svc: "ns/b", req: Request{Families: v4}},
			{svc: "ns/b", req: Request{Families: v4, Addrs: addrs("192.0.2.0")}},
			{svc: "ns/b", req: Request{Families: v4, Pool: "gold"}},
			{svc: "ns/c", req: Request{Families: v4}},
		},
		want: []outcome{
			{Addrs: []string{"192.0.2.0"}, Pool: "small"},
			{Addrs: []string{"192.0.2.1"}, Pool: "small"},
			{Addrs: []string{"192.0.2.1"}, Pool: "small", Reason: ReasonAddressInUse, Err: "address 192.0.2.0 is in use by ns/a, which does not allow sharing"},
			{Addrs: []string{"192.0.2.1"}, Pool: "small", Reason: ReasonUnknownPool, Err: `pool "gold" does not exist`},
			{Addrs: []string{"192.0.2.10"}, Pool: "small"},
		},
	}, {
		desc:  "a removed pool keeps its assignments until the Services go",
		pools: dualPools,
		steps: []step{
			{svc: "ns/a", req: Request{Families: v4, Pool: "dual"}},
			{svc: "ns/b", req: Request{Families: v4, Pool: "dual"}},
			{pools: "address-pools:\n- name: v4\n  protocol: bgp\n  addresses: [192.0.2.0/30]\n"},
			{svc: "ns/a", req: Request{Families: v4, Pool: "dual"}},
			{svc: "ns/c", req: Request{Families: v4, Pool: "dual"}},
			{svc: "ns/c", req: Request{Families: v4, Addrs: addrs("198.51.100.1")}},
			{svc: "ns/b", release: true},
			// Back again: a keeps its address, b's is free once more.
			{pools: dualPools},
			{svc: "ns/a", req: Request{Families: v4, Pool: "dual"}},
			{svc: "ns/d", req: Request{Families: v4, Pool: "dual"}},
		},
		want: []outcome{
			{Addrs: []string{"198.51.100.0"}, Pool: "dual"},
			{Addrs: []string{"198.51.100.1"}, Pool: "dual"},
			{Addrs: []string{"198.51.100.0"}, Pool: "dual", Orphaned: true},
			{Reason: ReasonUnknownPool, Err: `pool "dual" does not exist`},
			{Reason: ReasonNotInPool, Err: "requested address 198.51.100.1 is not in any address pool"},
			{Addrs: []string{"198.51.100.1"}, Pool: "dual", Orphaned: true},
			{Addrs: []string{"198.51.100.0"}, Pool: "dual"},
			{Addrs: []string{"198.51.100.1"}, Pool: "dual"},
		},
	}}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			got := run(t, tc.pools, tc.steps)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("outcomes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRestore(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		desc          string
		pools         string
		holdings      []Holding
		wantConflicts []Conflict
		// then, in order
		steps []step
		want  []outcome
	}{{
		desc:  "existing assignments are kept and never handed out again",
		pools: basePools,
		holdings: []Holding{
			{Service: "ns/a", Created: t0, Addrs: addrs("192.0.2.1"), Request: Request{Families: v4}},
			{Service: "ns/b", Created: t0, Addrs: addrs("192.0.2.10"), Request: Request{Families: v4}},
		},
		steps: []step{
			{svc: "ns/a", req: Request{Families: v4}},
			{svc: "ns/c", req: Request{Families: v4}},
			{svc: "ns/d", req: Request{Families: v4}},
			{svc: "ns/b", req: Request{Families: v4}},
		},
		want: []outcome{
			{Addrs: []string{"192.0.2.1"}, Pool: "small"},
			{Addrs: []string{"192.0.2.0"}, Pool: "small"},
			{Addrs: []string{"192.0.2.11"}, Pool: "small"},
			{Addrs: []string{"192.0.2.10"}, Pool: "small"},
		},
	}, {
		desc:  "two Services on one address without sharing: the newer loses",
		pools: basePools,
		holdings: []Holding{
			{Service: "ns/new", Created: t0.Add(time.Hour), Addrs: addrs("192.0.2.0"), Request: Request{Families: v4}},
			{Service: "ns/old", Created: t0, Addrs: addrs("192.0.2.0"), Request: Request{Families: v4}},
			// Same age: the name decides.
			{Service: "ns/y", Created: t0, Addrs: addrs("192.0.2.1"), Request: Request{Families: v4}},
			{Service: "ns/x", Created: t0, Addrs: addrs("192.0.2.1"), Request: Request{Families: v4}},
		},
		wantConflicts: []Conflict{
			{Service: "ns/y", Addr: netip.MustParseAddr("192.0.2.1"), Holder: "ns/x"},
			{Service: "ns/new", Addr: netip.MustParseAddr("192.0.2.0"), Holder: "ns/old"},
		},
		steps: []step{
			{svc: "ns/old", req: Request{Families: v4}},
			{svc: "ns/x", req: Request{Families: v4}},
			{svc: "ns/new", req: Request{Families: v4}},
			{svc: "ns/y", req: Request{Families: v4}},
		},
		want: []outcome{
			{Addrs: []string{"192.0.2.0"}, Pool: "small"},
			{Addrs: []string{"192.0.2.1"}, Pool: "small"},
			{Addrs: []string{"192.0.2.10"}, Pool: "small"},
			{Addrs: []string{"192.0.2.11"}, Pool: "small"},
		},
	}, {
		desc:  "compatible sharing is restored, a port collision is a conflict",
		pools: basePools,
		holdings: []Holding{
			{Service: "ns/a", Created: t0, Addrs: addrs("192.0.2.0"), Request: Request{Families: v4, SharingKey: "k", Ports: tcp(80)}},
			{Service: "ns/b", Created: t0.Add(1), Addrs: addrs("192.0.2.0"), Request: Request{Families: v4, SharingKey: "k", Ports: tcp(443)}},
			{Service: "ns/c", Created: t0.Add(2), Addrs: addrs("192.0.2.0"), Request: Request{Families: v4, SharingKey: "k", Ports: tcp(80)}},
		},
		wantConflicts: []Conflict{
			{Service: "ns/c", Addr: netip.MustParseAddr("192.0.2.0"), Holder: "ns/a"},
		},
		steps: []step{
			{svc: "ns/b", req: Request{Families: v4, SharingKey: "k", Ports: tcp(443)}},
			{svc: "ns/c", req: Request{Families: v4, SharingKey: "k", Ports: tcp(80)}},
		},
		want: []outcome{
			{Addrs: []string{"192.0.2.0"}, Pool: "small"},
			{Addrs: []string{"192.0.2.1"}, Pool: "small"},
		},
	}, {
		desc:  "a dual-stack loser keeps its other family",
		pools: dualPools,
		holdings: []Holding{
			{Service: "ns/a", Created: t0, Addrs: addrs("2001:db8::1"), Request: Request{Families: v6}},
			{Service: "ns/b", Created: t0.Add(time.Second), Addrs: addrs("198.51.100.2", "2001:db8::1"), Request: Request{Families: dual}},
		},
		wantConflicts: []Conflict{
			{Service: "ns/b", Addr: netip.MustParseAddr("2001:db8::1"), Holder: "ns/a"},
		},
		steps: []step{{svc: "ns/b", req: Request{Families: dual}}},
		want:  []outcome{{Addrs: []string{"198.51.100.2", "2001:db8::"}, Pool: "dual"}},
	}, {
		desc:  "an address outside every pool is kept, orphaned",
		pools: basePools,
		holdings: []Holding{
			{Service: "ns/a", Created: t0, Addrs: addrs("10.9.9.9"), Request: Request{Families: v4}},
		},
		steps: []step{
			{svc: "ns/a", req: Request{Families: v4, Pool: "small"}},
			{svc: "ns/a", req: Request{Families: v4, Addrs: addrs("192.0.2.0")}},
		},
		want: []outcome{
			{Addrs: []string{"10.9.9.9"}, Orphaned: true},
			{Addrs: []string{"192.0.2.0"}, Pool: "small"},
		},
	}}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			a := New()
			a.SetPools(parsePools(t, tc.pools))
			// Something to forget: Restore starts from scratch.
			if _, err := a.Assign("ns/stale", Request{Families: v4, Addrs: addrs("192.0.2.11")}); err != nil && tc.pools == basePools {
				t.Fatal(err)
			}
			got := a.Restore(tc.holdings)
			for i := range got {
				if got[i].Err == nil || ReasonOf(got[i].Err) != ReasonAddressInUse {
					t.Errorf("conflict %d: error %v, want reason %s", i, got[i].Err, ReasonAddressInUse)
				}
				got[i].Err = nil
			}
			if diff := cmp.Diff(tc.wantConflicts, got, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
				t.Errorf("conflicts (-want +got):\n%s", diff)
			}
			var outs []outcome
			for _, s := range tc.steps {
				outs = append(outs, outcomeOf(a.Assign(s.svc, s.req)))
			}
			if diff := cmp.Diff(tc.want, outs); diff != "" {
				t.Errorf("outcomes after restore (-want +got):\n%s", diff)
			}
			if _, ok := a.Lookup("ns/stale"); ok {
				t.Error("Restore kept an assignment that was not in the holdings")
			}
		})
	}
}

func TestBenchAssignFast(t *testing.T) {
	d, err := BenchAssign(10000)
	if err != nil {
		t.Fatal(err)
	}
	// Generous for a loaded machine; it takes milliseconds.
	if d > time.Second {
		t.Errorf("assigning 10,000 Services took %s, want well under a second", d)
	}
}

func BenchmarkAssign10k(b *testing.B) {
	for b.Loop() {
		if _, err := BenchAssign(10000); err != nil {
			b.Fatal(err)
		}
	}
}
