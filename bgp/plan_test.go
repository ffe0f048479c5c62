package bgp

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"routeagent.io/route-agent/bgp/config"
	"routeagent.io/route-agent/cluster/snapshot"
	"routeagent.io/route-agent/secret"
)

var planCmpOpts = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

// parseConfig parses a bgp-config config.yaml and fails the test if it is
// invalid: Plan only ever sees configurations that parsed.
func parseConfig(t testing.TB, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("config.Parse:\n%s\nerror: %v", yaml, err)
	}
	return cfg
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// peerWithDefaults is the Peer that a config peer with only peer-address,
// peer-asn and my-asn produces.
func peerWithDefaults(addr string, asn, localASN uint32) Peer {
	return Peer{
		Address:       netip.MustParseAddr(addr),
		Port:          179,
		ASN:           asn,
		LocalASN:      localASN,
		HoldTime:      90 * time.Second,
		KeepaliveTime: 30 * time.Second,
	}
}

func path(prefix, nextHop string) Path {
	return Path{Prefix: netip.MustParsePrefix(prefix), NextHop: netip.MustParseAddr(nextHop)}
}

// worker is a typical single-stack node.
func worker(labels map[string]string) *snapshot.Node {
	return &snapshot.Node{
		Name:        "worker-1",
		Labels:      labels,
		InternalIPs: addrs("10.4.36.10"),
		PodCIDRs:    prefixes("10.244.1.0/24"),
	}
}

func snap(self *snapshot.Node, cfg *config.Config) *snapshot.Snapshot {
	s := &snapshot.Snapshot{Cluster: snapshot.Cluster{
		Synced:   true,
		NodeName: "worker-1",
		Self:     self,
		BGP:      snapshot.BGPConfig{Source: "metallb-system/bgp-config", Present: cfg != nil, Config: cfg},
	}}
	if self != nil {
		s.NodeName = self.Name
		s.Nodes = []snapshot.Node{*self}
	}
	return s
}

const twoToRs = `
peers:
- peer-address: 10.4.36.238
  peer-asn: 64524
  my-asn: 64513
- peer-address: 10.4.36.239
  peer-asn: 64524
  my-asn: 64513
`

