package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/google/go-cmp/cmp"

	"k8s.io/apimachinery/pkg/labels"
	"routeagent.io/route-agent/secret"
)

const seedExample = `
peers:
- peer-address: 10.4.36.239
  peer-asn: 64524
  my-asn: 64513
- peer-address: 10.4.36.238
  peer-asn: 64524
  my-asn: 64513
- peer-address: 10.4.36.250
  peer-asn: 64512
  my-asn: 64512
  node-selectors:
  - match-expressions:
    - key: kubernetes/route
      operator: In
      values: ["bgp-peer-83"]
- peer-address: 10.4.36.251
  peer-asn: 64512
  my-asn: 64512
  node-selectors:
  - match-expressions:
    - key: kubernetes/route
      operator: In
      values: ["bgp-peer-83"]
address-pools:
- name: default
  protocol: bgp
  addresses:
  - 10.5.112.0/21
`

var cmpOpts = cmp.Options{
	cmp.Comparer(func(a, b labels.Selector) bool {
		if a == nil || b == nil {
			return a == nil && b == nil
		}
		return a.String() == b.String()
	}),
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

func sel(t testing.TB, s string) labels.Selector {
	t.Helper()
	sel, err := labels.Parse(s)
	if err != nil {
		t.Fatalf("labels.Parse(%q): %v", s, err)
	}
	return sel
}

// peer returns a peer with every default.
func peer(i int, addr string, asn, myASN uint32) Peer {
	return Peer{
		Index:         i,
		Address:       netip.MustParseAddr(addr),
		Port:          179,
		ASN:           asn,
		MyASN:         myASN,
		HoldTime:      90 * time.Second,
		KeepaliveTime: 30 * time.Second,
	}
}

var defaultAdvertisements = []Advertisement{{AggregationLength: 32, AggregationLengthV6: 128}}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// onePeer wraps peer fields (indented by four spaces) in a valid document.
func onePeer(fields string) string {
	return "peers:\n- peer-address: 10.0.0.1\n  peer-asn: 64512\n  my-asn: 64513\n" + fields
}

// onePool wraps pool fields in a valid document.
func onePool(fields string) string {
	return "address-pools:\n- name: p\n  protocol: bgp\n" + fields
}

type parseTest struct {
	desc  string
	input string
	want  func(t testing.TB) *Config
	// wantErr lists substrings of the error; each names a path and a value.
	wantErr []string
}

var validTests = []parseTest{
	{
		desc:  "seed example",
		input: seedExample,
		want: func(t testing.TB) *Config {
			p2, p3 := peer(2, "10.4.36.250", 64512, 64512), peer(3, "10.4.36.251", 64512, 64512)
			p2.NodeSelectors = []labels.Selector{sel(t, "kubernetes/route in (bgp-peer-83)")}
			p3.NodeSelectors = []labels.Selector{sel(t, "kubernetes/route in (bgp-peer-83)")}
			return &Config{
				Peers: []Peer{
					peer(0, "10.4.36.239", 64524, 64513),
					peer(1, "10.4.36.238", 64524, 64513),
					p2, p3,
				},
				Pools: []Pool{{
					Name:           "default",
					Protocol:       "bgp",
					Prefixes:       prefixes("10.5.112.0/21"),
					AutoAssign:     true,
					Advertisements: defaultAdvertisements,
				}},
			}
		},
	},
	{desc: "empty input", input: "", want: emptyConfig},
	{desc: "empty mapping", input: "{}", want: emptyConfig},
	{desc: "comments only", input: "# nothing yet\n---\n", want: emptyConfig},
	{desc: "null sections", input: "peers:\naddress-pools:\nbgp-communities:\n", want: emptyConfig},
	{desc: "empty sections", input: "peers: []\naddress-pools: []\nbgp-communities: {}\n", want: emptyConfig},
	{
		desc: "every peer field",
		input: onePeer(`  peer-port: 1179
  hold-time: 9s
  router-id: 192.0.2.1
  source-address: 10.0.0.2
  password: s3cret
  ebgp-multihop: true
  node-selectors:
  - match-labels:
      rack: r1
    match-expressions:
    - {key: zone, operator: NotIn, values: [a, b]}
    - {key: gpu, operator: Exists}
  - match-expressions:
    - {key: spare, operator: DoesNotExist}
`),
		want: func(t testing.TB) *Config {
			p := peer(0, "10.0.0.1", 64512, 64513)
			p.Port = 1179
			p.HoldTime, p.KeepaliveTime = 9*time.Second, 3*time.Second
			p.RouterID = netip.MustParseAddr("192.0.2.1")
			p.SourceAddress = netip.MustParseAddr("10.0.0.2")
			p.Password = secret.New("s3cret")
			p.EBGPMultihop = true
			p.NodeSelectors = []labels.Selector{
				sel(t, "gpu,rack=r1,zone notin (a,b)"),
				sel(t, "!spare"),
			}
			return &Config{Peers: []Peer{p}}
		},
	},
	{
		desc:  "password-secret",
		input: onePeer("  password-secret: bgp-tor83.md5\n"),
		want: func(testing.TB) *Config {
			p := peer(0, "10.0.0.1", 64512, 64513)
			p.PasswordSecret = "bgp-tor83.md5"
			return &Config{Peers: []Peer{p}}
		},
	},
	{
		desc:  "null password beside password-secret is absent",
		input: onePeer("  password:\n  password-secret: bgp\n"),
		want: func(testing.TB) *Config {
			p := peer(0, "10.0.0.1", 64512, 64513)
			p.PasswordSecret = "bgp"
			return &Config{Peers: []Peer{p}}
		},
	},
	{
		desc:  "IPv4 session carrying both families, with both next hops",
		input: onePeer("  dual-stack-address-family: true\n  ipv4-next-hop: 10.0.0.9\n  ipv6-next-hop: '2001:db8::9'\n"),
		want: func(testing.TB) *Config {
			p := peer(0, "10.0.0.1", 64512, 64513)
			p.DualStack = true
			p.IPv4NextHop = netip.MustParseAddr("10.0.0.9")
			p.IPv6NextHop = netip.MustParseAddr("2001:db8::9")
			return &Config{Peers: []Peer{p}}
		},
	},
	{
		desc:  "IPv6 session carrying both families",
		input: "peers:\n- {peer-address: '2001:db8::1', peer-asn: 1, my-asn: 2, dual-stack-address-family: true, ipv4-next-hop: 10.0.0.9}\n",
		want: func(testing.TB) *Config {
			p := peer(0, "2001:db8::1", 1, 2)
			p.DualStack = true
			p.IPv4NextHop = netip.MustParseAddr("10.0.0.9")
			return &Config{Peers: []Peer{p}}
		},
	},
	{
		desc:  "next hop of the session's own family, one family per session",
		input: "peers:\n- {peer-address: '2001:db8::1', peer-asn: 1, my-asn: 2, dual-stack-address-family: false, ipv6-next-hop: '2001:db8::9'}\n",
		want: func(testing.TB) *Config {
			p := peer(0, "2001:db8::1", 1, 2)
			p.IPv6NextHop = netip.MustParseAddr("2001:db8::9")
			return &Config{Peers: []Peer{p}}
		},
	},
	{
		desc:  "default keepalive is a third of hold-time, in whole seconds",
		input: onePeer("  hold-time: 10s\n"),
		want: func(testing.TB) *Config {
			p := peer(0, "10.0.0.1", 64512, 64513)
			p.HoldTime, p.KeepaliveTime = 10*time.Second, 3*time.Second
			return &Config{Peers: []Peer{p}}
		},
	},
	{
		desc:  "explicit keepalive-time, hold-time in minutes",
		input: onePeer("  hold-time: 3m\n  keepalive-time: 1m\n"),
		want: func(testing.TB) *Config {
			p := peer(0, "10.0.0.1", 64512, 64513)
			p.HoldTime, p.KeepaliveTime = 3*time.Minute, time.Minute
			return &Config{Peers: []Peer{p}}
		},
	},
	{
		desc:  "keepalive-time with the default hold-time",
		input: onePeer("  keepalive-time: 10s\n"),
		want: func(testing.TB) *Config {
			p := peer(0, "10.0.0.1", 64512, 64513)
			p.KeepaliveTime = 10 * time.Second
			return &Config{Peers: []Peer{p}}
		},
	},
	{
		desc:  "IPv6 peer, 4-byte ASNs",
		input: "peers:\n- {peer-address: '2001:db8::1', source-address: '2001:db8::2', peer-asn: 4200000000, my-asn: 4294967295}\n",
		want: func(testing.TB) *Config {
			p := peer(0, "2001:db8::1", 4200000000, 4294967295)
			p.SourceAddress = netip.MustParseAddr("2001:db8::2")
			return &Config{Peers: []Peer{p}}
		},
	},
	{
		desc:  "IPv4-mapped peer address is IPv4",
		input: "peers:\n- {peer-address: '::ffff:10.0.0.1', source-address: 10.0.0.2, peer-asn: 1, my-asn: 2}\n",
		want: func(testing.TB) *Config {
			p := peer(0, "10.0.0.1", 1, 2)
			p.SourceAddress = netip.MustParseAddr("10.0.0.2")
			return &Config{Peers: []Peer{p}}
		},
	},
	{
		desc:  "empty node-selectors means every node",
		input: onePeer("  node-selectors: []\n"),
		want: func(testing.TB) *Config {
			return &Config{Peers: []Peer{peer(0, "10.0.0.1", 64512, 64513)}}
		},
	},
	{
		desc:  "empty selector",
		input: onePeer("  node-selectors: [{}]\n"),
		want: func(testing.TB) *Config {
			p := peer(0, "10.0.0.1", 64512, 64513)
			p.NodeSelectors = []labels.Selector{labels.Everything()}
			return &Config{Peers: []Peer{p}}
		},
	},
	{
		desc:  "empty BFD settings configure nothing",
		input: "bfd-profiles: []\n" + onePeer("  bfd-profile: \"\"\n"),
		want: func(testing.TB) *Config {
			return &Config{Peers: []Peer{peer(0, "10.0.0.1", 64512, 64513)}}
		},
	},
	{
		desc: "same address for other nodes is not a duplicate",
		input: `peers:
- {peer-address: 10.0.0.1, peer-asn: 1, my-asn: 2}
- {peer-address: 10.0.0.1, peer-asn: 1, my-asn: 2, node-selectors: [{match-labels: {a: b}}]}
`,
		want: func(t testing.TB) *Config {
			p1 := peer(1, "10.0.0.1", 1, 2)
			p1.NodeSelectors = []labels.Selector{sel(t, "a=b")}
			return &Config{Peers: []Peer{peer(0, "10.0.0.1", 1, 2), p1}}
		},
	},
	{
		desc: "pool defaults",
		input: `address-pools:
- name: b
  protocol: bgp
  addresses: [10.0.0.0/24]
- name: l
  protocol: layer2
  addresses: [10.0.1.0/24]
`,
		want: func(testing.TB) *Config {
			return &Config{Pools: []Pool{
				{Name: "b", Protocol: "bgp", Prefixes: prefixes("10.0.0.0/24"), AutoAssign: true, Advertisements: defaultAdvertisements},
				{Name: "l", Protocol: "layer2", Prefixes: prefixes("10.0.1.0/24"), AutoAssign: true},
			}}
		},
	},
	{
		desc: "ranges and flags",
		input: onePool(`  auto-assign: false
  avoid-buggy-ips: true
  bgp-advertisements: []
  addresses:
  - 10.0.0.1-10.0.0.6
  - 10.0.1.0 - 10.0.1.255
  - 192.0.2.7-192.0.2.7
  - 2001:db8::-2001:db8::1:0
`),
		want: func(testing.TB) *Config {
			return &Config{Pools: []Pool{{
				Name:     "p",
				Protocol: "bgp",
				Prefixes: prefixes(
					"10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32",
					"10.0.1.0/24",
					"192.0.2.7/32",
					"2001:db8::/112", "2001:db8::1:0/128",
				),
				AvoidBuggyIPs:  true,
				Advertisements: defaultAdvertisements,
			}}}
		},
	},
	{
		desc: "advertisements",
		input: `bgp-communities:
  no-advertise: 65535:65282
  mine: "64512:1"
address-pools:
- name: p
  protocol: bgp
  addresses: [10.0.0.0/24, 2001:db8::/64, 10.0.1.0-10.0.1.255]
  bgp-advertisements:
  - aggregation-length: 24
    aggregation-length-v6: 64
    localpref: 4294967295
    communities: [no-advertise, 64512:1, mine, "0:0"]
  - localpref: 100
`,
		want: func(testing.TB) *Config {
			return &Config{
				Communities: map[string]Community{
					"no-advertise": {65535, 65282},
					"mine":         {64512, 1},
				},
				Pools: []Pool{{
					Name:       "p",
					Protocol:   "bgp",
					Prefixes:   prefixes("10.0.0.0/24", "2001:db8::/64", "10.0.1.0/24"),
					AutoAssign: true,
					Advertisements: []Advertisement{
						{
							AggregationLength:   24,
							AggregationLengthV6: 64,
							LocalPref:           4294967295,
							Communities:         []Community{{65535, 65282}, {64512, 1}, {0, 0}},
						},
						{AggregationLength: 32, AggregationLengthV6: 128, LocalPref: 100},
					},
				}},
			}
		},
	},
}

func emptyConfig(testing.TB) *Config { return &Config{} }

var errorTests = []parseTest{
	// Structure.
	{desc: "top level is a list", input: "- a\n", wantErr: []string{"expected a mapping at the top level, got a list"}},
	{desc: "yaml syntax", input: "peers: [\n", wantErr: []string{"invalid YAML"}},
	{desc: "duplicate yaml key", input: onePeer("  my-asn: 1\n"), wantErr: []string{`invalid YAML`, `"my-asn" already set`}},
	{desc: "unknown top-level field", input: "peer: []\n", wantErr: []string{`unknown top-level field "peer" (did you mean "peers"?)`}},
	{
		desc:    "unknown peer field",
		input:   onePeer("- peer-adress: 10.0.0.2\n  peer-asn: 1\n  my-asn: 2\n"),
		wantErr: []string{`peers[1]: unknown field "peer-adress" (did you mean "peer-address"?)`, "peers[1].peer-address: missing"},
	},
	{
		desc:    "every unknown field is reported",
		input:   onePeer("  foo: 1\n  bar: 2\n"),
		wantErr: []string{`peers[0]: unknown field "bar"`, `peers[0]: unknown field "foo"`},
	},
	{
		desc:    "unknown selector field",
		input:   onePeer("  node-selectors:\n  - matchLabels: {a: b}\n"),
		wantErr: []string{`peers[0].node-selectors[0]: unknown field "matchLabels"`},
	},
	{
		desc:    "unknown match-expressions field",
		input:   onePeer("  node-selectors:\n  - match-expressions: [{key: a, operator: Exists, value: [x]}]\n"),
		wantErr: []string{`peers[0].node-selectors[0].match-expressions[0]: unknown field "value" (did you mean "values"?)`},
	},
	{
		desc:    "unknown pool field",
		input:   onePool("  addresses: [10.0.0.0/24]\n  auto-asign: false\n"),
		wantErr: []string{`address-pools[0]: unknown field "auto-asign" (did you mean "auto-assign"?)`},
	},
	{
		desc:    "unknown advertisement field",
		input:   onePool("  addresses: [10.0.0.0/24]\n  bgp-advertisements: [{aggregation-length: 32, localPref: 1}]\n"),
		wantErr: []string{`address-pools[0].bgp-advertisements[0]: unknown field "localPref" (did you mean "localpref"?)`},
	},
	{desc: "peers is a mapping", input: "peers: {a: 1}\n", wantErr: []string{"peers: expected a list, got a mapping"}},
	{desc: "peer is a string", input: "peers: [10.0.0.1]\n", wantErr: []string{`peers[0]: expected a mapping, got string "10.0.0.1"`}},
	{desc: "asn is a string", input: onePeer("- {peer-address: 10.0.0.2, peer-asn: '64512', my-asn: 1}\n"), wantErr: []string{`peers[1].peer-asn: expected an integer, got string "64512"`}},
	{desc: "asn is a float", input: onePeer("- {peer-address: 10.0.0.2, peer-asn: 1.5, my-asn: 1}\n"), wantErr: []string{`peers[1].peer-asn: expected an integer, got number 1.5`}},
	{desc: "hold-time is a number", input: onePeer("  hold-time: 90\n"), wantErr: []string{`peers[0].hold-time: expected a string, got number 90`}},
	{desc: "ebgp-multihop is a string", input: onePeer("  ebgp-multihop: 'yes'\n"), wantErr: []string{`peers[0].ebgp-multihop: expected true or false, got string "yes"`}},
	{desc: "password is a number", input: onePeer("  password: 1234\n"), wantErr: []string{`peers[0].password: expected a string, got a number`}},
	{desc: "addresses is a string", input: onePool("  addresses: 10.0.0.0/24\n"), wantErr: []string{`address-pools[0].addresses: expected a list, got string "10.0.0.0/24"`}},
	{desc: "values is a string", input: onePeer("  node-selectors: [{match-expressions: [{key: a, operator: In, values: b}]}]\n"), wantErr: []string{`peers[0].node-selectors[0].match-expressions[0].values: expected a list, got string "b"`}},
	{desc: "match-labels value is a number", input: onePeer("  node-selectors: [{match-labels: {a: 1}}]\n"), wantErr: []string{`peers[0].node-selectors[0].match-labels[a]: expected a string, got number 1`}},

	// Peers.
	{
		desc:    "invalid peer address",
		input:   onePeer("- {peer-address: 10.4.94.300, peer-asn: 1, my-asn: 2}\n"),
		wantErr: []string{`peers[1].peer-address: invalid IP address "10.4.94.300"`},
	},
	{desc: "peer address with zone", input: "peers: [{peer-address: 'fe80::1%eth0', peer-asn: 1, my-asn: 2}]\n", wantErr: []string{`peers[0].peer-address: invalid IP address "fe80::1%eth0": zones are not supported`}},
	{desc: "unspecified peer address", input: "peers: [{peer-address: 0.0.0.0, peer-asn: 1, my-asn: 2}]\n", wantErr: []string{`peers[0].peer-address: "0.0.0.0" is not a unicast address`}},
	{desc: "multicast peer address", input: "peers: [{peer-address: 'ff02::5', peer-asn: 1, my-asn: 2}]\n", wantErr: []string{`peers[0].peer-address: "ff02::5" is not a unicast address`}},
	{
		desc:    "missing required fields",
		input:   "peers: [{}]\n",
		wantErr: []string{"peers[0].peer-address: missing", "peers[0].peer-asn: missing", "peers[0].my-asn: missing"},
	},
	{desc: "null my-asn is missing", input: "peers: [{peer-address: 10.0.0.1, peer-asn: 1, my-asn: }]\n", wantErr: []string{"peers[0].my-asn: missing"}},
	{desc: "asn 0", input: "peers: [{peer-address: 10.0.0.1, peer-asn: 0, my-asn: 1}]\n", wantErr: []string{"peers[0].peer-asn: 0 is out of range 1..4294967295"}},
	{desc: "asn 4294967296", input: "peers: [{peer-address: 10.0.0.1, peer-asn: 1, my-asn: 4294967296}]\n", wantErr: []string{"peers[0].my-asn: 4294967296 is out of range 1..4294967295"}},
	{desc: "negative asn", input: "peers: [{peer-address: 10.0.0.1, peer-asn: -64512, my-asn: 1}]\n", wantErr: []string{"peers[0].peer-asn: -64512 is out of range 1..4294967295"}},
	{desc: "huge asn", input: "peers: [{peer-address: 10.0.0.1, peer-asn: 99999999999999999999, my-asn: 1}]\n", wantErr: []string{"peers[0].peer-asn: ", "is out of range 1..4294967295"}},
	{desc: "port 0", input: onePeer("  peer-port: 0\n"), wantErr: []string{"peers[0].peer-port: 0 is out of range 1..65535"}},
	{desc: "port 65536", input: onePeer("  peer-port: 65536\n"), wantErr: []string{"peers[0].peer-port: 65536 is out of range 1..65535"}},
	{desc: "negative port", input: onePeer("  peer-port: -179\n"), wantErr: []string{"peers[0].peer-port: -179 is out of range 1..65535"}},
	{
		desc: "hold-time below minimum",
		input: onePeer(`- {peer-address: 10.0.0.2, peer-asn: 1, my-asn: 2}
- {peer-address: 10.0.0.3, peer-asn: 1, my-asn: 2, hold-time: 2s}
`),
		wantErr: []string{`peers[2].hold-time: "2s" is below the minimum 3s`},
	},
	{desc: "hold-time not a duration", input: onePeer("  hold-time: 90 seconds\n"), wantErr: []string{`peers[0].hold-time: invalid duration "90 seconds"`}},
	{desc: "hold-time 0", input: onePeer("  hold-time: 0s\n"), wantErr: []string{`peers[0].hold-time: "0s" (no keepalives) is not supported; use 3s or more`}},
	{desc: "hold-time negative", input: onePeer("  hold-time: -90s\n"), wantErr: []string{`peers[0].hold-time: "-90s" is negative`}},
	{desc: "hold-time fractional", input: onePeer("  hold-time: 3500ms\n"), wantErr: []string{`peers[0].hold-time: "3500ms" is not a whole number of seconds`}},
	{desc: "hold-time too long", input: onePeer("  hold-time: 20h\n"), wantErr: []string{`peers[0].hold-time: "20h" exceeds the maximum 65535s`}},
	{desc: "keepalive-time not below hold-time", input: onePeer("  hold-time: 30s\n  keepalive-time: 30s\n"), wantErr: []string{`peers[0].keepalive-time: "30s" must be less than hold-time 30s`}},
	{desc: "keepalive-time above default hold-time", input: onePeer("  keepalive-time: 2m\n"), wantErr: []string{`peers[0].keepalive-time: "2m" must be less than hold-time 90s`}},
	{desc: "keepalive-time 0", input: onePeer("  keepalive-time: 0s\n"), wantErr: []string{`peers[0].keepalive-time: "0s" is below the minimum 1s`}},
	{desc: "keepalive-time invalid", input: onePeer("  keepalive-time: often\n"), wantErr: []string{`peers[0].keepalive-time: invalid duration "often"`}},
	{desc: "IPv6 router-id", input: onePeer("  router-id: '2001:db8::1'\n"), wantErr: []string{`peers[0].router-id: "2001:db8::1" is not an IPv4 address`}},
	{desc: "invalid router-id", input: onePeer("  router-id: 1.2.3\n"), wantErr: []string{`peers[0].router-id: invalid IP address "1.2.3"`}},
	{desc: "zero router-id", input: onePeer("  router-id: 0.0.0.0\n"), wantErr: []string{`peers[0].router-id: "0.0.0.0" is not a valid router ID`}},
	{desc: "source-address family mismatch", input: onePeer("  source-address: '2001:db8::2'\n"), wantErr: []string{`peers[0].source-address: "2001:db8::2" is IPv6 but peer-address 10.0.0.1 is IPv4`}},
	{desc: "invalid source-address", input: onePeer("  source-address: nope\n"), wantErr: []string{`peers[0].source-address: invalid IP address "nope"`}},
	{desc: "ebgp-multihop on iBGP", input: "peers: [{peer-address: 10.0.0.1, peer-asn: 64512, my-asn: 64512, ebgp-multihop: true}]\n", wantErr: []string{"peers[0].ebgp-multihop: true is only valid for eBGP, but peer-asn and my-asn are both 64512"}},
	{desc: "password too long", input: onePeer("  password: " + strings.Repeat("x", 81) + "\n"), wantErr: []string{"peers[0].password: is 81 bytes long, TCP MD5 keys are at most 80"}},
	{
		desc:    "password and password-secret",
		input:   onePeer("- {peer-address: 10.0.0.2, peer-asn: 1, my-asn: 2, password: s3cret, password-secret: bgp}\n"),
		wantErr: []string{"peers[1]: password and password-secret are both set; use one of them"},
	},
	{desc: "password-secret is a number", input: onePeer("  password-secret: 7\n"), wantErr: []string{"peers[0].password-secret: expected a string, got number 7"}},
	{desc: "password-secret not a Secret name", input: onePeer("  password-secret: Bad_Name\n"), wantErr: []string{`peers[0].password-secret: invalid Secret name "Bad_Name": `}},
	{desc: "empty password-secret", input: onePeer("  password-secret: ''\n"), wantErr: []string{`peers[0].password-secret: invalid Secret name "": `}},
	{desc: "dual-stack-address-family is a string", input: onePeer("  dual-stack-address-family: 'yes'\n"), wantErr: []string{`peers[0].dual-stack-address-family: expected true or false, got string "yes"`}},
	{
		desc:    "IPv6 next hop on a session that carries IPv4 only",
		input:   onePeer("  ipv6-next-hop: '2001:db8::9'\n"),
		wantErr: []string{`peers[0].ipv6-next-hop: "2001:db8::9" is a next hop for IPv6 paths, but the session with IPv4 peer-address 10.0.0.1 carries IPv4 only (set dual-stack-address-family: true to carry both)`},
	},
	{
		desc:    "IPv4 next hop on a session that carries IPv6 only",
		input:   "peers:\n- {peer-address: '2001:db8::1', peer-asn: 1, my-asn: 2, ipv4-next-hop: 10.0.0.9}\n",
		wantErr: []string{`peers[0].ipv4-next-hop: "10.0.0.9" is a next hop for IPv4 paths, but the session with IPv6 peer-address 2001:db8::1 carries IPv6 only`},
	},
	{desc: "ipv6-next-hop of the wrong family", input: onePeer("  dual-stack-address-family: true\n  ipv6-next-hop: 10.0.0.9\n"), wantErr: []string{`peers[0].ipv6-next-hop: "10.0.0.9" is not an IPv6 address`}},
	{desc: "ipv4-next-hop of the wrong family", input: onePeer("  ipv4-next-hop: '2001:db8::9'\n"), wantErr: []string{`peers[0].ipv4-next-hop: "2001:db8::9" is not an IPv4 address`}},
	{desc: "link-local next hop", input: onePeer("  dual-stack-address-family: true\n  ipv6-next-hop: 'fe80::1'\n"), wantErr: []string{`peers[0].ipv6-next-hop: "fe80::1" is link-local; a next hop for other routers must be a global address`}},
	{desc: "invalid next hop", input: onePeer("  ipv4-next-hop: 10.0.0\n"), wantErr: []string{`peers[0].ipv4-next-hop: invalid IP address "10.0.0"`}},
	{desc: "unspecified next hop", input: onePeer("  dual-stack-address-family: true\n  ipv6-next-hop: '::'\n"), wantErr: []string{`peers[0].ipv6-next-hop: "::" is not a unicast address`}},
	{desc: "bfd-profile", input: onePeer("  bfd-profile: fast\n"), wantErr: []string{`peers[0].bfd-profile: BFD is not supported by route-agent (remove bfd-profile "fast")`}},
	{desc: "bfd-profiles", input: "bfd-profiles:\n- name: fast\n  receive-interval: 300\n", wantErr: []string{"bfd-profiles: BFD is not supported by route-agent"}},
	{
		desc:    "unknown operator",
		input:   onePeer("  node-selectors: [{match-expressions: [{key: a, operator: Equals, values: [b]}]}]\n"),
		wantErr: []string{`peers[0].node-selectors[0].match-expressions[0].operator: unknown operator "Equals" (want In, NotIn, Exists or DoesNotExist)`},
	},
	{
		desc:    "operator in wrong case",
		input:   onePeer("  node-selectors: [{match-expressions: [{key: a, operator: notin, values: [b]}]}]\n"),
		wantErr: []string{`peers[0].node-selectors[0].match-expressions[0].operator: unknown operator "notin" (did you mean "NotIn"?)`},
	},
	{
		desc:    "empty values for In",
		input:   onePeer("  node-selectors: [{match-expressions: [{key: a, operator: In, values: []}]}]\n"),
		wantErr: []string{"peers[0].node-selectors[0].match-expressions[0].values: must not be empty for operator In"},
	},
	{
		desc:    "no values for NotIn",
		input:   onePeer("  node-selectors: [{match-expressions: [{key: a, operator: NotIn}]}]\n"),
		wantErr: []string{"peers[0].node-selectors[0].match-expressions[0].values: must not be empty for operator NotIn"},
	},
	{
		desc:    "values for Exists",
		input:   onePeer("  node-selectors: [{match-expressions: [{key: a, operator: Exists, values: [b]}]}]\n"),
		wantErr: []string{`peers[0].node-selectors[0].match-expressions[0].values: must be empty for operator Exists, got ["b"]`},
	},
	{
		desc:    "missing key and operator",
		input:   onePeer("  node-selectors: [{match-expressions: [{values: [b]}]}]\n"),
		wantErr: []string{"peers[0].node-selectors[0].match-expressions[0].key: missing", "peers[0].node-selectors[0].match-expressions[0].operator: missing"},
	},
	{
		desc:    "invalid label key and values",
		input:   onePeer("  node-selectors: [{match-labels: {'a b': c, d: 'e f'}, match-expressions: [{key: '-x', operator: In, values: ['y z']}]}]\n"),
		wantErr: []string{`peers[0].node-selectors[0].match-labels[a b]: invalid label key "a b"`, `peers[0].node-selectors[0].match-labels[d]: invalid label value "e f"`, `peers[0].node-selectors[0].match-expressions[0].key: invalid label key "-x"`, `peers[0].node-selectors[0].match-expressions[0].values[0]: invalid label value "y z"`},
	},
	{
		desc: "duplicate peers",
		input: `peers:
- {peer-address: 10.0.0.1, peer-asn: 1, my-asn: 2}
- {peer-address: 10.0.0.1, peer-asn: 3, my-asn: 2, peer-port: 179}
- {peer-address: 10.0.0.9, peer-asn: 1, my-asn: 2, node-selectors: [{match-labels: {a: b}}, {match-labels: {c: d}}]}
- {peer-address: 10.0.0.9, peer-asn: 1, my-asn: 2, node-selectors: [{match-labels: {c: d}}, {match-labels: {a: b}}]}
- {peer-address: 10.0.0.1, peer-asn: 1, my-asn: 2, node-selectors: [{}]}
- {peer-address: 10.0.0.1, peer-asn: 1, my-asn: 2, peer-port: 1179}
`,
		wantErr: []string{
			"peers[1]: peer-address 10.0.0.1 with the same node-selectors is already defined by peers[0]",
			"peers[3]: peer-address 10.0.0.9 with the same node-selectors is already defined by peers[2]",
			"peers[4]: peer-address 10.0.0.1 with the same node-selectors is already defined by peers[0]",
			"peers[5]: peer-address 10.0.0.1 with the same node-selectors is already defined by peers[0]",
		},
	},

	// Communities.
	{desc: "bad community definition", input: "bgp-communities: {bad: '65536:1'}\n", wantErr: []string{`bgp-communities[bad]: invalid community "65536:1": "65536" is not a number between 0 and 65535`}},
	{desc: "community definition not a string", input: "bgp-communities: {bad: 7}\n", wantErr: []string{`bgp-communities[bad]: expected a string, got number 7`}},
	{desc: "community name with a colon", input: "bgp-communities: {'1:2': '3:4'}\n", wantErr: []string{`bgp-communities[1:2]: community name "1:2" must not contain ":"`}},
	{
		desc:    "bad community literal",
		input:   onePool("  addresses: [10.0.0.0/24]\n  bgp-advertisements: [{communities: ['1:2', 'x:1', '1:2:3', '1:']}]\n"),
		wantErr: []string{`address-pools[0].bgp-advertisements[0].communities[1]: invalid community "x:1": "x" is not a number between 0 and 65535`, `address-pools[0].bgp-advertisements[0].communities[2]: invalid community "1:2:3": large communities (A:B:C) are not supported`, `address-pools[0].bgp-advertisements[0].communities[3]: invalid community "1:"`},
	},
	{
		desc:    "unknown community name",
		input:   "bgp-communities: {no-export: '65535:65281'}\n" + onePool("  addresses: [10.0.0.0/24]\n  bgp-advertisements: [{communities: [no-exprot, other]}]\n"),
		wantErr: []string{`address-pools[0].bgp-advertisements[0].communities[0]: unknown community "no-exprot" (did you mean "no-export"?)`, `address-pools[0].bgp-advertisements[0].communities[1]: unknown community "other" (not defined in bgp-communities, nor a literal AA:NN)`},
	},

	// Pools.
	{
		desc:    "missing pool fields",
		input:   "address-pools: [{}]\n",
		wantErr: []string{"address-pools[0].name: missing", "address-pools[0].protocol: missing", "address-pools[0].addresses: missing"},
	},
	{desc: "empty pool name", input: "address-pools: [{name: '', protocol: bgp, addresses: [10.0.0.0/24]}]\n", wantErr: []string{"address-pools[0].name: must not be empty"}},
	{desc: "unknown protocol", input: "address-pools: [{name: p, protocol: arp, addresses: [10.0.0.0/24]}]\n", wantErr: []string{`address-pools[0].protocol: unknown protocol "arp" (want bgp or layer2)`}},
	{desc: "empty addresses", input: onePool("  addresses: []\n"), wantErr: []string{"address-pools[0].addresses: must not be empty"}},
	{
		desc:    "unaligned CIDR",
		input:   onePool("  addresses: [10.1.0.0/16, 10.0.0.1/8]\n"),
		wantErr: []string{`address-pools[0].addresses[1]: "10.0.0.1/8" is not aligned to a CIDR block (did you mean "10.0.0.0/8"?)`},
	},
	{desc: "invalid CIDR", input: onePool("  addresses: [10.0.0.0/33]\n"), wantErr: []string{`address-pools[0].addresses[0]: invalid CIDR "10.0.0.0/33"`}},
	{desc: "address without length", input: onePool("  addresses: ['2001:db8::1']\n"), wantErr: []string{`address-pools[0].addresses[0]: invalid CIDR "2001:db8::1" (did you mean "2001:db8::1/128"?)`}},
	{desc: "IPv4-mapped CIDR", input: onePool("  addresses: ['::ffff:10.0.0.0/120']\n"), wantErr: []string{`address-pools[0].addresses[0]: "::ffff:10.0.0.0/120" is an IPv4-mapped IPv6 prefix`}},
	{desc: "range start after end", input: onePool("  addresses: [10.0.0.9-10.0.0.1]\n"), wantErr: []string{`address-pools[0].addresses[0]: invalid range "10.0.0.9-10.0.0.1": start 10.0.0.9 is after end 10.0.0.1`}},
	{desc: "range with bad start", input: onePool("  addresses: [10.0.0.0/24-10.0.1.0]\n"), wantErr: []string{`address-pools[0].addresses[0]: invalid range "10.0.0.0/24-10.0.1.0": invalid start address "10.0.0.0/24"`}},
	{desc: "range with bad end", input: onePool("  addresses: [10.0.0.1-]\n"), wantErr: []string{`address-pools[0].addresses[0]: invalid range "10.0.0.1-": invalid end address ""`}},
	{desc: "range across families", input: onePool("  addresses: ['10.0.0.1-::1']\n"), wantErr: []string{`address-pools[0].addresses[0]: invalid range "10.0.0.1-::1": start and end are of different IP families`}},
	{desc: "address not a string", input: onePool("  addresses: [[10.0.0.0/24]]\n"), wantErr: []string{`address-pools[0].addresses[0]: expected a string, got a list`}},
	{desc: "aggregation-length 33", input: onePool("  addresses: [10.0.0.0/24]\n  bgp-advertisements: [{aggregation-length: 33}]\n"), wantErr: []string{"address-pools[0].bgp-advertisements[0].aggregation-length: 33 is out of range 0..32"}},
	{desc: "negative aggregation-length", input: onePool("  addresses: [10.0.0.0/24]\n  bgp-advertisements: [{aggregation-length: -1}]\n"), wantErr: []string{"address-pools[0].bgp-advertisements[0].aggregation-length: -1 is out of range 0..32"}},
	{desc: "aggregation-length-v6 129", input: onePool("  addresses: [10.0.0.0/24]\n  bgp-advertisements: [{aggregation-length-v6: 129}]\n"), wantErr: []string{"address-pools[0].bgp-advertisements[0].aggregation-length-v6: 129 is out of range 0..128"}},
	{
		desc:    "aggregation shorter than the pool",
		input:   onePool("  addresses: [10.0.0.0/24, 10.1.0.0-10.1.0.3, 2001:db8::/64]\n  bgp-advertisements: [{aggregation-length: 20, aggregation-length-v6: 48}]\n"),
		wantErr: []string{`address-pools[0].bgp-advertisements[0].aggregation-length: 20 is shorter than prefix length 24 of CIDR "10.0.0.0/24" in this pool`, `address-pools[0].bgp-advertisements[0].aggregation-length: 20 is shorter than prefix length 30 of range "10.1.0.0-10.1.0.3" in this pool`, `address-pools[0].bgp-advertisements[0].aggregation-length-v6: 48 is shorter than prefix length 64 of CIDR "2001:db8::/64" in this pool`},
	},
	{
		desc:    "aggregation shorter than a range",
		input:   onePool("  addresses: [10.1.0.0-10.1.0.5]\n  bgp-advertisements: [{aggregation-length: 29}]\n"),
		wantErr: []string{`address-pools[0].bgp-advertisements[0].aggregation-length: 29 is shorter than prefix length 30 of range "10.1.0.0-10.1.0.5" in this pool`},
	},
	{desc: "localpref out of range", input: onePool("  addresses: [10.0.0.0/24]\n  bgp-advertisements: [{localpref: 4294967296}]\n"), wantErr: []string{"address-pools[0].bgp-advertisements[0].localpref: 4294967296 is out of range 0..4294967295"}},
	{desc: "bgp-advertisements on layer2", input: "address-pools: [{name: l, protocol: layer2, addresses: [10.0.0.0/24], bgp-advertisements: [{}]}]\n", wantErr: []string{`address-pools[0].bgp-advertisements: not allowed for protocol "layer2"`}},
	{
		desc:    "duplicate pool names",
		input:   "address-pools:\n- {name: a, protocol: bgp, addresses: [10.0.0.0/24]}\n- {name: b, protocol: bgp, addresses: [10.0.1.0/24]}\n- {name: a, protocol: layer2, addresses: [10.0.2.0/24]}\n",
		wantErr: []string{`address-pools[2].name: duplicate pool name "a" (already used by address-pools[0])`},
	},
	{
		desc:    "overlapping pools",
		input:   "address-pools:\n- {name: a, protocol: bgp, addresses: [10.0.0.0/16]}\n- {name: b, protocol: layer2, addresses: [10.1.0.0/16, 10.0.0.0/24]}\n",
		wantErr: []string{`address-pools[1].addresses[1]: CIDR "10.0.0.0/24" in pool "b" overlaps with already defined CIDR "10.0.0.0/16" in pool "a"`},
	},
	{
		desc:    "overlap within a pool and with a range",
		input:   "address-pools:\n- {name: a, protocol: bgp, addresses: ['2001:db8::/64', '2001:db8::1:0-2001:db8::1:ff']}\n- {name: b, protocol: bgp, addresses: [10.0.0.0/24, 10.0.0.255-10.0.1.1]}\n",
		wantErr: []string{`address-pools[0].addresses[1]: range "2001:db8::1:0-2001:db8::1:ff" in pool "a" overlaps with already defined CIDR "2001:db8::/64" in pool "a"`, `address-pools[1].addresses[1]: range "10.0.0.255-10.0.1.1" in pool "b" overlaps with already defined CIDR "10.0.0.0/24" in pool "b"`},
	},
	{
		desc: "several problems at once",
		input: `peers:
- peer-address: 10.0.0.1
  peer-asn: 0
  my-asn: 1
  hold-time: 1s
address-pools:
- name: a
  protocol: bgp
  addresses: [10.0.0.1/24]
`,
		wantErr: []string{"peers[0].peer-asn: 0 is out of range", `peers[0].hold-time: "1s" is below the minimum 3s`, `address-pools[0].addresses[0]: "10.0.0.1/24" is not aligned`},
	},
}

func TestParse(t *testing.T) {
	for _, tc := range append(append([]parseTest{}, validTests...), errorTests...) {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := Parse([]byte(tc.input))
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("Parse() succeeded, want error containing %q", tc.wantErr)
				}
				for _, want := range tc.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("Parse() error does not contain %q; got:\n%v", want, err)
					}
				}
				if got != nil {
					t.Errorf("Parse() returned a config along with an error")
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse() failed: %v", err)
			}
			if diff := cmp.Diff(tc.want(t), got, cmpOpts); diff != "" {
				t.Errorf("Parse() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestErrorShape checks what every message must look like: a *FieldError
// (except YAML syntax errors), lowercase, without a trailing period, and
// one per line.
func TestErrorShape(t *testing.T) {
	for _, tc := range errorTests {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := Parse([]byte(tc.input))
			if err == nil {
				t.Fatal("Parse() succeeded")
			}
			errs := []error{err}
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				errs = j.Unwrap()
			}
			for _, e := range errs {
				msg := e.Error()
				if strings.HasPrefix(msg, "invalid YAML: ") {
					continue
				}
				var fe *FieldError
				if !errors.As(e, &fe) {
					t.Errorf("%q is a %T, want a *FieldError", msg, e)
				}
				if r := []rune(msg)[0]; unicode.IsUpper(r) {
					t.Errorf("%q is not lowercase", msg)
				}
				if strings.HasSuffix(msg, ".") || strings.Contains(msg, "\n") {
					t.Errorf("%q ends with a period or spans lines", msg)
				}
			}
		})
	}
}

