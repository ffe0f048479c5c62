package main

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	apiv1 "routeagent.io/route-agent/api/v1"
)

func samplePeers() []*apiv1.BGPPeerFamily {
	return []*apiv1.BGPPeerFamily{
		{
			LocalAs: 64513, PeerAs: 64512, PeerAddress: "10.0.0.1", PeerPort: 179,
			SessionState: "established", UptimeSeconds: 3723, Family: "ipv4/unicast",
			Received: 12, Advertised: 3,
		},
		{
			LocalAs: 64513, PeerAs: 64512, PeerAddress: "fd00::1", PeerPort: 179,
			SessionState: "active", UptimeSeconds: 0, Family: "ipv6/unicast",
		},
	}
}

func TestPrintPeersTable(t *testing.T) {
	tests := []struct {
		desc  string
		peers []*apiv1.BGPPeerFamily
		want  string
	}{
		{
			desc:  "IPv4 and IPv6",
			peers: samplePeers(),
			// Columns are padded to the widest cell plus 3 spaces; the last
			// column is not padded.
			want: "" +
				"Local AS   Peer AS   Peer Address    Session       Uptime   Family         Received   Advertised\n" +
				"64513      64512     10.0.0.1:179    established   1h2m3s   ipv4/unicast   12         3\n" +
				"64513      64512     [fd00::1]:179   active        0s       ipv6/unicast   0          0\n",
		},
		{
			desc: "wide values widen their columns",
			peers: []*apiv1.BGPPeerFamily{{
				LocalAs: 4200000000, PeerAs: 4200000001, PeerAddress: "2001:db8:1234:5678::abcd", PeerPort: 1179,
				SessionState: "openconfirm", UptimeSeconds: 90061, Family: "ipv6/unicast",
				Received: 1234567, Advertised: 89,
			}},
			want: "" +
				"Local AS     Peer AS      Peer Address                      Session       Uptime    Family         Received   Advertised\n" +
				"4200000000   4200000001   [2001:db8:1234:5678::abcd]:1179   openconfirm   25h1m1s   ipv6/unicast   1234567    89\n",
		},
		{
			desc: "not an IP address",
			peers: []*apiv1.BGPPeerFamily{{
				LocalAs: 1, PeerAs: 2, PeerAddress: "peer.example", PeerPort: 179,
				SessionState: "idle", Family: "ipv4/unicast",
			}},
			want: "" +
				"Local AS   Peer AS   Peer Address       Session   Uptime   Family         Received   Advertised\n" +
				"1          2         peer.example:179   idle      0s       ipv4/unicast   0          0\n",
		},
		{
			desc:  "empty",
			peers: nil,
			want:  "No BGP peers selected for this node (see `routectl status`).\n",
		},
		{
			desc:  "empty, not nil",
			peers: []*apiv1.BGPPeerFamily{},
			want:  "No BGP peers selected for this node (see `routectl status`).\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			var b bytes.Buffer
			if err := printPeers(&b, "table", tc.peers); err != nil {
				t.Fatalf("printPeers: %v", err)
			}
			if diff := cmp.Diff(tc.want, b.String()); diff != "" {
				t.Errorf("printPeers table (-want +got):\n%s\ngot:\n%s", diff, b.String())
			}
		})
	}
}

func TestHostPort(t *testing.T) {
	tests := []struct {
		addr string
		port uint32
		want string
	}{
		{"10.0.0.1", 179, "10.0.0.1:179"},
		{"fd00::1", 179, "[fd00::1]:179"},
		{"fd00:0:0::1", 1179, "[fd00::1]:1179"}, // printed in canonical form
		{"::ffff:10.0.0.1", 179, "[::ffff:10.0.0.1]:179"},
		{"fe80::1%eth0", 179, "[fe80::1%eth0]:179"},
		{"peer.example", 179, "peer.example:179"},
		{"10.0.0.1", 0, "10.0.0.1:0"},
		{"10.0.0.1", 65535, "10.0.0.1:65535"},
	}
	for _, tc := range tests {
		if got := hostPort(tc.addr, tc.port); got != tc.want {
			t.Errorf("hostPort(%q, %d) = %q, want %q", tc.addr, tc.port, got, tc.want)
		}
	}
}