func TestPlan(t *testing.T) {
	// Configurations are parsed up front so that a broken YAML string
	// fails the whole test, not one case.
	var (
		cfgTwoToRs = parseConfig(t, twoToRs)

		cfgMatchLabels = parseConfig(t, `
peers:
- peer-address: 10.4.36.250
  peer-asn: 64512
  my-asn: 64512
  node-selectors:
  - match-labels:
      kubernetes/route: bgp-peer-83
- peer-address: 10.4.36.251
  peer-asn: 64512
  my-asn: 64512
  node-selectors:
  - match-labels:
      kubernetes/route: bgp-peer-84
- peer-address: 10.4.36.252
  peer-asn: 64512
  my-asn: 64512
  node-selectors:
  - match-labels:
      kubernetes/route: bgp-peer-83
      rack: r2
`)
		cfgMatchExpressions = parseConfig(t, `
peers:
- peer-address: 10.4.36.1
  peer-asn: 64512
  my-asn: 64513
  node-selectors:
  - match-expressions:
    - key: kubernetes/route
      operator: In
      values: [bgp-peer-83, bgp-peer-84]
- peer-address: 10.4.36.2
  peer-asn: 64512
  my-asn: 64513
  node-selectors:
  - match-expressions:
    - key: kubernetes/route
      operator: NotIn
      values: [bgp-peer-83]
- peer-address: 10.4.36.3
  peer-asn: 64512
  my-asn: 64513
  node-selectors:
  - match-expressions:
    - key: rack
      operator: Exists
- peer-address: 10.4.36.4
  peer-asn: 64512
  my-asn: 64513
  node-selectors:
  - match-expressions:
    - key: rack
      operator: DoesNotExist
- peer-address: 10.4.36.5
  peer-asn: 64512
  my-asn: 64513
  node-selectors:
  - match-expressions:
    - key: kubernetes/route
      operator: In
      values: [bgp-peer-83]
    - key: rack
      operator: In
      values: [r9]
`)
		// Selectors are ORed: the second one matches.
		cfgOredSelectors = parseConfig(t, `
peers:
- peer-address: 10.4.36.1
  peer-asn: 64512
  my-asn: 64513
  node-selectors:
  - match-labels:
      rack: r9
  - match-expressions:
    - key: kubernetes/route
      operator: In
      values: [bgp-peer-83]
`)
		cfgMixedSelectors = parseConfig(t, `
peers:
- peer-address: 10.4.36.1
  peer-asn: 64512
  my-asn: 64513
- peer-address: 10.4.36.2
  peer-asn: 64512
  my-asn: 64513
  node-selectors:
  - match-labels:
      role: special
`)
		cfgTwoMyASNs = parseConfig(t, `
peers:
- peer-address: 10.4.36.2
  peer-asn: 64600
  my-asn: 64514
- peer-address: 10.4.36.1
  peer-asn: 64524
  my-asn: 64513
`)
		// The first peer in the config is not selected: Global.ASN comes
		// from the first selected one.
		cfgFirstNotSelected = parseConfig(t, `
peers:
- peer-address: 10.4.36.1
  peer-asn: 64600
  my-asn: 64999
  node-selectors:
  - match-labels:
      role: special
- peer-address: 10.4.36.2
  peer-asn: 64524
  my-asn: 64513
`)
		cfgRouterID = parseConfig(t, `
peers:
- peer-address: 10.4.36.1
  peer-asn: 64524
  my-asn: 64513
- peer-address: 10.4.36.2
  peer-asn: 64524
  my-asn: 64513
  router-id: 192.0.2.7
`)
		cfgSameRouterIDs = parseConfig(t, `
peers:
- peer-address: 10.4.36.1
  peer-asn: 64524
  my-asn: 64513
  router-id: 192.0.2.7
- peer-address: 10.4.36.2
  peer-asn: 64524
  my-asn: 64513
  router-id: 192.0.2.7
`)
		cfgConflictingRouterIDs = parseConfig(t, `
peers:
- peer-address: 10.4.36.2
  peer-asn: 64524
  my-asn: 64513
  router-id: 192.0.2.7
- peer-address: 10.4.36.1
  peer-asn: 64524
  my-asn: 64513
  router-id: 192.0.2.8
`)
		cfgUnselectedRouterID = parseConfig(t, `
peers:
- peer-address: 10.4.36.1
  peer-asn: 64524
  my-asn: 64513
- peer-address: 10.4.36.2
  peer-asn: 64524
  my-asn: 64513
  router-id: 192.0.2.7
  node-selectors:
  - match-labels:
      role: special
`)
		// The same address selected twice: allowed by the config because
		// the selectors differ (though both match every node here).
		cfgDupAddress = parseConfig(t, `
peers:
- peer-address: 10.4.36.1
  peer-asn: 64524
  my-asn: 64513
  peer-port: 1179
- peer-address: 10.4.36.2
  peer-asn: 64524
  my-asn: 64513
- peer-address: 10.4.36.1
  peer-asn: 64525
  my-asn: 64513
  router-id: 192.0.2.9
  node-selectors:
  - match-expressions:
    - {key: zone, operator: NotIn, values: [nowhere]}
`)
		// The same address and port, allowed because the selectors differ.
		cfgDupAddressSelectors = parseConfig(t, `
peers:
- peer-address: 10.4.36.1
  peer-asn: 64524
  my-asn: 64513
  node-selectors:
  - match-labels:
      rack: r1
- peer-address: 10.4.36.1
  peer-asn: 64524
  my-asn: 64513
  node-selectors:
  - match-labels:
      kubernetes/route: bgp-peer-83
`)
		cfgAllFields = parseConfig(t, `
peers:
- peer-address: 10.4.36.1
  peer-asn: 64524
  my-asn: 64513
  peer-port: 1179
  hold-time: 9s
  keepalive-time: 3s
  source-address: 10.4.36.10
  password: s3cret
  ebgp-multihop: true
`)
		cfgV6Peer = parseConfig(t, `
peers:
- peer-address: fd00::1
  peer-asn: 64524
  my-asn: 64513
`)
		cfgUnsorted = parseConfig(t, `
peers:
- peer-address: fd00::1
  peer-asn: 64524
  my-asn: 64513
- peer-address: 10.4.36.239
  peer-asn: 64524
  my-asn: 64513
- peer-address: 10.4.36.30
  peer-asn: 64524
  my-asn: 64513
- peer-address: 10.4.36.4
  peer-asn: 64524
  my-asn: 64513
`)
		cfgEmpty = parseConfig(t, ``)
	)

	r83 := map[string]string{"kubernetes/route": "bgp-peer-83", "rack": "r1"}

	for _, tc := range []struct {
		desc     string
		snapshot *snapshot.Snapshot
		want     Desired
		// wantWarnings are substrings, one per expected warning, in order.
		wantWarnings []string
	}{
		{
			desc:     "no Self node",
			snapshot: snap(nil, cfgTwoToRs),
		},
		{
			desc:     "nil config",
			snapshot: snap(worker(r83), nil),
		},
		{
			desc: "nil config, config map present but never parsed",
			snapshot: &snapshot.Snapshot{Cluster: snapshot.Cluster{NodeName: "worker-1", Self: worker(r83), BGP: snapshot.BGPConfig{
				Present: true, Err: errString("bad"), ErrVersion: "2",
			}}},
		},
		{
			desc:     "config without peers",
			snapshot: snap(worker(r83), cfgEmpty),
		},
		{
			desc:     "no matching peers",
			snapshot: snap(worker(map[string]string{"kubernetes/route": "bgp-peer-99"}), cfgMatchLabels),
		},
		{
			desc:     "no matching peers, node without labels",
			snapshot: snap(worker(nil), cfgMatchLabels),
		},
		{
			desc:     "peers without selectors apply to every node",
			snapshot: snap(worker(nil), cfgTwoToRs),
			want: Desired{
				Global: Global{ASN: 64513, RouterID: netip.MustParseAddr("10.4.36.10")},
				Peers: []Peer{
					peerWithDefaults("10.4.36.238", 64524, 64513),
					peerWithDefaults("10.4.36.239", 64524, 64513),
				},
				Paths: []Path{path("10.244.1.0/24", "10.4.36.10")},
			},
		},
		{
			desc:     "peers without selectors apply to a labelled node too",
			snapshot: snap(worker(r83), cfgTwoToRs),
			want: Desired{
				Global: Global{ASN: 64513, RouterID: netip.MustParseAddr("10.4.36.10")},
				Peers: []Peer{
					peerWithDefaults("10.4.36.238", 64524, 64513),
					peerWithDefaults("10.4.36.239", 64524, 64513),
				},
				Paths: []Path{path("10.244.1.0/24", "10.4.36.10")},
			},
		},
		{
			desc:     "match-labels selects the peers whose labels all match",
			snapshot: snap(worker(r83), cfgMatchLabels),
			want: Desired{
				Global: Global{ASN: 64512, RouterID: netip.MustParseAddr("10.4.36.10")},
				Peers:  []Peer{peerWithDefaults("10.4.36.250", 64512, 64512)},
				Paths:  []Path{path("10.244.1.0/24", "10.4.36.10")},
			},
		},
		{
			desc:     "match-labels with every label of a multi-label selector",
			snapshot: snap(worker(map[string]string{"kubernetes/route": "bgp-peer-83", "rack": "r2"}), cfgMatchLabels),
			want: Desired{
				Global: Global{ASN: 64512, RouterID: netip.MustParseAddr("10.4.36.10")},
				Peers: []Peer{
					peerWithDefaults("10.4.36.250", 64512, 64512),
					peerWithDefaults("10.4.36.252", 64512, 64512),
				},
				Paths: []Path{path("10.244.1.0/24", "10.4.36.10")},
			},
		},
		{
			desc:     "match-expressions In and Exists",
			snapshot: snap(worker(r83), cfgMatchExpressions),
			want: Desired{
				Global: Global{ASN: 64513, RouterID: netip.MustParseAddr("10.4.36.10")},
				Peers: []Peer{
					peerWithDefaults("10.4.36.1", 64512, 64513),
					peerWithDefaults("10.4.36.3", 64512, 64513),
				},
				Paths: []Path{path("10.244.1.0/24", "10.4.36.10")},
			},
		},
		{
			desc:     "match-expressions NotIn and DoesNotExist",
			snapshot: snap(worker(map[string]string{"kubernetes/route": "bgp-peer-84"}), cfgMatchExpressions),
			want: Desired{
				Global: Global{ASN: 64513, RouterID: netip.MustParseAddr("10.4.36.10")},
				Peers: []Peer{
					peerWithDefaults("10.4.36.1", 64512, 64513),
					peerWithDefaults("10.4.36.2", 64512, 64513),
					peerWithDefaults("10.4.36.4", 64512, 64513),
				},
				Paths: []Path{path("10.244.1.0/24", "10.4.36.10")},
			},
		},
		{
			desc:     "match-expressions of one selector are ANDed",
			snapshot: snap(worker(map[string]string{"kubernetes/route": "bgp-peer-83", "rack": "r9"}), cfgMatchExpressions),
			want: Desired{
				Global: Global{ASN: 64513, RouterID: netip.MustParseAddr("10.4.36.10")},
				Peers: []Peer{
					peerWithDefaults("10.4.36.1", 64512, 64513),
					peerWithDefaults("10.4.36.3", 64512, 64513),
					peerWithDefaults("10.4.36.5", 64512, 64513),
				},
				Paths: []Path{path("10.244.1.0/24", "10.4.36.10")},
			},
		},
		{
			desc:     "node-selectors are ORed",
			snapshot: snap(worker(r83), cfgOredSelectors),
			want: Desired{
				Global: Global{ASN: 64513, RouterID: netip.MustParseAddr("10.4.36.10")},
				Peers:  []Peer{peerWithDefaults("10.4.36.1", 64512, 64513)},
				Paths:  []Path{path("10.244.1.0/24", "10.4.36.10")},
			},
		},
		{
			desc:     "peer without selectors next to an unselected peer",
			snapshot: snap(worker(r83), cfgMixedSelectors),
			want: Desired{
				Global: Global{ASN: 64513, RouterID: netip.MustParseAddr("10.4.36.10")},
				Peers:  []Peer{peerWithDefaults("10.4.36.1", 64512, 64513)},
				Paths:  []Path{path("10.244.1.0/24", "10.4.36.10")},
			},
		},
		{
			desc:     "two peers with different my-asn: Global.ASN is the first's, each peer keeps its own",
			snapshot: snap(worker(nil), cfgTwoMyASNs),
			want: Desired{
				Global: Global{ASN: 64514, RouterID: netip.MustParseAddr("10.4.36.10")},
				Peers: []Peer{
					peerWithDefaults("10.4.36.1", 64524, 64513),
					peerWithDefaults("10.4.36.2", 64600, 64514),
				},
				Paths: []Path{path("10.244.1.0/24", "10.4.36.10")},
			},
		},
		{
			desc:     "Global.ASN is the first selected peer's",
			snapshot: snap(worker(nil), cfgFirstNotSelected),
			want: Desired{
				Global: Global{ASN: 64513, RouterID: netip.MustParseAddr("10.4.36.10")},
				Peers:  []Peer{peerWithDefaults("10.4.36.2", 64524, 64513)},
				Paths:  []Path{path("10.244.1.0/24", "10.4.36.10")},
			},
		},
		{
			desc:     "router-id from the config wins over the InternalIP",
			snapshot: snap(worker(nil), cfgRouterID),
			want: Desired{
				Global: Global{ASN: 64513, RouterID: netip.MustParseAddr("192.0.2.7")},
				Peers: []Peer{
					peerWithDefaults("10.4.36.1", 64524, 64513),
					peerWithDefaults("10.4.36.2", 64524, 64513),
				},
				Paths: []Path{path("10.244.1.0/24", "10.4.36.10")},
			},
		},
		{
			desc: "router-id from the config on a node without IPv4 InternalIP",
			snapshot: snap(&snapshot.Node{
				Name:        "v6-only",
				InternalIPs: addrs("fd00::10"),
				PodCIDRs:    prefixes("fd00:244:1::/64"),
			}, cfgRouterID),
			want: Desired{
				Global: Global{ASN: 64513, RouterID: netip.MustParseAddr("192.0.2.7")},
				Peers: []Peer{
					peerWithDefaults("10.4.36.1", 64524, 64513),
					peerWithDefaults("10.4.36.2", 64524, 64513),
				},
				Paths: []Path{path("fd00:244:1::/64", "fd00::10")},
			},
			wantWarnings: []string{"pod CIDR fd00:244:1::/64 reaches no peer"},
		},
		{
			desc:     "router-id of an unselected peer is not used",
			snapshot: snap(worker(nil), cfgUnselectedRouterID),
			want: Desired{
				Global: Global{ASN: 64513, RouterID: netip.MustParseAddr("10.4.36.10")},
				Peers:  []Peer{peerWithDefaults("10.4.36.1", 64524, 64513)},
				Paths:  []Path{path("10.244.1.0/24", "10.4.36.10")},
			},
		},
		{
			desc: "router-id defaults to the first IPv4 InternalIP",
			snapshot: snap(&snapshot.Node{
				Name:        "dual",
				InternalIPs: addrs("fd00::10", "10.4.36.10", "10.4.37.10"),
				PodCIDRs:    prefixes("10.244.1.0/24"),
			}, cfgTwoToRs),
			want: Desired{
				Global: Global{ASN: 64513, RouterID: netip.MustParseAddr("10.4.36.10")},
				Peers: []Peer{
					peerWithDefaults("10.4.36.238", 64524, 64513),
					peerWithDefaults("10.4.36.239", 64524, 64513),
				},
				Paths: []Path{path("10.244.1.0/24", "10.4.36.10")},
			},
		},
		{
			desc:     "equal router-ids do not warn",
			snapshot: snap(worker(nil), cfgSameRouterIDs),
			want: Desired{
				Global: Global{ASN: 64513, RouterID: netip.MustParseAddr("192.0.2.7")},
				Peers: []Peer{
					peerWithDefaults("10.4.36.1", 64524, 64513),
					peerWithDefaults("10.4.36.2", 64524, 64513),
				},
				Paths: []Path{path("10.244.1.0/24", "10.4.36.10")},
			},
		},
		{
			desc:     "conflicting router-ids warn and keep the first",
			snapshot: snap(worker(nil), cfgConflictingRouterIDs),
			want: Desired{
				Global: Global{ASN: 64513, RouterID: netip.MustParseAddr("192.0.2.7")},
				Peers: []Peer{
					peerWithDefaults("10.4.36.1", 64524, 64513),
					peerWithDefaults("10.4.36.2", 64524, 64513),
				},
				Paths: []Path{path("10.244.1.0/24", "10.4.36.10")},
			},
			wantWarnings: []string{"peers[1].router-id 192.0.2.8 differs from the router-id 192.0.2.7"},
		},
		{
			desc: "no IPv4 InternalIP and no router-id",
			snapshot: snap(&snapshot.Node{
				Name:        "v6-only",
				InternalIPs: addrs("fd00::10"),
				PodCIDRs:    prefixes("fd00:244:1::/64"),
			}, cfgTwoToRs),
			wantWarnings: []string{"node v6-only has no IPv4 InternalIP"},
		},
		{
			desc: "no InternalIP at all and no router-id",
			snapshot: snap(&snapshot.Node{
				Name:     "bare",
				PodCIDRs: prefixes("10.244.1.0/24"),
			}, cfgTwoToRs),
			wantWarnings: []string{"node bare has no IPv4 InternalIP"},
		},
		{
			desc:     "the same peer-address selected twice",
			snapshot: snap(worker(nil), cfgDupAddress),
			want: Desired{
				Global: Global{ASN: 64513, RouterID: netip.MustParseAddr("10.4.36.10")},
				Peers: []Peer{
					withPort(peerWithDefaults("10.4.36.1", 64524, 64513), 1179),
					peerWithDefaults("10.4.36.2", 64524, 64513),
				},
				Paths: []Path{path("10.244.1.0/24", "10.4.36.10")},
			},
			// The router-id of the dropped peer is not used.
			wantWarnings: []string{"peers[0] and peers[2] both select this node with peer-address 10.4.36.1; using peers[0]"},
		},
		{
			desc:     "the same peer-address and port selected twice through different selectors",
			snapshot: snap(worker(r83), cfgDupAddressSelectors),
			want: Desired{
				Global: Global{ASN: 64513, RouterID: netip.MustParseAddr("10.4.36.10")},
				Peers:  []Peer{peerWithDefaults("10.4.36.1", 64524, 64513)},
				Paths:  []Path{path("10.244.1.0/24", "10.4.36.10")},
			},
			wantWarnings: []string{"peers[0] and peers[1] both select this node with peer-address 10.4.36.1"},
		},
		{
			desc:     "same peer-address, only one selector matches: no warning",
			snapshot: snap(worker(map[string]string{"rack": "r1"}), cfgDupAddressSelectors),
			want: Desired{
				Global: Global{ASN: 64513, RouterID: netip.MustParseAddr("10.4.36.10")},
				Peers:  []Peer{peerWithDefaults("10.4.36.1", 64524, 64513)},
				Paths:  []Path{path("10.244.1.0/24", "10.4.36.10")},
			},
		},
		{
			desc:     "every peer field is copied",
			snapshot: snap(worker(nil), cfgAllFields),
			want: Desired{
				Global: Global{ASN: 64513, RouterID: netip.MustParseAddr("10.4.36.10")},
				Peers: []Peer{{
					Address:       netip.MustParseAddr("10.4.36.1"),
					Port:          1179,
					ASN:           64524,
					LocalASN:      64513,
					HoldTime:      9 * time.Second,
					KeepaliveTime: 3 * time.Second,
					SourceAddress: netip.MustParseAddr("10.4.36.10"),
					Password:      secret.New("s3cret"),
					EBGPMultihop:  true,
				}},
				Paths: []Path{path("10.244.1.0/24", "10.4.36.10")},
			},
		},
		{
			desc: "dual-stack pod CIDRs get the InternalIP of their family as next hop",
			snapshot: snap(&snapshot.Node{
				Name:        "dual",
				InternalIPs: addrs("10.4.36.10", "fd00::10", "10.4.37.10", "fd00::11"),
				PodCIDRs:    prefixes("10.244.1.0/24", "fd00:244:1::/64"),
			}, cfgTwoToRs),
			want: Desired{
				Global: Global{ASN: 64513, RouterID: netip.MustParseAddr("10.4.36.10")},
				Peers: []Peer{
					peerWithDefaults("10.4.36.238", 64524, 64513),
					peerWithDefaults("10.4.36.239", 64524, 64513),
				},
				Paths: []Path{
					path("10.244.1.0/24", "10.4.36.10"),
					path("fd00:244:1::/64", "fd00::10"),
				},
			},
			wantWarnings: []string{"pod CIDR fd00:244:1::/64 reaches no peer"},
		},
		{
			desc: "pod CIDR of a family without InternalIP is skipped",
			snapshot: snap(&snapshot.Node{
				Name:        "v4-only",
				InternalIPs: addrs("10.4.36.10"),
				PodCIDRs:    prefixes("10.244.1.0/24", "fd00:244:1::/64"),
			}, cfgTwoToRs),
			want: Desired{
				Global: Global{ASN: 64513, RouterID: netip.MustParseAddr("10.4.36.10")},
				Peers: []Peer{
					peerWithDefaults("10.4.36.238", 64524, 64513),
					peerWithDefaults("10.4.36.239", 64524, 64513),
				},
				Paths: []Path{path("10.244.1.0/24", "10.4.36.10")},
			},
			wantWarnings: []string{"pod CIDR fd00:244:1::/64 not advertised: node v4-only has no InternalIP of its family"},
		},
		{
			desc: "IPv4 pod CIDR skipped on a node whose IPv4 comes only from router-id",
			snapshot: snap(&snapshot.Node{
				Name:        "v6-only",
				InternalIPs: addrs("fd00::10"),
				PodCIDRs:    prefixes("10.244.1.0/24", "fd00:244:1::/64"),
			}, cfgRouterID),
			want: Desired{
				Global: Global{ASN: 64513, RouterID: netip.MustParseAddr("192.0.2.7")},
				Peers: []Peer{
					peerWithDefaults("10.4.36.1", 64524, 64513),
					peerWithDefaults("10.4.36.2", 64524, 64513),
				},
				Paths: []Path{path("fd00:244:1::/64", "fd00::10")},
			},
			wantWarnings: []string{
				"pod CIDR 10.244.1.0/24 not advertised: node v6-only has no InternalIP of its family",
				"pod CIDR fd00:244:1::/64 reaches no peer",
			},
		},
		{
			desc: "node without pod CIDRs holds sessions and advertises nothing",
			snapshot: snap(&snapshot.Node{
				Name:        "no-cidr",
				InternalIPs: addrs("10.4.36.10"),
			}, cfgTwoToRs),
			want: Desired{
				Global: Global{ASN: 64513, RouterID: netip.MustParseAddr("10.4.36.10")},
				Peers: []Peer{
					peerWithDefaults("10.4.36.238", 64524, 64513),
					peerWithDefaults("10.4.36.239", 64524, 64513),
				},
			},
		},
		{
			desc:     "IPv6 peer",
			snapshot: snap(worker(nil), cfgV6Peer),
			want: Desired{
				Global: Global{ASN: 64513, RouterID: netip.MustParseAddr("10.4.36.10")},
				Peers:  []Peer{peerWithDefaults("fd00::1", 64524, 64513)},
				Paths:  []Path{path("10.244.1.0/24", "10.4.36.10")},
			},
			wantWarnings: []string{"pod CIDR 10.244.1.0/24 reaches no peer"},
		},
		{
			desc: "output is sorted whatever the input order",
			snapshot: snap(&snapshot.Node{
				Name:        "dual",
				InternalIPs: addrs("fd00::10", "10.4.36.10"),
				PodCIDRs: prefixes(
					"fd00:244:1::/64", "10.244.1.128/25", "10.244.1.0/24",
					"10.244.0.0/24", "10.3.0.0/16", "fd00:244::/64",
				),
			}, cfgUnsorted),
			want: Desired{
				Global: Global{ASN: 64513, RouterID: netip.MustParseAddr("10.4.36.10")},
				Peers: []Peer{
					peerWithDefaults("10.4.36.4", 64524, 64513),
					peerWithDefaults("10.4.36.30", 64524, 64513),
					peerWithDefaults("10.4.36.239", 64524, 64513),
					peerWithDefaults("fd00::1", 64524, 64513),
				},
				Paths: []Path{
					path("10.3.0.0/16", "10.4.36.10"),
					path("10.244.0.0/24", "10.4.36.10"),
					path("10.244.1.0/24", "10.4.36.10"),
					path("10.244.1.128/25", "10.4.36.10"),
					path("fd00:244::/64", "fd00::10"),
					path("fd00:244:1::/64", "fd00::10"),
				},
			},
		},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, warnings := Plan(tc.snapshot, Global{})
			if diff := cmp.Diff(tc.want, got, planCmpOpts); diff != "" {
				t.Errorf("Plan() Desired mismatch (-want +got):\n%s", diff)
			}
			checkWarnings(t, warnings, tc.wantWarnings)
		})
	}
}