func TestFieldError(t *testing.T) {
	_, err := Parse([]byte(onePeer("- {peer-address: 10.4.94.300, peer-asn: 1, my-asn: 2}\n")))
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("errors.As(%v, *FieldError) = false", err)
	}
	want := &FieldError{Path: "peers[1].peer-address", Value: "10.4.94.300", Msg: `invalid IP address "10.4.94.300"`}
	if diff := cmp.Diff(want, fe); diff != "" {
		t.Errorf("FieldError mismatch (-want +got):\n%s", diff)
	}
	if got, want := fe.Error(), `peers[1].peer-address: invalid IP address "10.4.94.300"`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	top := &FieldError{Msg: `unknown top-level field "x"`}
	if got, want := top.Error(), `unknown top-level field "x"`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// No message may repeat a password, whatever a user writes there: every
// YAML type, any length, nested or flow style, valid or not.
func TestPasswordNeverEchoed(t *testing.T) {
	const s = "k3y84736251"
	tests := []struct{ desc, yaml, secret string }{
		{"number", "84736251", "84736251"},
		{"negative float", "-84736.251e3", "84736.251"},
		{"boolean true", "true", "true"},
		{"boolean false", "false", "false"},
		{"list", "[" + s + ", other]", s},
		{"block list", "\n  - " + s + "\n  - " + s + "2", s},
		{"mapping", "{" + s + ": value}", s},
		{"mapping value", "{key: " + s + "}", s},
		{"nested", "{a: [{b: " + s + "}]}", s},
		{"long string", strings.Repeat(s, 9), s},
		{"long quoted string", `"` + strings.Repeat(s, 20) + `"`, s},
		{"valid string beside another error", s + "\n  peer-port: 0", s},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			_, err := Parse([]byte(onePeer("  password: " + tt.yaml + "\n")))
			if err == nil {
				t.Fatal("Parse() accepted the config, want an error")
			}
			msg := err.Error()
			if strings.Contains(msg, tt.secret) || (tt.secret == "true" || tt.secret == "false") && strings.Contains(msg, "password: expected a string, got boolean") {
				t.Errorf("error repeats the password: %s", msg)
			}
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				var fe *FieldError
				if errors.As(e, &fe) && strings.HasPrefix(fe.Path, "peers[0].password") && fe.Value != "" {
					t.Errorf("FieldError.Value = %q at %s, want it empty", fe.Value, fe.Path)
				}
			}
			if !strings.Contains(msg, "peers[0].password") && tt.desc != "valid string beside another error" {
				t.Errorf("error %q does not name the field", msg)
			}
		})
	}
	// A valid password parses, prints redacted, and is revealed only on request.
	cfg, err := Parse([]byte(onePeer("  password: " + s + "\n")))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprintf("%+v", cfg.Peers[0]); strings.Contains(got, s) {
		t.Errorf("%%+v of a parsed peer shows the password: %s", got)
	}
	if cfg.Peers[0].Password.Reveal() != s {
		t.Errorf("Reveal() = %q, want %q", cfg.Peers[0].Password.Reveal(), s)
	}
}

// Naming a Secret next to a password is refused without repeating the
// password; the Secret's name is no secret.
func TestPasswordAndSecretNotEchoed(t *testing.T) {
	const pw = "k3y84736251"
	_, err := Parse([]byte(onePeer("  password: " + pw + "\n  password-secret: bgp-md5\n")))
	if err == nil {
		t.Fatal("Parse() accepted password and password-secret together")
	}
	if strings.Contains(err.Error(), pw) {
		t.Errorf("error repeats the password: %v", err)
	}
}

func TestCommunityString(t *testing.T) {
	if got, want := (Community{ASN: 65535, Value: 65281}).String(), "65535:65281"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
