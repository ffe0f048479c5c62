package bgp

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"routeagent.io/route-agent/bgp/config"
	"routeagent.io/route-agent/cluster/snapshot"
)

// lbConfig has a peer of each family, so that no case warns about a family
// without a peer unless it means to.
const lbConfig = `
peers:
- peer-address: 10.4.36.238
  peer-asn: 64524
  my-asn: 64513
- peer-address: fd00::238
  peer-asn: 64524
  my-asn: 64513
bgp-communities:
  no-export: 65535:65281
address-pools:
- name: public
  protocol: bgp
  addresses: [192.0.2.0/24, 2001:db8:1::/64]
- name: aggregated
  protocol: bgp
  addresses: [198.51.100.0/24, 2001:db8:2::/64]
  bgp-advertisements:
  - localpref: 100
    communities: [no-export]
  - aggregation-length: 24
    aggregation-length-v6: 64
    localpref: 50
    communities: ["64512:1"]
- name: same-prefix
  protocol: bgp
  addresses: [203.0.113.0/28]
  bgp-advertisements:
  - localpref: 100
    communities: ["64512:1"]
  - localpref: 200
    communities: ["64512:2", "64512:1"]
- name: pods
  protocol: bgp
  addresses: [10.244.1.0/24]
  bgp-advertisements:
  - {}
  - aggregation-length: 24
- name: l2
  protocol: layer2
  addresses: [192.168.10.0/24]
`

// lbSvc is a LoadBalancer Service of policy Cluster with a ready endpoint
// on another node.
func lbSvc(name string, ips ...string) snapshot.Service {
	return snapshot.Service{
		Namespace: "default", Name: name, LoadBalancer: true,
		Ingress: addrs(ips...), ReadyNodes: []string{"worker-2"}, HasReady: true,
	}
}

func local(s snapshot.Service) snapshot.Service {
	s.ExternalTrafficPolicyLocal = true
	return s
}

func readyOn(s snapshot.Service, nodes ...string) snapshot.Service {
	s.ReadyNodes, s.HasReady = nodes, len(nodes) > 0
	return s
}

func lbPath(prefix, nextHop string, localPref uint32, communities Communities) Path {
	p := path(prefix, nextHop)
	p.Attrs = Attrs{LocalPref: localPref, Communities: communities}
	return p
}

func dualStack() *snapshot.Node {
	n := worker(nil)
	n.InternalIPs = addrs("10.4.36.10", "fd00::10")
	n.PodCIDRs = prefixes("10.244.1.0/24", "fd00:244:1::/64")
	return n
}

func withServices(s *snapshot.Snapshot, svcs ...snapshot.Service) *snapshot.Snapshot {
	s.Services = svcs
	return s
}