func withPort(p Peer, port uint16) Peer {
	p.Port = port
	return p
}

type errString string

func (e errString) Error() string { return string(e) }

func checkWarnings(t *testing.T, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("Plan() returned %d warnings, want %d:\ngot:  %q\nwant: %q", len(got), len(want), got, want)
		return
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("warning %d = %q, want it to contain %q", i, got[i], want[i])
		}
	}
}

// TestPlanSortedAnyOrder permutes the peers of a config and the pod CIDRs
// of a node: the plan must not depend on either order (beyond which
// duplicate or router-id wins, which this config avoids).
func TestPlanSortedAnyOrder(t *testing.T) {
	peers := []string{
		"- peer-address: 10.4.36.239\n  peer-asn: 64524\n  my-asn: 64513\n",
		"- peer-address: fd00::1\n  peer-asn: 64524\n  my-asn: 64513\n",
		"- peer-address: 10.4.36.30\n  peer-asn: 64524\n  my-asn: 64513\n",
		"- peer-address: 10.4.36.4\n  peer-asn: 64524\n  my-asn: 64513\n",
	}
	cidrs := prefixes("fd00:244:1::/64", "10.244.1.0/24", "10.244.0.0/24", "10.244.1.0/25")
	want := Desired{
		Global: Global{ASN: 64513, RouterID: netip.MustParseAddr("10.4.36.10")},
		Peers: []Peer{
			peerWithDefaults("10.4.36.4", 64524, 64513),
			peerWithDefaults("10.4.36.30", 64524, 64513),
			peerWithDefaults("10.4.36.239", 64524, 64513),
			peerWithDefaults("fd00::1", 64524, 64513),
		},
		Paths: []Path{
			path("10.244.0.0/24", "10.4.36.10"),
			path("10.244.1.0/24", "10.4.36.10"),
			path("10.244.1.0/25", "10.4.36.10"),
			path("fd00:244:1::/64", "fd00::10"),
		},
	}
	for rot := range len(peers) {
		var y strings.Builder
		y.WriteString("peers:\n")
		for i := range peers {
			y.WriteString(peers[(i+rot)%len(peers)])
		}
		cfg := parseConfig(t, y.String())
		// Reverse the CIDRs on odd rotations, rotate them otherwise.
		var cs []netip.Prefix
		for i := range cidrs {
			if rot%2 == 1 {
				cs = append(cs, cidrs[len(cidrs)-1-i])
			} else {
				cs = append(cs, cidrs[(i+rot)%len(cidrs)])
			}
		}
		node := &snapshot.Node{Name: "dual", InternalIPs: addrs("10.4.36.10", "fd00::10"), PodCIDRs: cs}
		got, warnings := Plan(snap(node, cfg), Global{})
		if diff := cmp.Diff(want, got, planCmpOpts); diff != "" {
			t.Errorf("rotation %d: Plan() mismatch (-want +got):\n%s", rot, diff)
		}
		if len(warnings) != 0 {
			t.Errorf("rotation %d: unexpected warnings %q", rot, warnings)
		}
	}
}