func TestHostPortOutOfRange(t *testing.T) {
	// peer_port is a uint32 on the wire: print what came, never truncate.
	if got := hostPort("10.0.0.1", 65536+179); got != "10.0.0.1:65715" {
		t.Errorf("hostPort = %q, want %q", got, "10.0.0.1:65715")
	}
}

func TestPrintPeersJSON(t *testing.T) {
	var b bytes.Buffer
	if err := printPeers(&b, "json", samplePeers()); err != nil {
		t.Fatalf("printPeers: %v", err)
	}
	want := `[
  {
    "localAS": 64513,
    "peerAS": 64512,
    "peerAddress": "10.0.0.1",
    "peerPort": 179,
    "sessionState": "established",
    "uptimeSeconds": 3723,
    "family": "ipv4/unicast",
    "received": 12,
    "advertised": 3
  },
  {
    "localAS": 64513,
    "peerAS": 64512,
    "peerAddress": "fd00::1",
    "peerPort": 179,
    "sessionState": "active",
    "uptimeSeconds": 0,
    "family": "ipv6/unicast",
    "received": 0,
    "advertised": 0
  }
]
`
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("printPeers json (-want +got):\n%s", diff)
	}

	// The field names are the contract: exactly these, on every row, even
	// when the values are zero.
	var rows []map[string]any
	if err := json.Unmarshal(b.Bytes(), &rows); err != nil {
		t.Fatalf("output is not JSON: %v", err)
	}
	wantKeys := []string{"advertised", "family", "localAS", "peerAS", "peerAddress", "peerPort", "received", "sessionState", "uptimeSeconds"}
	for i, r := range rows {
		var keys []string
		for k := range r {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if diff := cmp.Diff(wantKeys, keys); diff != "" {
			t.Errorf("row %d keys (-want +got):\n%s", i, diff)
		}
	}
}

