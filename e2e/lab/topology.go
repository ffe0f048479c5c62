package lab

import "net/netip"

// The default topology is seed 004's: two racks, each an L2 segment with its
// top-of-rack router at .1, nodes on both, pod CIDRs carved from
// 10.5.112.0/21. The rack-94 ToR is in AS 64524 and its nodes in AS 64513
// (eBGP); the rack-83 ToR and its nodes share AS 64512 (iBGP). The ToRs
// peer with each other, so each rack learns the other's pod CIDRs.

// tor83Password is the TCP MD5 key of rack 83's sessions, so that the lab
// runs MD5-protected sessions against FRR as well as plain ones.
const tor83Password = "rack83-md5"

// RouteLabel is the node label the lab's bgp-config selects peers by.
const RouteLabel = "kubernetes/route"

// Router is a top-of-rack router running FRR.
type Router struct {
	Name string
	NS   string
	ASN  uint32
	// Addr is the router's address on its rack's segment.
	Addr    netip.Addr
	Segment netip.Prefix
	// LinkAddr is its end of the router-to-router link.
	LinkAddr netip.Prefix
	// ListenRanges are the prefixes it accepts node sessions from, in the
	// ASN NodeASN.
	ListenRanges []netip.Prefix
	NodeASN      uint32
	// NodePassword, if set, is the TCP MD5 key of the node sessions.
	NodePassword string
	// VTYDir holds the vtysh sockets; see Router.VTY.
	VTYDir string
}

// Node is a Kubernetes node: a namespace running route-agent.
type Node struct {
	Name    string
	NS      string
	Router  *Router
	IP      netip.Addr
	MgmtIP  netip.Addr
	PodCIDR netip.Prefix
	Labels  map[string]string
	// Socket is the agent's API socket, reachable from the root namespace.
	Socket string
	// AgentArgs are added to the agent's command line at its next start
	// (tests that switch modes).
	AgentArgs []string
	agent     *proc

	// CNIConfDir is the node's CNI config directory (its /etc/cni/net.d),
	// the agent's --cni-conf-dir; pods are made from the conflist the
	// agent writes there.
	CNIConfDir string
}

// The outside network, beyond rack 94's ToR: a host that is not part of
// the cluster, in a range the lab's ip-masq-agent config leaves out
// (seed 001's defaults would include it). It routes to the nodes' segments
// but not to the pod CIDRs, so only masqueraded pod traffic gets answers,
// and tor94 does not advertise it: the fabric does not route it to pods.
var (
	OutsidePrefix = netip.MustParsePrefix("198.51.100.0/24")
	outsideGW     = netip.MustParseAddr("198.51.100.1")
	OutsideIP     = netip.MustParseAddr("198.51.100.10")
	nodesPrefix   = netip.MustParsePrefix("10.4.0.0/16")
)

// IPMasqConfig is the lab's ip-masq-agent config: the cluster's 10/8
// (segments, pods, ToR links) routable, the outside network not.
const IPMasqConfig = `nonMasqueradeCIDRs:
- 10.0.0.0/8
masqLinkLocal: false
`

var (
	mgmtPrefix = netip.MustParsePrefix("10.250.0.0/24")
	apiAddr    = netip.MustParseAddr("10.250.0.1")
)

func seedTopology() ([]*Router, []*Node) {
	rack94 := netip.MustParsePrefix("10.4.94.0/24")
	rack83 := netip.MustParsePrefix("10.4.83.0/24")
	tor94 := &Router{
		Name: "tor94", ASN: 64524, NodeASN: 64513,
		Addr: netip.MustParseAddr("10.4.94.1"), Segment: rack94,
		LinkAddr:     netip.MustParsePrefix("10.4.255.1/30"),
		ListenRanges: []netip.Prefix{rack94},
	}
	// Rack 83 also accepts nodes from rack 94, so that relabelling a node
	// can move its session there.
	tor83 := &Router{
		Name: "tor83", ASN: 64512, NodeASN: 64512, NodePassword: tor83Password,
		Addr: netip.MustParseAddr("10.4.83.1"), Segment: rack83,
		LinkAddr:     netip.MustParsePrefix("10.4.255.2/30"),
		ListenRanges: []netip.Prefix{rack83, rack94},
	}
	nodes := []*Node{
		{Name: "rack94-node1", Router: tor94, IP: netip.MustParseAddr("10.4.94.11"), MgmtIP: netip.MustParseAddr("10.250.0.11"),
			PodCIDR: netip.MustParsePrefix("10.5.112.0/24"), Labels: map[string]string{RouteLabel: "bgp-peer-94"}},
		{Name: "rack94-node2", Router: tor94, IP: netip.MustParseAddr("10.4.94.12"), MgmtIP: netip.MustParseAddr("10.250.0.12"),
			PodCIDR: netip.MustParsePrefix("10.5.114.0/24"), Labels: map[string]string{RouteLabel: "bgp-peer-94"}},
		{Name: "rack83-node1", Router: tor83, IP: netip.MustParseAddr("10.4.83.11"), MgmtIP: netip.MustParseAddr("10.250.0.13"),
			PodCIDR: netip.MustParsePrefix("10.5.119.0/24"), Labels: map[string]string{RouteLabel: "bgp-peer-83"}},
	}
	return []*Router{tor94, tor83}, nodes
}

// BGPConfig is the lab's bgp-config: the seed's, with the peers at the lab's
// ToR addresses, and each rack's nodes choosing their ToR by label.
const BGPConfig = `peers:
- peer-address: 10.4.94.1
  peer-asn: 64524
  my-asn: 64513
  node-selectors:
  - match-labels:
      kubernetes/route: bgp-peer-94
- peer-address: 10.4.83.1
  peer-asn: 64512
  my-asn: 64512
  password: ` + tor83Password + `
  node-selectors:
  - match-expressions:
    - key: kubernetes/route
      operator: In
      values: ["bgp-peer-83"]
address-pools:
- name: default
  protocol: bgp
  avoid-buggy-ips: true
  addresses:
  - ` + LBPool + `
`

// LBPool is the lab's LoadBalancer address pool; the seed's pool,
// 10.5.112.0/21, is the lab's pod network, which LB addresses must not
// share.
const LBPool = "10.7.0.0/24"