func TestPlanDeterministic(t *testing.T) {
	cfg := parseConfig(t, `
peers:
- peer-address: fd00::1
  peer-asn: 64524
  my-asn: 64513
- peer-address: 10.4.36.239
  peer-asn: 64524
  my-asn: 64514
  router-id: 192.0.2.1
- peer-address: 10.4.36.238
  peer-asn: 64524
  my-asn: 64513
  router-id: 192.0.2.2
- peer-address: 10.4.36.239
  peer-asn: 64524
  my-asn: 64513
  peer-port: 1179
  node-selectors:
  - match-expressions:
    - {key: zone, operator: NotIn, values: [nowhere]}
- peer-address: 10.4.36.250
  peer-asn: 64512
  my-asn: 64512
  node-selectors:
  - match-labels:
      kubernetes/route: bgp-peer-83
`)
	node := &snapshot.Node{
		Name:        "dual",
		Labels:      map[string]string{"kubernetes/route": "bgp-peer-83"},
		InternalIPs: addrs("10.4.36.10"),
		PodCIDRs:    prefixes("fd00:244:1::/64", "10.244.1.0/24", "10.244.0.0/24"),
	}
	s := snap(node, cfg)
	first, firstWarnings := Plan(s, Global{})
	if len(first.Peers) != 4 || len(first.Paths) != 2 || len(firstWarnings) != 3 {
		t.Fatalf("Plan() = %+v, warnings %q; want 4 peers, 2 paths, 3 warnings", first, firstWarnings)
	}
	for i := range 20 {
		got, warnings := Plan(s, Global{})
		if diff := cmp.Diff(first, got, planCmpOpts); diff != "" {
			t.Fatalf("run %d: Plan() differs from the first run (-first +got):\n%s", i, diff)
		}
		if diff := cmp.Diff(firstWarnings, warnings); diff != "" {
			t.Fatalf("run %d: warnings differ from the first run (-first +got):\n%s", i, diff)
		}
	}
	// Plan must not modify its input: the snapshot is shared.
	if diff := cmp.Diff(prefixes("fd00:244:1::/64", "10.244.1.0/24", "10.244.0.0/24"), node.PodCIDRs, planCmpOpts); diff != "" {
		t.Errorf("Plan() modified the node's PodCIDRs (-want +got):\n%s", diff)
	}
	if got := cfg.Peers[0].Address; got != netip.MustParseAddr("fd00::1") {
		t.Errorf("Plan() modified the config: peers[0] is now %s", got)
	}
}