func TestPrintPeersJSONLargeValues(t *testing.T) {
	var b bytes.Buffer
	peers := []*apiv1.BGPPeerFamily{{LocalAs: 4294967295, PeerAs: 4200000000, Received: 1 << 40, Advertised: 1<<64 - 1, UptimeSeconds: 1 << 40}}
	if err := printPeers(&b, "json", peers); err != nil {
		t.Fatalf("printPeers: %v", err)
	}
	var rows []peerRow
	if err := json.Unmarshal(b.Bytes(), &rows); err != nil {
		t.Fatalf("output is not JSON: %v", err)
	}
	want := []peerRow{{LocalAS: 4294967295, PeerAS: 4200000000, Received: 1 << 40, Advertised: 1<<64 - 1, UptimeSeconds: 1 << 40}}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestPrintPeersJSONEmpty(t *testing.T) {
	for _, peers := range [][]*apiv1.BGPPeerFamily{nil, {}} {
		var b bytes.Buffer
		if err := printPeers(&b, "json", peers); err != nil {
			t.Fatalf("printPeers: %v", err)
		}
		if b.String() != "[]\n" {
			t.Errorf("printPeers(json, %#v) = %q, want %q", peers, b.String(), "[]\n")
		}
	}
}

func TestPrintStatusTable(t *testing.T) {
	tests := []struct {
		desc string
		in   *apiv1.StatusResponse
		want string
	}{
		{
			desc: "healthy",
			in: &apiv1.StatusResponse{
				NodeName: "node-a", NodeKnown: true,
				NodeIps:   []string{"10.0.0.1", "fd00::1"},
				PodCidrs:  []string{"10.244.0.0/24", "fd00:244::/64"},
				BgpConfig: &apiv1.ConfigStatus{Source: "kube-system/bgp-config", Present: true, AppliedResourceVersion: "100"},
				BgpAsn:    64513, BgpRouterId: "10.0.0.1",
				Ready:        true,
				Masquerade:   &apiv1.MasqueradeStatus{Enabled: true, Implementation: "BPF", Summary: "BPF (ip-masq-agent) [eth0] 10.0.0.0/8"},
				IpMasqConfig: &apiv1.ConfigStatus{Source: "kube-system/ip-masq-agent", Present: true, AppliedResourceVersion: "7"},
				Parts: []*apiv1.PartStatus{
					{Name: "bgp", State: "ok", Runs: 7, LastSuccessUnixMs: testNow.UnixMilli() - 4500},
					{Name: "routing", State: "ok", Runs: 3, LastSuccessUnixMs: testNow.UnixMilli() - 60000},
				},
			},
			want: "" +
				"Node:           node-a\n" +
				"Node IPs:       10.0.0.1, fd00::1\n" +
				"Pod CIDRs:      10.244.0.0/24, fd00:244::/64\n" +
				"Ready:          yes\n" +
				"BGP config:     kube-system/bgp-config resourceVersion 100 in force\n" +
				"BGP speaker:    AS 64513, router-id 10.0.0.1\n" +
				"Masquerading:   BPF (ip-masq-agent) [eth0] 10.0.0.0/8\n" +
				"ip-masq-agent:  kube-system/ip-masq-agent resourceVersion 7 in force\n" +
				"\n" +
				"Part      State   Last Success   Runs   Failures   Last Error\n" +
				"bgp       ok      4s ago         7      0          \n" +
				"routing   ok      1m0s ago       3      0          \n",
		},
		{
			desc: "node not seen, no configmap",
			in: &apiv1.StatusResponse{
				NodeName:  "node-a",
				BgpConfig: &apiv1.ConfigStatus{Source: "kube-system/bgp-config"},
			},
			want: "" +
				"Node:          node-a (Node object not seen yet)\n" +
				"Node IPs:      none\n" +
				"Pod CIDRs:     none\n" +
				"Ready:         no\n" +
				"BGP config:    kube-system/bgp-config not found: no peers\n" +
				"BGP speaker:   off\n" +
				"Masquerading:  off\n",
		},
		{
			desc: "rejected multi-line config error, warnings, failing part",
			in: &apiv1.StatusResponse{
				NodeName: "node-a", NodeKnown: true,
				NodeIps:  []string{"10.0.0.1"},
				PodCidrs: []string{"10.244.0.0/24"},
				BgpConfig: &apiv1.ConfigStatus{
					Source: "kube-system/bgp-config", Present: true, AppliedResourceVersion: "100",
					Error:                "peers[0].peer-address: invalid IP address \"10.0.0.300\"\npeers[1].peer-asn: missing",
					ErrorResourceVersion: "101",
				},
				NotReadyReasons: []string{"bgp: failing for 2m0s: adding peer 10.0.0.1: boom"},
				Parts: []*apiv1.PartStatus{{
					Name: "bgp", State: "failing", Runs: 9, Failures: 4,
					LastError:          "adding peer 10.0.0.1: boom\nadding peer 10.0.0.2: bang",
					FailingSinceUnixMs: testNow.UnixMilli() - 120000, NextRetryUnixMs: testNow.UnixMilli() + 8000,
					Warnings: []string{"peers 0 and 1 select this node with different router-ids", "second warning"},
				}},
			},
			want: "" +
				"Node:              node-a\n" +
				"Node IPs:          10.0.0.1\n" +
				"Pod CIDRs:         10.244.0.0/24\n" +
				"Ready:             no\n" +
				"                     bgp: failing for 2m0s: adding peer 10.0.0.1: boom\n" +
				"BGP config:        kube-system/bgp-config resourceVersion 100 in force\n" +
				"BGP config error:  resourceVersion 101 rejected, the version above stays in force:\n" +
				"                     peers[0].peer-address: invalid IP address \"10.0.0.300\"\n" +
				"                     peers[1].peer-asn: missing\n" +
				"BGP speaker:       off\n" +
				"Masquerading:      off\n" +
				"\n" +
				"Part   State     Last Success   Runs   Failures   Last Error\n" +
				"bgp    failing   never          9      4          adding peer 10.0.0.1: boom ... (failing for 2m0s, retry in 8s)\n" +
				"Warning (bgp): peers 0 and 1 select this node with different router-ids\n" +
				"Warning (bgp): second warning\n" +
				"Error (bgp):\n" +
				"  adding peer 10.0.0.1: boom\n" +
				"  adding peer 10.0.0.2: bang\n",
		},
		{
			desc: "BGP disabled, tunnel",
			in: &apiv1.StatusResponse{
				NodeName: "node-a", NodeKnown: true,
				NodeIps:  []string{"10.0.0.1"},
				PodCidrs: []string{"10.244.0.0/24"},
				Ready:    true,
				Routing: &apiv1.RoutingStatus{Mode: "tunnel", AutoDirectNodeRoutes: true, TunnelProtocol: "vxlan", TunnelPort: 8472,
					TunnelDevice: "ra_vxlan", PodMtu: 1450, Counts: []*apiv1.RouteCount{{Kind: "tunnel", State: "installed", Count: 2}}},
				Parts: []*apiv1.PartStatus{{Name: "routing", State: "ok", Runs: 3, LastSuccessUnixMs: testNow.UnixMilli() - 2000}},
			},
			want: "" +
				"Node:          node-a\n" +
				"Node IPs:      10.0.0.1\n" +
				"Pod CIDRs:     10.244.0.0/24\n" +
				"Ready:         yes\n" +
				"BGP:           disabled (--bgp-config is empty): no sessions, no advertised paths, no learned routes\n" +
				"Routing:       tunnel, autoDirectNodeRoutes on, learned default route refused\n" +
				"Tunnel:        vxlan on UDP 8472, device ra_vxlan, pod MTU 1450\n" +
				"Routes:        2 tunnel installed; 0 healed\n" +
				"Masquerading:  off\n" +
				"\n" +
				"Part      State   Last Success   Runs   Failures   Last Error\n" +
				"routing   ok      2s ago         3      0          \n",
		},
		{
			desc: "present but nothing valid yet",
			in: &apiv1.StatusResponse{
				NodeName: "node-a", NodeKnown: true,
				BgpConfig: &apiv1.ConfigStatus{Source: "kube-system/bgp-config", Present: true},
			},
			want: "" +
				"Node:          node-a\n" +
				"Node IPs:      none\n" +
				"Pod CIDRs:     none\n" +
				"Ready:         no\n" +
				"BGP config:    kube-system/bgp-config: no valid version yet\n" +
				"BGP speaker:   off\n" +
				"Masquerading:  off\n",
		},
	}
	now = func() time.Time { return testNow }
	t.Cleanup(func() { now = time.Now })
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			var b bytes.Buffer
			if err := printStatus(&b, "table", tc.in); err != nil {
				t.Fatalf("printStatus: %v", err)
			}
			if diff := cmp.Diff(tc.want, b.String()); diff != "" {
				t.Errorf("printStatus table (-want +got):\n%s\ngot:\n%s", diff, b.String())
			}
		})
	}
}

