package allocator

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// FuzzOperations runs random sequences of assignments, releases, pool
// changes and restores, and checks after each step that no address is
// held by Services that may not share it and that what a Service holds
// is what Lookup reports.
func FuzzOperations(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11})
	f.Add([]byte{7, 7, 7, 7, 200, 201, 202, 203, 100, 100, 100})
	f.Fuzz(func(t *testing.T, ops []byte) {
		full := parsePools(t, dualPools)
		a := New()
		a.SetPools(full)
		keys := []string{"", "k", "j"}
		reqs := map[string]Request{}
		for i, op := range ops {
			svc := fmt.Sprintf("ns/s%d", op%6)
			switch op >> 5 {
			case 0, 1, 2:
				req := Request{Families: [][]Family{v4, v6, dual}[op%3], SharingKey: keys[(op>>3)%3], Ports: tcp(int32(op % 2))}
				if op&0x10 != 0 {
					req.Pool = "dual"
				}
				if as, err := a.Assign(svc, req); err == nil {
					reqs[svc] = req
					if len(as.Addrs) != len(req.Families) {
						t.Fatalf("step %d: %s got %v for families %v", i, svc, as.Addrs, req.Families)
					}
				}
			case 3, 4:
				a.Release(svc)
				delete(reqs, svc)
			case 5:
				a.SetPools(full[1:])
			case 6:
				a.SetPools(full)
			case 7:
				var hs []Holding
				for s, req := range reqs {
					as, _ := a.Lookup(s)
					hs = append(hs, Holding{Service: s, Created: time.Unix(int64(len(s)), 0), Addrs: as.Addrs, Request: req})
				}
				if c := a.Restore(hs); len(c) != 0 {
					t.Fatalf("step %d: restoring a consistent state reported conflicts %v", i, c)
				}
			}
			checkInvariants(t, a, reqs)
		}
	})
}

func checkInvariants(t *testing.T, a *Allocator, reqs map[string]Request) {
	t.Helper()
	users := map[netip.Addr][]string{}
	for svc, req := range reqs {
		as, ok := a.Lookup(svc)
		if !ok {
			// A Service whose request was rewritten may have kept
			// nothing only if it never held anything.
			continue
		}
		for _, x := range as.Addrs {
			for _, o := range users[x] {
				ro := reqs[o]
				if req.SharingKey == "" || req.SharingKey != ro.SharingKey || req.BackendKey != ro.BackendKey {
					t.Fatalf("%s and %s hold %s without a common sharing key", svc, o, x)
				}
				for _, p := range req.Ports {
					for _, q := range ro.Ports {
						if p == q {
							t.Fatalf("%s and %s both use port %s on %s", svc, o, p, x)
						}
					}
				}
			}
			users[x] = append(users[x], svc)
		}
	}
	if len(users) != len(a.addrs) {
		t.Fatalf("allocator tracks %d addresses, Services hold %d", len(a.addrs), len(users))
	}
}