// A running speaker keeps its ASN and router-id while the selected peers
// still allow them, whatever the order of the peers: changing either would
// restart it and drop every session, also those that did not change.
func TestPlanKeepsRunningGlobal(t *testing.T) {
	cfg := parseConfig(t, `
peers:
- peer-address: 10.4.36.1
  peer-asn: 64524
  my-asn: 64513
  router-id: 192.0.2.1
- peer-address: 10.4.36.2
  peer-asn: 64524
  my-asn: 64514
  router-id: 192.0.2.2
`)
	node := &snapshot.Node{Name: "n", InternalIPs: addrs("10.4.36.10"), PodCIDRs: prefixes("10.244.1.0/24")}
	ip := netip.MustParseAddr
	for _, tc := range []struct {
		desc    string
		running Global
		want    Global
	}{
		{"not running: the first peer's", Global{}, Global{ASN: 64513, RouterID: ip("192.0.2.1")}},
		{"running with the second peer's: kept", Global{ASN: 64514, RouterID: ip("192.0.2.2")}, Global{ASN: 64514, RouterID: ip("192.0.2.2")}},
		{"running ASN still valid, router-id not", Global{ASN: 64514, RouterID: ip("192.0.2.9")}, Global{ASN: 64514, RouterID: ip("192.0.2.1")}},
		{"running with values no peer has: replaced", Global{ASN: 64999, RouterID: ip("192.0.2.9")}, Global{ASN: 64513, RouterID: ip("192.0.2.1")}},
	} {
		got, _ := Plan(snap(node, cfg), tc.running)
		if got.Global != tc.want {
			t.Errorf("%s: Global = %+v, want %+v", tc.desc, got.Global, tc.want)
		}
		// The sessions themselves do not depend on the running Global.
		if len(got.Peers) != 2 || got.Peers[0].LocalASN != 64513 || got.Peers[1].LocalASN != 64514 {
			t.Errorf("%s: peers %+v", tc.desc, got.Peers)
		}
	}
	// Without configured router-ids the node's address is kept as well.
	cfg = parseConfig(t, "peers:\n- {peer-address: 10.4.36.1, peer-asn: 64524, my-asn: 64513}\n")
	running := Global{ASN: 64513, RouterID: ip("10.4.36.10")}
	if got, _ := Plan(snap(node, cfg), running); got.Global != running {
		t.Errorf("node-address router-id: Global = %+v, want %+v", got.Global, running)
	}
}

