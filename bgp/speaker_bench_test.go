package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
)

// BenchmarkSetPaths10k times what P1 of make bench times inside the agent:
// 10,000 LoadBalancer addresses handed to the speaker at once until a
// router holds them all, and their withdrawal until it holds none.
func BenchmarkSetPaths10k(b *testing.B) {
	const n = 10000
	ctx := b.Context()
	r := startRouter(b, "router1", "127.0.0.1", "10.0.0.254", routerASN, speakerASN)
	sp := newTestSpeaker(b, testLogger(b, "speaker"))
	b.Cleanup(func() { sp.Stop(context.Background()) })

	base := Desired{Global: Global{ASN: speakerASN, RouterID: netip.MustParseAddr("10.0.0.1")}, Peers: []Peer{r.peerOfSpeaker(speakerASN)}}
	full := base
	first := netip.MustParseAddr("10.8.0.0")
	for a := first; len(full.Paths) < n; a = a.Next() {
		full.Paths = append(full.Paths, Path{Prefix: netip.PrefixFrom(a, 32), NextHop: netip.MustParseAddr("10.0.0.1")})
	}
	holds := func(want int) error {
		deadline := time.Now().Add(time.Minute)
		for {
			got, err := r.srv.GetTable(ctx, &api.GetTableRequest{TableType: api.TableType_GLOBAL, Family: r.family})
			if err == nil && got.GetNumDestination() == uint64(want) {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("router holds %d prefixes, want %d (%v)", got.GetNumDestination(), want, err)
			}
			time.Sleep(time.Millisecond)
		}
	}
	set := func(d Desired, want int) {
		if err := sp.Set(ctx, d); err != nil {
			b.Fatalf("Set: %v", err)
		}
		if err := holds(want); err != nil {
			b.Fatal(err)
		}
	}
	set(base, 0)
	eventually(b, "session established", sessionEstablished(ctx, r, speakerASN, "10.0.0.1"))
	b.ResetTimer()
	for b.Loop() {
		set(full, n)
		set(base, 0)
	}
}