// Every line of a config error is shown together with the rejected version,
// whatever else the status holds.
func TestPrintStatusTableErrorLines(t *testing.T) {
	errLines := []string{
		"invalid YAML: error converting YAML to JSON: yaml: line 3: did not find expected key",
		`peers[0]: unknown field "peer-adress" (did you mean "peer-address"?)`,
		"peers[0].peer-address: missing",
	}
	in := &apiv1.StatusResponse{
		NodeName: "n",
		BgpConfig: &apiv1.ConfigStatus{
			Source: "kube-system/bgp-config", Present: true,
			Error: strings.Join(errLines, "\n"), ErrorResourceVersion: "4711",
		},
	}
	var b bytes.Buffer
	if err := printStatus(&b, "table", in); err != nil {
		t.Fatalf("printStatus: %v", err)
	}
	out := b.String()
	if !strings.Contains(out, "resourceVersion 4711 rejected") {
		t.Errorf("output does not name the rejected resourceVersion 4711:\n%s", out)
	}
	if !strings.Contains(out, "no valid version yet") {
		t.Errorf("output does not say that no version is in force:\n%s", out)
	}
	for _, l := range errLines {
		if !strings.Contains(out, "  "+l+"\n") {
			t.Errorf("output lacks error line %q:\n%s", l, out)
		}
	}
}