func withAnnounce(s *snapshot.Snapshot, a snapshot.Announce) *snapshot.Snapshot {
	s.Announce = a
	return s
}

// --bgp-announce-pod-cidr and --bgp-announce-lb-ip each take their paths
// out of the plan and nothing else: the sessions stay, so the node still
// learns the fabric's routes.
func TestPlanAnnounceFlags(t *testing.T) {
	cfg := parseConfig(t, lbConfig)
	// An IPv6 pod CIDR without an IPv6 InternalIP and an address outside
	// every pool: each warns only while its kind is announced.
	node := worker(nil)
	node.PodCIDRs = prefixes("10.244.1.0/24", "fd00:244:1::/64")
	svcs := []snapshot.Service{lbSvc("web", "192.0.2.10"), lbSvc("stray", "172.16.0.1")}
	peers := []Peer{peerWithDefaults("10.4.36.238", 64524, 64513), peerWithDefaults("fd00::238", 64524, 64513)}
	global := Global{ASN: 64513, RouterID: netip.MustParseAddr("10.4.36.10")}
	podPath, lbPath := path("10.244.1.0/24", "10.4.36.10"), path("192.0.2.10/32", "10.4.36.10")
	const disabled = "LB IP announcement disabled (--bgp-announce-lb-ip=false)"
	podWarning := "pod CIDR fd00:244:1::/64 not advertised"
	lbWarning := "service default/stray: address 172.16.0.1 not advertised"

	for _, tc := range []struct {
		desc         string
		announce     snapshot.Announce
		wantPaths    []Path
		wantWarnings []string
		wantStatuses []LBStatus
	}{
		{
			desc:         "defaults announce both",
			wantPaths:    []Path{podPath, lbPath},
			wantWarnings: []string{podWarning, lbWarning},
			wantStatuses: []LBStatus{
				{Namespace: "default", Name: "web", Addresses: addrs("192.0.2.10"), Pool: "public", Advertised: true},
				{Namespace: "default", Name: "stray", Addresses: addrs("172.16.0.1"), Reason: "address 172.16.0.1 outside every bgp pool"},
			},
		},
		{
			desc:         "pod CIDRs off",
			announce:     snapshot.Announce{PodCIDRsOff: true},
			wantPaths:    []Path{lbPath},
			wantWarnings: []string{lbWarning},
			wantStatuses: []LBStatus{
				{Namespace: "default", Name: "web", Addresses: addrs("192.0.2.10"), Pool: "public", Advertised: true},
				{Namespace: "default", Name: "stray", Addresses: addrs("172.16.0.1"), Reason: "address 172.16.0.1 outside every bgp pool"},
			},
		},
		{
			desc:         "LB IPs off",
			announce:     snapshot.Announce{LBIPsOff: true},
			wantPaths:    []Path{podPath},
			wantWarnings: []string{podWarning},
			wantStatuses: []LBStatus{
				{Namespace: "default", Name: "web", Addresses: addrs("192.0.2.10"), Pool: "public", Reason: disabled},
				{Namespace: "default", Name: "stray", Addresses: addrs("172.16.0.1"), Reason: disabled + "; address 172.16.0.1 outside every bgp pool"},
			},
		},
		{
			desc:     "both off: sessions without paths",
			announce: snapshot.Announce{PodCIDRsOff: true, LBIPsOff: true},
			wantStatuses: []LBStatus{
				{Namespace: "default", Name: "web", Addresses: addrs("192.0.2.10"), Pool: "public", Reason: disabled},
				{Namespace: "default", Name: "stray", Addresses: addrs("172.16.0.1"), Reason: disabled + "; address 172.16.0.1 outside every bgp pool"},
			},
		},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			s := withAnnounce(withServices(snap(node, cfg), svcs...), tc.announce)
			got, warnings := Plan(s, Global{})
			want := Desired{Global: global, Peers: peers, Paths: tc.wantPaths}
			if diff := cmp.Diff(want, got, planCmpOpts); diff != "" {
				t.Errorf("Plan() mismatch (-want +got):\n%s", diff)
			}
			checkWarnings(t, warnings, tc.wantWarnings)
			if diff := cmp.Diff(tc.wantStatuses, LBStatuses(s), planCmpOpts); diff != "" {
				t.Errorf("LBStatuses() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func withSecrets(s *snapshot.Snapshot, sec snapshot.Secrets) *snapshot.Snapshot {
	s.Secrets = sec
	return s
}

func secrets(entries map[string]snapshot.SecretEntry) snapshot.Secrets {
	return snapshot.Secrets{Synced: true, Namespace: "kube-system", ByName: entries}
}

func withPassword(p Peer, pw string) Peer {
	p.Password = secret.New(pw)
	return p
}

// A peer's password-secret supplies its password; a Secret that cannot
// serve leaves that one session out, with a warning naming the Secret and
// never its content, and the others keep running.
func TestPlanPasswordSecret(t *testing.T) {
	cfg := parseConfig(t, `
peers:
- peer-address: 10.4.36.2
  peer-asn: 64524
  my-asn: 64514
  password-secret: bgp-b
- peer-address: 10.4.36.1
  peer-asn: 64524
  my-asn: 64513
  password-secret: bgp-a
- peer-address: 10.4.36.3
  peer-asn: 64524
  my-asn: 64513
  password: inline-key
`)
	onlySecret := parseConfig(t, "peers:\n- {peer-address: 10.4.36.1, peer-asn: 64524, my-asn: 64513, password-secret: bgp-a}\n")
	const pwA, pwB = "key-of-a", "key-of-b"
	a := snapshot.SecretEntry{HasPassword: true, Password: secret.New(pwA)}
	b := snapshot.SecretEntry{HasPassword: true, Password: secret.New(pwB)}
	// Global comes from peers[0] (my-asn 64514) whether or not its Secret
	// serves: a Secret must never restart the speaker.
	global := Global{ASN: 64514, RouterID: netip.MustParseAddr("10.4.36.10")}
	podPath := []Path{path("10.244.1.0/24", "10.4.36.10")}
	p1 := withPassword(peerWithDefaults("10.4.36.1", 64524, 64513), pwA)
	p2 := withPassword(peerWithDefaults("10.4.36.2", 64524, 64514), pwB)
	p3 := withPassword(peerWithDefaults("10.4.36.3", 64524, 64513), "inline-key")

	for _, tc := range []struct {
		desc         string
		snapshot     *snapshot.Snapshot
		want         Desired
		wantWarnings []string
	}{
		{
			desc:     "every Secret serves",
			snapshot: withSecrets(snap(worker(nil), cfg), secrets(map[string]snapshot.SecretEntry{"bgp-a": a, "bgp-b": b, "other": {}})),
			want:     Desired{Global: global, Peers: []Peer{p1, p2, p3}, Paths: podPath},
		},
		{
			desc:         "Secrets not read yet: wait, start nothing",
			snapshot:     withSecrets(snap(worker(nil), cfg), snapshot.Secrets{Namespace: "kube-system"}),
			wantWarnings: []string{"waiting for the Secrets of namespace kube-system to be read (the agent needs get, list and watch on secrets there): peers[0] names password-secret bgp-b"},
		},
		{
			desc:         "missing Secret",
			snapshot:     withSecrets(snap(worker(nil), cfg), secrets(map[string]snapshot.SecretEntry{"bgp-a": a})),
			want:         Desired{Global: global, Peers: []Peer{p1, p3}, Paths: podPath},
			wantWarnings: []string{"peers[0] (peer-address 10.4.36.2) not configured: password-secret: secret kube-system/bgp-b not found"},
		},
		{
			desc:         "Secret without the key",
			snapshot:     withSecrets(snap(worker(nil), cfg), secrets(map[string]snapshot.SecretEntry{"bgp-a": a, "bgp-b": {}})),
			want:         Desired{Global: global, Peers: []Peer{p1, p3}, Paths: podPath},
			wantWarnings: []string{`peers[0] (peer-address 10.4.36.2) not configured: password-secret: secret kube-system/bgp-b has no key "password"`},
		},
		{
			desc:         "empty key",
			snapshot:     withSecrets(snap(worker(nil), cfg), secrets(map[string]snapshot.SecretEntry{"bgp-a": a, "bgp-b": {HasPassword: true}})),
			want:         Desired{Global: global, Peers: []Peer{p1, p3}, Paths: podPath},
			wantWarnings: []string{`password-secret: key "password" of secret kube-system/bgp-b is empty`},
		},
		{
			desc: "key too long for TCP MD5",
			snapshot: withSecrets(snap(worker(nil), cfg), secrets(map[string]snapshot.SecretEntry{
				"bgp-a": {HasPassword: true, Password: secret.New(strings.Repeat(pwA, 11))}, "bgp-b": b,
			})),
			want:         Desired{Global: global, Peers: []Peer{p2, p3}, Paths: podPath},
			wantWarnings: []string{`peers[1] (peer-address 10.4.36.1) not configured: password-secret: key "password" of secret kube-system/bgp-a is 88 bytes long, TCP MD5 keys are at most 80`},
		},
		{
			desc:         "the only peer's Secret is missing: BGP stays down",
			snapshot:     withSecrets(snap(worker(nil), onlySecret), secrets(nil)),
			wantWarnings: []string{"peers[0] (peer-address 10.4.36.1) not configured: password-secret: secret kube-system/bgp-a not found"},
		},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, warnings := Plan(tc.snapshot, Global{})
			if diff := cmp.Diff(tc.want, got, planCmpOpts); diff != "" {
				t.Errorf("Plan() mismatch (-want +got):\n%s", diff)
			}
			checkWarnings(t, warnings, tc.wantWarnings)
			// Waiting for the Secrets keeps the node from being ready.
			if ready, waiting := ConfigCheck(tc.snapshot), !tc.snapshot.Secrets.Synced; (ready != "") != waiting {
				t.Errorf("ConfigCheck() = %q, want a reason only while waiting for the Secrets", ready)
			}
			// PeerSecretProblems names the same peers, for the Events.
			var wantProblems, gotProblems []string
			for _, w := range warnings {
				if strings.Contains(w, "not configured") {
					wantProblems = append(wantProblems, w)
				}
			}
			for _, p := range PeerSecretProblems(tc.snapshot) {
				gotProblems = append(gotProblems, p.String())
			}
			if diff := cmp.Diff(wantProblems, gotProblems); diff != "" {
				t.Errorf("PeerSecretProblems() mismatch with the warnings (-want +got):\n%s", diff)
			}
			for _, w := range warnings {
				for _, pw := range []string{pwA, pwB, "inline-key"} {
					if strings.Contains(w, pw) {
						t.Errorf("warning %q shows a password", w)
					}
				}
			}
		})
	}
}

// A session with dual-stack-address-family carries both families: it is
// enough for a dual-stack node's IPv6 pod CIDR and LoadBalancer IPs, and
// its next-hop settings reach the speaker.
func TestPlanDualStackSession(t *testing.T) {
	pools := `address-pools:
- name: public
  protocol: bgp
  addresses: [192.0.2.0/24, 2001:db8:1::/64]
`
	dual := parseConfig(t, `
peers:
- peer-address: 10.4.36.238
  peer-asn: 64524
  my-asn: 64513
  dual-stack-address-family: true
  ipv6-next-hop: fd00::99
`+pools)
	single := parseConfig(t, twoToRs+pools)
	v6Dual := parseConfig(t, "peers:\n- {peer-address: 'fd00::1', peer-asn: 64524, my-asn: 64513, dual-stack-address-family: true}\n"+pools)
	node := &snapshot.Node{
		Name:        "worker-1",
		InternalIPs: addrs("10.4.36.10", "fd00::10"),
		PodCIDRs:    prefixes("10.244.1.0/24", "fd00:244:1::/64"),
	}
	svc := lbSvc("web", "192.0.2.10", "2001:db8:1::10")
	global := Global{ASN: 64513, RouterID: netip.MustParseAddr("10.4.36.10")}
	// The planned paths keep the node's own next hops: a configured next
	// hop is the speaker's business, per peer.
	paths := []Path{
		path("10.244.1.0/24", "10.4.36.10"),
		path("192.0.2.10/32", "10.4.36.10"),
		path("2001:db8:1::10/128", "fd00::10"),
		path("fd00:244:1::/64", "fd00::10"),
	}
	dualPeer := peerWithDefaults("10.4.36.238", 64524, 64513)
	dualPeer.DualStack = true
	dualPeer.IPv6NextHop = netip.MustParseAddr("fd00::99")
	v6Peer := peerWithDefaults("fd00::1", 64524, 64513)
	v6Peer.DualStack = true

	for _, tc := range []struct {
		desc         string
		cfg          *config.Config
		wantPeers    []Peer
		wantWarnings []string
	}{
		{
			desc:      "IPv4 session carrying IPv6",
			cfg:       dual,
			wantPeers: []Peer{dualPeer},
		},
		{
			desc:      "IPv6 session carrying IPv4",
			cfg:       v6Dual,
			wantPeers: []Peer{v6Peer},
		},
		{
			desc:      "one family per session: IPv6 reaches no peer",
			cfg:       single,
			wantPeers: []Peer{peerWithDefaults("10.4.36.238", 64524, 64513), peerWithDefaults("10.4.36.239", 64524, 64513)},
			wantWarnings: []string{
				"pod CIDR fd00:244:1::/64 reaches no peer: no selected peer carries its family (a peer-address of IPv6, or dual-stack-address-family: true)",
				"1 LoadBalancer prefixes of IPv6 reach no peer: no selected peer carries that family",
			},
		},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, warnings := Plan(withServices(snap(node, tc.cfg), svc), Global{})
			want := Desired{Global: global, Peers: tc.wantPeers, Paths: paths}
			if diff := cmp.Diff(want, got, planCmpOpts); diff != "" {
				t.Errorf("Plan() mismatch (-want +got):\n%s", diff)
			}
			checkWarnings(t, warnings, tc.wantWarnings)
		})
	}
}