func TestPlanLoadBalancer(t *testing.T) {
	cfg := parseConfig(t, lbConfig)
	cfgV4Peer := parseConfig(t, twoToRs+`address-pools:
- name: public
  protocol: bgp
  addresses: [192.0.2.0/24, 2001:db8:1::/64]
`)
	podPath := path("10.244.1.0/24", "10.4.36.10")
	podPath6 := path("fd00:244:1::/64", "fd00::10")
	tests := []struct {
		desc         string
		snapshot     *snapshot.Snapshot
		wantPaths    []Path
		wantStatuses []LBStatus
		wantWarnings []string
	}{
		{
			desc:         "policy Cluster: announced with a ready endpoint on another node",
			snapshot:     withServices(snap(worker(nil), cfg), lbSvc("web", "192.0.2.10")),
			wantPaths:    []Path{podPath, path("192.0.2.10/32", "10.4.36.10")},
			wantStatuses: []LBStatus{{Namespace: "default", Name: "web", Addresses: addrs("192.0.2.10"), Pool: "public", Advertised: true}},
		},
		{
			desc:      "policy Local: not announced without an endpoint on this node",
			snapshot:  withServices(snap(worker(nil), cfg), local(lbSvc("web", "192.0.2.10"))),
			wantPaths: []Path{podPath},
			wantStatuses: []LBStatus{{Namespace: "default", Name: "web", Addresses: addrs("192.0.2.10"), Pool: "public",
				Reason: "no local endpoint"}},
		},
		{
			desc:         "policy Local: announced with an endpoint on this node",
			snapshot:     withServices(snap(worker(nil), cfg), readyOn(local(lbSvc("web", "192.0.2.10")), "worker-1", "worker-2")),
			wantPaths:    []Path{podPath, path("192.0.2.10/32", "10.4.36.10")},
			wantStatuses: []LBStatus{{Namespace: "default", Name: "web", Addresses: addrs("192.0.2.10"), Pool: "public", Advertised: true}},
		},
		{
			desc: "no ready endpoint: neither policy is announced",
			snapshot: withServices(snap(worker(nil), cfg),
				readyOn(lbSvc("cluster", "192.0.2.10")), readyOn(local(lbSvc("local", "192.0.2.11")))),
			wantPaths: []Path{podPath},
			wantStatuses: []LBStatus{
				{Namespace: "default", Name: "cluster", Addresses: addrs("192.0.2.10"), Pool: "public", Reason: "no ready endpoint"},
				{Namespace: "default", Name: "local", Addresses: addrs("192.0.2.11"), Pool: "public", Reason: "no ready endpoint"},
			},
		},
		{
			desc:     "one path per advertisement, aggregated and with its attributes",
			snapshot: withServices(snap(worker(nil), cfg), lbSvc("web", "198.51.100.7")),
			wantPaths: []Path{
				podPath,
				lbPath("198.51.100.0/24", "10.4.36.10", 50, "64512:1"),
				lbPath("198.51.100.7/32", "10.4.36.10", 100, "65535:65281"),
			},
			wantStatuses: []LBStatus{{Namespace: "default", Name: "web", Addresses: addrs("198.51.100.7"), Pool: "aggregated", Advertised: true}},
		},
		{
			desc:     "an aggregate shared by two Services is one path",
			snapshot: withServices(snap(worker(nil), cfg), lbSvc("a", "198.51.100.7"), lbSvc("b", "198.51.100.200")),
			wantPaths: []Path{
				podPath,
				lbPath("198.51.100.0/24", "10.4.36.10", 50, "64512:1"),
				lbPath("198.51.100.7/32", "10.4.36.10", 100, "65535:65281"),
				lbPath("198.51.100.200/32", "10.4.36.10", 100, "65535:65281"),
			},
			wantStatuses: []LBStatus{
				{Namespace: "default", Name: "a", Addresses: addrs("198.51.100.7"), Pool: "aggregated", Advertised: true},
				{Namespace: "default", Name: "b", Addresses: addrs("198.51.100.200"), Pool: "aggregated", Advertised: true},
			},
		},
		{
			desc:         "advertisements giving the same prefix merge: union of communities, highest localpref",
			snapshot:     withServices(snap(worker(nil), cfg), lbSvc("web", "203.0.113.5")),
			wantPaths:    []Path{podPath, lbPath("203.0.113.5/32", "10.4.36.10", 200, "64512:1 64512:2")},
			wantStatuses: []LBStatus{{Namespace: "default", Name: "web", Addresses: addrs("203.0.113.5"), Pool: "same-prefix", Advertised: true}},
		},
		{
			desc:      "an address outside every pool warns",
			snapshot:  withServices(snap(worker(nil), cfg), lbSvc("web", "100.64.0.1")),
			wantPaths: []Path{podPath},
			wantStatuses: []LBStatus{{Namespace: "default", Name: "web", Addresses: addrs("100.64.0.1"),
				Reason: "address 100.64.0.1 outside every bgp pool"}},
			wantWarnings: []string{"service default/web: address 100.64.0.1 not advertised: it lies in no address pool"},
		},
		{
			desc:      "an address of a layer2 pool is left to its speaker, silently",
			snapshot:  withServices(snap(worker(nil), cfg), lbSvc("web", "192.168.10.4")),
			wantPaths: []Path{podPath},
			wantStatuses: []LBStatus{{Namespace: "default", Name: "web", Addresses: addrs("192.168.10.4"), Pool: "l2",
				Reason: `address 192.168.10.4: pool "l2" is not bgp (protocol layer2)`}},
		},
		{
			desc: "classes: unset and ours are announced, another is not, not even checked against the pools",
			snapshot: withServices(snap(worker(nil), cfg),
				func() snapshot.Service { s := lbSvc("foreign", "100.64.0.1"); s.Class = "example.com/lb"; return s }(),
				func() snapshot.Service { s := lbSvc("ours", "192.0.2.11"); s.Class = LoadBalancerClass; return s }(),
				lbSvc("unset", "192.0.2.12"),
			),
			wantPaths: []Path{podPath, path("192.0.2.11/32", "10.4.36.10"), path("192.0.2.12/32", "10.4.36.10")},
			wantStatuses: []LBStatus{
				{Namespace: "default", Name: "foreign", Addresses: addrs("100.64.0.1"), Reason: `class "example.com/lb" is not ours`},
				{Namespace: "default", Name: "ours", Addresses: addrs("192.0.2.11"), Pool: "public", Advertised: true},
				{Namespace: "default", Name: "unset", Addresses: addrs("192.0.2.12"), Pool: "public", Advertised: true},
			},
		},
		{
			desc: "a shared address is one path, announced if any of its Services is",
			snapshot: withServices(snap(worker(nil), cfg),
				local(lbSvc("dns-tcp", "192.0.2.53")), lbSvc("dns-udp", "192.0.2.53"), local(lbSvc("other", "192.0.2.54"))),
			wantPaths: []Path{podPath, path("192.0.2.53/32", "10.4.36.10")},
			wantStatuses: []LBStatus{
				{Namespace: "default", Name: "dns-tcp", Addresses: addrs("192.0.2.53"), Pool: "public", Reason: "no local endpoint"},
				{Namespace: "default", Name: "dns-udp", Addresses: addrs("192.0.2.53"), Pool: "public", Advertised: true},
				{Namespace: "default", Name: "other", Addresses: addrs("192.0.2.54"), Pool: "public", Reason: "no local endpoint"},
			},
		},
		{
			desc:     "IPv6 with an IPv6 InternalIP, aggregated as configured for IPv6",
			snapshot: withServices(snap(dualStack(), cfg), lbSvc("agg", "2001:db8:2::7"), lbSvc("web", "192.0.2.10", "2001:db8:1::5")),
			wantPaths: []Path{
				podPath, path("192.0.2.10/32", "10.4.36.10"),
				lbPath("2001:db8:1::5/128", "fd00::10", 0, ""),
				lbPath("2001:db8:2::/64", "fd00::10", 50, "64512:1"),
				lbPath("2001:db8:2::7/128", "fd00::10", 100, "65535:65281"),
				podPath6,
			},
			wantStatuses: []LBStatus{
				{Namespace: "default", Name: "agg", Addresses: addrs("2001:db8:2::7"), Pool: "aggregated", Advertised: true},
				{Namespace: "default", Name: "web", Addresses: addrs("192.0.2.10", "2001:db8:1::5"), Pool: "public", Advertised: true},
			},
		},
		{
			desc:      "IPv6 without an IPv6 InternalIP warns; the IPv4 address is still announced",
			snapshot:  withServices(snap(worker(nil), cfg), lbSvc("web", "192.0.2.10", "2001:db8:1::5")),
			wantPaths: []Path{podPath, path("192.0.2.10/32", "10.4.36.10")},
			wantStatuses: []LBStatus{{Namespace: "default", Name: "web", Addresses: addrs("192.0.2.10", "2001:db8:1::5"), Pool: "public",
				Advertised: true, Reason: "address 2001:db8:1::5: node has no IPv6 InternalIP"}},
			wantWarnings: []string{"service default/web: address 2001:db8:1::5 not advertised: node worker-1 has no IPv6 InternalIP"},
		},
		{
			desc:         "IPv6 paths without an IPv6 peer stay planned, with one warning",
			snapshot:     withServices(snap(dualStack(), cfgV4Peer), lbSvc("a", "2001:db8:1::5"), lbSvc("b", "2001:db8:1::6")),
			wantPaths:    []Path{podPath, path("2001:db8:1::5/128", "fd00::10"), path("2001:db8:1::6/128", "fd00::10"), podPath6},
			wantWarnings: []string{"pod CIDR fd00:244:1::/64 reaches no peer", "2 LoadBalancer prefixes of IPv6 reach no peer"},
			wantStatuses: []LBStatus{
				{Namespace: "default", Name: "a", Addresses: addrs("2001:db8:1::5"), Pool: "public", Advertised: true},
				{Namespace: "default", Name: "b", Addresses: addrs("2001:db8:1::6"), Pool: "public", Advertised: true},
			},
		},
		{
			desc:         "an aggregate equal to this node's pod CIDR is not announced; the other advertisement is",
			snapshot:     withServices(snap(worker(nil), cfg), lbSvc("web", "10.244.1.200")),
			wantPaths:    []Path{podPath, path("10.244.1.200/32", "10.4.36.10")},
			wantStatuses: []LBStatus{{Namespace: "default", Name: "web", Addresses: addrs("10.244.1.200"), Pool: "pods", Advertised: true}},
			wantWarnings: []string{`service default/web: prefix 10.244.1.0/24 of address 10.244.1.200 not advertised: pool "pods" aggregates it to this node's pod CIDR`},
		},
		{
			desc: "Services without addresses or not of type LoadBalancer",
			snapshot: withServices(snap(worker(nil), cfg), lbSvc("pending"),
				func() snapshot.Service { s := lbSvc("plain", "192.0.2.10"); s.LoadBalancer = false; return s }()),
			wantPaths: []Path{podPath},
			wantStatuses: []LBStatus{
				{Namespace: "default", Name: "pending", Reason: "no ingress address assigned"},
				{Namespace: "default", Name: "plain", Addresses: addrs("192.0.2.10"), Reason: "not of type LoadBalancer"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			d, warnings := Plan(tc.snapshot, Global{})
			if diff := cmp.Diff(tc.wantPaths, d.Paths, planCmpOpts); diff != "" {
				t.Errorf("Plan() paths mismatch (-want +got):\n%s", diff)
			}
			checkWarnings(t, warnings, tc.wantWarnings)
			if diff := cmp.Diff(tc.wantStatuses, LBStatuses(tc.snapshot), planCmpOpts); diff != "" {
				t.Errorf("LBStatuses() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// A Local Service's path follows its endpoint from node to node.
func TestPlanLoadBalancerFollowsEndpoint(t *testing.T) {
	cfg := parseConfig(t, lbConfig)
	svc := local(lbSvc("web", "192.0.2.10"))
	lbPathHere := path("192.0.2.10/32", "10.4.36.10")
	steps := []struct {
		readyOn []string
		want    bool
	}{
		{[]string{"worker-1"}, true},
		{[]string{"worker-2"}, false},
		{[]string{"worker-1", "worker-2"}, true},
		{nil, false},
		{[]string{"worker-1"}, true},
	}
	for i, step := range steps {
		d, _ := Plan(withServices(snap(worker(nil), cfg), readyOn(svc, step.readyOn...)), Global{})
		got := false
		for _, p := range d.Paths {
			got = got || p == lbPathHere
		}
		if got != step.want {
			t.Errorf("step %d, endpoints on %v: path for 192.0.2.10 planned = %v, want %v", i, step.readyOn, got, step.want)
		}
	}
}

// LBStatuses says when BGP itself keeps a Service from being announced.
func TestLBStatusesBGPDown(t *testing.T) {
	noPeerHere := parseConfig(t, `
peers:
- peer-address: 10.4.36.238
  peer-asn: 64524
  my-asn: 64513
  node-selectors:
  - match-labels: {rack: r9}
address-pools:
- name: public
  protocol: bgp
  addresses: [192.0.2.0/24]
`)
	svc := lbSvc("web", "192.0.2.10")
	tests := []struct {
		desc     string
		snapshot *snapshot.Snapshot
		want     []LBStatus
	}{
		{
			desc:     "no peer selects the node",
			snapshot: withServices(snap(worker(nil), noPeerHere), svc),
			want: []LBStatus{{Namespace: "default", Name: "web", Addresses: addrs("192.0.2.10"), Pool: "public",
				Reason: "BGP is down on this node: no peer selects it, or it has no router-id"}},
		},
		{
			desc:     "no bgp-config",
			snapshot: withServices(snap(worker(nil), nil), readyOn(svc)),
			want: []LBStatus{{Namespace: "default", Name: "web", Addresses: addrs("192.0.2.10"),
				Reason: "no bgp-config in force"}},
		},
		{
			desc:     "no Node object yet, and a reason of the Service's own",
			snapshot: withServices(snap(nil, noPeerHere), func() snapshot.Service { s := svc; s.Class = "x"; return s }()),
			want: []LBStatus{{Namespace: "default", Name: "web", Addresses: addrs("192.0.2.10"),
				Reason: `this node's Node object has not been seen; class "x" is not ours`}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, LBStatuses(tc.snapshot), planCmpOpts); diff != "" {
				t.Errorf("LBStatuses() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// The merge never loses a community to the shape of the input.
func TestMergeCommunities(t *testing.T) {
	a := &lbAttrs{localPref: 300, communities: []config.Community{{ASN: 64512, Value: 2}}}
	merge(a, &lbAttrs{localPref: 100, communities: []config.Community{{ASN: 64512, Value: 1}, {ASN: 64512, Value: 2}}})
	if a.localPref != 300 {
		t.Errorf("localPref = %d, want the highest, 300", a.localPref)
	}
	if got, want := NewCommunities(a.communities...), Communities("64512:1 64512:2"); got != want {
		t.Errorf("communities = %q, want %q", got, want)
	}
}