func TestPrintStatusJSON(t *testing.T) {
	in := &apiv1.StatusResponse{
		NodeName: "node-a", NodeKnown: true,
		NodeIps:  []string{"10.0.0.1", "fd00::1"},
		PodCidrs: []string{"10.244.0.0/24"},
		BgpConfig: &apiv1.ConfigStatus{
			Source: "kube-system/bgp-config", Present: true, AppliedResourceVersion: "100",
			Error: "line one\nline two", ErrorResourceVersion: "101",
		},
		BgpAsn:          64513,
		BgpRouterId:     "10.0.0.1",
		NotReadyReasons: []string{"bgp: failing for 2m0s: boom"},
		Parts: []*apiv1.PartStatus{{Name: "bgp", State: "failing", Runs: 3, Failures: 1,
			LastRunUnixMs: testNow.UnixMilli(), LastSuccessUnixMs: testNow.UnixMilli() - 1000, LastDurationMs: 2,
			LastError: "boom", FailingSinceUnixMs: testNow.UnixMilli(), NextRetryUnixMs: testNow.UnixMilli() + 1000,
			Warnings: []string{"w1"}}},
	}
	var b bytes.Buffer
	if err := printStatus(&b, "json", in); err != nil {
		t.Fatalf("printStatus: %v", err)
	}
	want := `{
  "nodeName": "node-a",
  "nodeKnown": true,
  "nodeIPs": [
    "10.0.0.1",
    "fd00::1"
  ],
  "podCIDRs": [
    "10.244.0.0/24"
  ],
  "ready": false,
  "notReadyReasons": [
    "bgp: failing for 2m0s: boom"
  ],
  "bgpEnabled": true,
  "bgpConfig": {
    "source": "kube-system/bgp-config",
    "present": true,
    "appliedResourceVersion": "100",
    "error": "line one\nline two",
    "errorResourceVersion": "101"
  },
  "bgpASN": 64513,
  "bgpRouterID": "10.0.0.1",
  "parts": [
    {
      "name": "bgp",
      "state": "failing",
      "runs": 3,
      "failures": 1,
      "lastRun": "2026-11-23T10:00:00Z",
      "lastSuccess": "2026-11-23T09:59:59Z",
      "lastDurationMs": 2,
      "lastError": "boom",
      "failingSince": "2026-11-23T10:00:00Z",
      "nextRetry": "2026-11-23T10:00:01Z",
      "warnings": [
        "w1"
      ]
    }
  ]
}
`
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("printStatus json (-want +got):\n%s", diff)
	}
}

func TestPrintStatusJSONEmptyArrays(t *testing.T) {
	for _, in := range []*apiv1.StatusResponse{
		{NodeName: "node-a", BgpConfig: &apiv1.ConfigStatus{Source: "kube-system/bgp-config"}},
		{NodeName: "node-a"}, // no bgp_config: BGP is disabled
		nil,
	} {
		var b bytes.Buffer
		if err := printStatus(&b, "json", in); err != nil {
			t.Fatalf("printStatus: %v", err)
		}
		out := b.String()
		if strings.Contains(out, "null") {
			t.Errorf("JSON contains null:\n%s", out)
		}
		var got map[string]any
		if err := json.Unmarshal(b.Bytes(), &got); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		for _, k := range []string{"nodeIPs", "podCIDRs", "notReadyReasons", "parts"} {
			if v, ok := got[k].([]any); !ok || len(v) != 0 {
				t.Errorf("%s = %#v, want []", k, got[k])
			}
		}
		if enabled := in.GetBgpConfig() != nil; got["bgpEnabled"] != enabled {
			t.Errorf("bgpEnabled = %#v, want %v", got["bgpEnabled"], enabled)
		}
		if in.GetBgpConfig() == nil {
			if v, ok := got["bgpConfig"]; ok {
				t.Errorf("bgpConfig = %#v with BGP disabled, want it left out", v)
			}
			continue
		}
		cfg, ok := got["bgpConfig"].(map[string]any)
		if !ok {
			t.Fatalf("bgpConfig = %#v, want an object", got["bgpConfig"])
		}
		wantCfg := map[string]any{"source": in.GetBgpConfig().GetSource(), "present": false, "appliedResourceVersion": ""}
		if diff := cmp.Diff(wantCfg, cfg); diff != "" {
			t.Errorf("bgpConfig (-want +got):\n%s", diff)
		}
	}
}