// With BGP off on the node (--bgp-config "": no bgp-config watched, the
// snapshot's BGP section zero, the Secrets never read) the plan is the
// zero Desired, which stops the speaker, and readiness waits for nothing;
// a bgp-config that is watched but has never parsed still holds it back.
func TestPlanWithBGPOff(t *testing.T) {
	s := withServices(snap(worker(nil), nil), lbSvc("web", "192.0.2.10"))
	s.BGP = snapshot.BGPConfig{}
	running := Global{ASN: 64513, RouterID: netip.MustParseAddr("10.4.36.10")}
	got, warnings := Plan(s, running)
	if diff := cmp.Diff(Desired{}, got, planCmpOpts); diff != "" {
		t.Errorf("Plan() with BGP off (-want +got):\n%s", diff)
	}
	checkWarnings(t, warnings, nil)
	if r := ConfigCheck(s); r != "" {
		t.Errorf("ConfigCheck() with BGP off = %q, want ready", r)
	}
	if p := PeerSecretProblems(s); p != nil {
		t.Errorf("PeerSecretProblems() with BGP off = %v, want none", p)
	}

	never := snap(worker(nil), nil)
	never.BGP.Present, never.BGP.Err, never.BGP.ErrVersion = true, errors.New("peers[0].peer-asn: missing"), "6"
	if r := ConfigCheck(never); !strings.Contains(r, "metallb-system/bgp-config exists but no version of it has been valid") {
		t.Errorf("ConfigCheck() of a bgp-config never valid = %q, want it to wait", r)
	}
}