func TestPrintRoutes(t *testing.T) {
	now = func() time.Time { return testNow }
	t.Cleanup(func() { now = time.Now })
	lp := func(v uint32) *uint32 { return &v }
	routes := []*apiv1.BGPRoute{
		{PeerAddress: "10.4.94.1", Family: "ipv4/unicast", Prefix: "10.5.112.0/24", NextHop: "10.4.94.11", AsPath: []uint32{64513},
			Communities: []string{"64513:100", "64513:200"}, SinceUnixMs: testNow.UnixMilli() - 192_000},
		{PeerAddress: "10.4.83.1", Family: "ipv4/unicast", Prefix: "10.5.119.0/24", NextHop: "10.4.83.11", LocalPref: lp(100),
			LargeCommunities: []string{"4200000000:1:2"}, SinceUnixMs: testNow.UnixMilli() - 3*3600_000 - 5_000},
		{PeerAddress: "10.4.83.1", Family: "ipv4/unicast", Prefix: "10.7.0.1/32", NextHop: "10.4.83.11", LocalPref: lp(0),
			Communities: []string{"64512:1"}, LargeCommunities: []string{"64512:0:1"}},
	}
	var b bytes.Buffer
	if err := printRoutes(&b, "table", routes); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"Peer        Family         Prefix          Next Hop     AS Path   Local Pref   Communities           Age\n" +
		"10.4.94.1   ipv4/unicast   10.5.112.0/24   10.4.94.11   64513     -            64513:100 64513:200   3m12s\n" +
		"10.4.83.1   ipv4/unicast   10.5.119.0/24   10.4.83.11   -         100          4200000000:1:2        3h0m5s\n" +
		"10.4.83.1   ipv4/unicast   10.7.0.1/32     10.4.83.11   -         0            64512:1 64512:0:1     -\n"
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("table (-want +got):\n%s", diff)
	}

	b.Reset()
	if err := printRoutes(&b, "json", routes); err != nil {
		t.Fatal(err)
	}
	var rows []map[string]any
	if err := json.Unmarshal(b.Bytes(), &rows); err != nil {
		t.Fatal(err)
	}
	wantRows := []map[string]any{
		{"peerAddress": "10.4.94.1", "family": "ipv4/unicast", "prefix": "10.5.112.0/24", "nextHop": "10.4.94.11",
			"asPath": []any{64513.0}, "communities": []any{"64513:100", "64513:200"}, "largeCommunities": []any{},
			"localPref": nil, "since": "2026-11-23T09:56:48Z", "ageSeconds": 192.0},
		// An empty AS path is [], a LOCAL_PREF of 0 is 0 and not null.
		{"peerAddress": "10.4.83.1", "family": "ipv4/unicast", "prefix": "10.5.119.0/24", "nextHop": "10.4.83.11",
			"asPath": []any{}, "communities": []any{}, "largeCommunities": []any{"4200000000:1:2"},
			"localPref": 100.0, "since": "2026-11-23T06:59:55Z", "ageSeconds": 10805.0},
		// An unknown time leaves since and ageSeconds out.
		{"peerAddress": "10.4.83.1", "family": "ipv4/unicast", "prefix": "10.7.0.1/32", "nextHop": "10.4.83.11",
			"asPath": []any{}, "communities": []any{"64512:1"}, "largeCommunities": []any{"64512:0:1"}, "localPref": 0.0},
	}
	if diff := cmp.Diff(wantRows, rows); diff != "" {
		t.Errorf("json (-want +got):\n%s", diff)
	}

	b.Reset()
	if err := printRoutes(&b, "table", nil); err != nil || b.String() != "No paths.\n" {
		t.Errorf("empty table = %q, %v", b.String(), err)
	}
	b.Reset()
	if err := printRoutes(&b, "json", nil); err != nil || b.String() != "[]\n" {
		t.Errorf("empty json = %q, %v", b.String(), err)
	}
}

var testNow = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

func TestPrintReceivedRoutesWithKernelState(t *testing.T) {
	now = func() time.Time { return testNow }
	t.Cleanup(func() { now = time.Now })
	routes := []*apiv1.BGPRoute{
		{PeerAddress: "10.4.94.1", Family: "ipv4/unicast", Prefix: "0.0.0.0/0", NextHop: "10.4.94.1", AsPath: []uint32{64524},
			SinceUnixMs: testNow.UnixMilli() - 45_000, Kernel: "refused: learned default route (--install-default-route is off)"},
		{PeerAddress: "10.4.94.1", Family: "ipv4/unicast", Prefix: "10.5.119.0/24", NextHop: "10.4.94.1", AsPath: []uint32{64524, 64512},
			SinceUnixMs: testNow.UnixMilli() - 45_000, Kernel: "installed"},
	}
	var b bytes.Buffer
	if err := printRoutes(&b, "table", routes); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"Peer        Family         Prefix          Next Hop    AS Path       Local Pref   Communities   Age   Kernel\n" +
		"10.4.94.1   ipv4/unicast   0.0.0.0/0       10.4.94.1   64524         -            -             45s   refused: learned default route (--install-default-route is off)\n" +
		"10.4.94.1   ipv4/unicast   10.5.119.0/24   10.4.94.1   64524 64512   -            -             45s   installed\n"
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("table (-want +got):\n%s", diff)
	}
	b.Reset()
	if err := printRoutes(&b, "json", routes[1:]); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `"kernel": "installed"`) {
		t.Errorf("JSON lacks the kernel state:\n%s", b.String())
	}
}

func TestPrintKernelRoutes(t *testing.T) {
	now = func() time.Time { return testNow }
	t.Cleanup(func() { now = time.Now })
	routes := []*apiv1.Route{
		{Prefix: "10.4.94.0/24", NextHop: "10.4.94.1", Kind: "bgp", For: "10.4.94.1", State: "refused",
			Reason: "connected on this node", SinceUnixMs: testNow.UnixMilli() - 33000},
		{Prefix: "10.5.114.0/24", NextHop: "10.4.94.12", Device: "eth0", Kind: "direct", For: "rack94-node2", State: "installed",
			SinceUnixMs: testNow.UnixMilli() - 36000},
	}
	var b bytes.Buffer
	if err := printKernelRoutes(&b, "table", routes); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"Prefix          Next Hop     Device   Kind     For            State                             Since\n" +
		"10.4.94.0/24    10.4.94.1    -        bgp      10.4.94.1      refused: connected on this node   33s ago\n" +
		"10.5.114.0/24   10.4.94.12   eth0     direct   rack94-node2   installed                         36s ago\n"
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("table (-want +got):\n%s", diff)
	}
	b.Reset()
	if err := printKernelRoutes(&b, "json", routes[1:]); err != nil {
		t.Fatal(err)
	}
	wantJSON := `[
  {
    "prefix": "10.5.114.0/24",
    "nextHop": "10.4.94.12",
    "device": "eth0",
    "kind": "direct",
    "for": "rack94-node2",
    "state": "installed",
    "since": "2026-11-23T09:59:24Z"
  }
]
`
	if diff := cmp.Diff(wantJSON, b.String()); diff != "" {
		t.Errorf("json (-want +got):\n%s", diff)
	}
	b.Reset()
	if err := printKernelRoutes(&b, "json", nil); err != nil || b.String() != "[]\n" {
		t.Errorf("empty JSON = %q, %v; want []", b.String(), err)
	}
}

func TestPrintServices(t *testing.T) {
	svcs := []*apiv1.LBService{
		{Namespace: "default", Name: "web", Addresses: []string{"10.7.0.1"}, Pool: "default", Advertised: true},
		{Namespace: "default", Name: "db", Addresses: []string{"10.7.0.2"}, Pool: "default", Reason: "no local endpoint"},
	}
	var b strings.Builder
	if err := printServices(&b, "table", svcs); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"Service       Addresses   Pool      Advertised   Why not\n" +
		"default/web   10.7.0.1    default   yes          -\n" +
		"default/db    10.7.0.2    default   no           no local endpoint\n"
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("table (-want +got):\n%s", diff)
	}
	b.Reset()
	if err := printServices(&b, "json", svcs[1:]); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `"reason": "no local endpoint"`) || !strings.Contains(b.String(), `"advertised": false`) {
		t.Errorf("json:\n%s", b.String())
	}
}
