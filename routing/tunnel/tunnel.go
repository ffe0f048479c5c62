// Package tunnel keeps the node's overlay device: one VXLAN device,
// ra_vxlan, that carries pod traffic to the nodes the agent cannot route
// to natively, with one forwarding entry and one neighbour entry per peer.
//
// The device never floods and never learns (nolearning, no default
// destination, no multicast group): every peer is written down. A peer is
// reached in three steps, of which this package owns the last two:
//
//	route:     10.5.114.0/24 via 10.5.114.0 dev ra_vxlan onlink   (routing.Kernel)
//	neighbour: 10.5.114.0 lladdr 0e:52:0a:63:00:02 dev ra_vxlan nud permanent
//	FDB:       0e:52:0a:63:00:02 dev ra_vxlan dst 10.99.0.2 self permanent
//
// The neighbour entry's address is the peer's gateway, the first address of
// its pod CIDR (Flannel's convention), and the MAC is derived from the
// peer's underlay address by MACFor, so no agent needs to publish its MAC.
// Because both entries are permanent, the kernel never sends an ARP or
// neighbour solicitation into the tunnel, which would go nowhere.
//
// A Geneve device (ra_geneve) has no forwarding database. It runs in
// external (flow-based) mode, and the route names the peer instead of an
// FDB entry; the neighbour entry stays:
//
//	route:     10.5.114.0/24 via 10.5.114.0 dev ra_geneve onlink encap ip id 1 dst 10.99.0.2
//	neighbour: 10.5.114.0 lladdr 0e:52:0a:63:00:02 dev ra_geneve nud permanent
//
// The kernel's geneve device also needs the geneve module, which not every
// kernel has: CheckSupport tells.
package tunnel

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// Protocol is the encapsulation of the tunnel device.
type Protocol string

const (
	VXLAN  Protocol = "vxlan"
	Geneve Protocol = "geneve"
)

// The devices' names. Both are the agent's: Set and Cleanup delete
// whichever of them is not desired.
const (
	VXLANDevice  = "ra_vxlan"
	GeneveDevice = "ra_geneve"
)

// Defaults for DeviceSpec's zero values: Flannel's VXLAN port (the Linux
// kernel's default too, not IANA's 4789), IANA's Geneve port, VNI 1.
const (
	DefaultVXLANPort  = 8472
	DefaultGenevePort = 6081
	DefaultVNI        = 1
)

// maxVNI is the largest 24-bit VXLAN or Geneve network identifier.
const maxVNI = 1<<24 - 1

// DeviceName returns the name of the device of protocol p, or "" for an
// unknown protocol.
func (p Protocol) DeviceName() string {
	switch p {
	case VXLAN:
		return VXLANDevice
	case Geneve:
		return GeneveDevice
	}
	return ""
}

// DefaultPort returns the UDP destination port a DeviceSpec of protocol p
// uses when its Port is 0.
func (p Protocol) DefaultPort() int {
	switch p {
	case VXLAN:
		return DefaultVXLANPort
	case Geneve:
		return DefaultGenevePort
	}
	return 0
}

// Overhead is what encapsulation adds to every packet, so the tunnel's MTU
// is the underlay's minus this: the inner Ethernet header (14 bytes), the
// VXLAN or Geneve header (8), UDP (8) and the outer IP header (20 for IPv4,
// 40 for IPv6), that is 50 bytes over IPv4 and 70 over IPv6. Geneve adds
// its options on top, and the agent sends none. An unknown protocol has
// overhead 0.
func Overhead(p Protocol, underlayIPv6 bool) int {
	if p != VXLAN && p != Geneve {
		return 0
	}
	const ethernet, encap, udp = 14, 8, 8
	ip := 20
	if underlayIPv6 {
		ip = 40
	}
	return ethernet + encap + udp + ip
}

// MACFor returns the MAC of the tunnel device of the node whose underlay
// address is nodeIP: 0e:52 followed by the last four bytes of the address
// (of its IPv4 form when it is IPv4-mapped). 0x0e has the locally
// administered bit set and the multicast bit clear, so the MAC is a unicast
// address that no vendor assigns; 0x52 is "R".
//
// Every agent computes every peer's MAC this way, with no annotation or
// other exchange. Two nodes get the same MAC exactly when the low 32 bits
// of their addresses are equal, which IPv4 addresses never are and IPv6
// addresses of one cluster rarely are; Set refuses peers whose MACs
// collide, and the planner is expected to report them. MACFor returns nil
// for the zero Addr.
func MACFor(nodeIP netip.Addr) net.HardwareAddr {
	if !nodeIP.IsValid() {
		return nil
	}
	b := nodeIP.Unmap().As16()
	return net.HardwareAddr{0x0e, 0x52, b[12], b[13], b[14], b[15]}
}

// DeviceSpec is the tunnel device a node wants.
type DeviceSpec struct {
	Protocol Protocol
	// Port is the UDP destination port; 0 is the protocol's default
	// (8472 for VXLAN, 6081 for Geneve).
	Port int
	// VNI is the network identifier, below 2^24; 0 means DefaultVNI.
	VNI uint32
	// LocalIP is the address the tunnel's packets come from: this node's
	// InternalIP. Its family is the underlay's.
	LocalIP netip.Addr
	// UnderlayIndex is the link LocalIP is on; 0 means the link holding
	// LocalIP, looked up on every Set. The device goes with this link: the
	// kernel deletes a VXLAN device whose underlay link is deleted.
	UnderlayIndex int
	// MTU of the device; 0 means the underlay link's MTU minus Overhead.
	MTU int
	// MAC of the device; nil means MACFor(LocalIP), which is what peers
	// compute for this node.
	MAC net.HardwareAddr
	// Addresses are given to the device as host addresses (/32, /128):
	// this node's gateway addresses, the first address of each of its pod
	// CIDRs (10.5.112.0 for 10.5.112.0/24). Without one, packets the node
	// itself sends into the tunnel take their source from another device
	// (the node's InternalIP, or a pod gateway such as 10.5.112.1 that the
	// CNI ptp plugin puts on every pod veth), which also works but makes
	// the path of the reply depend on which. Empty leaves the device
	// without addresses (IPv6 link-local addresses are the kernel's and
	// stay).
	Addresses []netip.Addr
}

// Peer is another node reached through the tunnel.
type Peer struct {
	// NodeIP is the peer's underlay address, of LocalIP's family: the
	// outer destination of packets to it.
	NodeIP netip.Addr
	// MAC is the peer's tunnel device's MAC; nil means MACFor(NodeIP).
	MAC net.HardwareAddr
	// Gateway is the peer's gateway address, the first address of its pod
	// CIDR, that routes to the pod CIDR go via. A dual-stack peer is two
	// Peers with the same NodeIP and MAC and one gateway of each family.
	Gateway netip.Addr
}

// PeerKey is a Peer as a comparable value.
type PeerKey struct {
	NodeIP  netip.Addr
	MAC     [6]byte
	Gateway netip.Addr
}

// Key returns p as a comparable value, with a nil MAC read as
// MACFor(NodeIP). A MAC that is not six bytes long gives the zero MAC.
func (p Peer) Key() PeerKey {
	k := PeerKey{NodeIP: p.NodeIP, Gateway: p.Gateway}
	mac := p.MAC
	if mac == nil {
		mac = MACFor(p.NodeIP)
	}
	if len(mac) == 6 {
		k.MAC = [6]byte(mac)
	}
	return k
}

// String formats p as its two kernel entries would read:
// "10.5.114.0 lladdr 0e:52:0a:63:00:02 dst 10.99.0.2".
func (p Peer) String() string {
	mac := p.MAC
	if mac == nil {
		mac = MACFor(p.NodeIP)
	}
	return fmt.Sprintf("%s lladdr %s dst %s", p.Gateway, mac, p.NodeIP)
}

// Desired is the state Set makes the kernel hold.
type Desired struct {
	// Device is the tunnel device; nil means none: Set removes ours.
	Device *DeviceSpec
	// Peers are the other nodes reached through the tunnel, in any order.
	Peers []Peer
}

// Equal reports whether d and o are the same desired state, the order of
// peers and addresses aside.
func (d Desired) Equal(o Desired) bool {
	if (d.Device == nil) != (o.Device == nil) {
		return false
	}
	if d.Device != nil {
		a, b := d.Device, o.Device
		if a.Protocol != b.Protocol || a.Port != b.Port || a.VNI != b.VNI || a.LocalIP != b.LocalIP ||
			a.UnderlayIndex != b.UnderlayIndex || a.MTU != b.MTU ||
			!bytes.Equal(a.MAC, b.MAC) || !sameSet(a.Addresses, b.Addresses) {
			return false
		}
	}
	keys := func(ps []Peer) []PeerKey {
		out := make([]PeerKey, len(ps))
		for i, p := range ps {
			out[i] = p.Key()
		}
		return out
	}
	return sameSet(keys(d.Peers), keys(o.Peers))
}

// sameSet reports whether a and b hold the same values, repeats and order
// aside.
func sameSet[T comparable](a, b []T) bool {
	in := func(xs []T) map[T]bool {
		m := make(map[T]bool, len(xs))
		for _, x := range xs {
			m[x] = true
		}
		return m
	}
	sa, sb := in(a), in(b)
	if len(sa) != len(sb) {
		return false
	}
	for x := range sa {
		if !sb[x] {
			return false
		}
	}
	return true
}

// device is a validated DeviceSpec with its defaults filled in, MTU aside,
// which needs the underlay link.
type device struct {
	name     string
	protocol Protocol
	port     int
	vni      uint32
	local    netip.Addr
	underlay int // 0 until Set looked it up
	mtu      int // 0 until Set resolved it
	mac      hwAddr
	addrs    []netip.Prefix // host prefixes, sorted
}

// hwAddr is a MAC as a comparable value.
type hwAddr [6]byte

func (m hwAddr) String() string { return net.HardwareAddr(m[:]).String() }

// newDevice validates s and fills in its defaults.
func newDevice(s DeviceSpec) (*device, error) {
	d := &device{protocol: s.Protocol, port: s.Port, vni: s.VNI, local: s.LocalIP.Unmap(), underlay: s.UnderlayIndex, mtu: s.MTU}
	if d.name = s.Protocol.DeviceName(); d.name == "" {
		return nil, fmt.Errorf("tunnel protocol %q: unknown (want %q or %q)", s.Protocol, VXLAN, Geneve)
	}
	if d.port == 0 {
		d.port = s.Protocol.DefaultPort()
	}
	if d.vni == 0 {
		d.vni = DefaultVNI
	}
	switch {
	case d.port < 0 || d.port > 65535:
		return nil, fmt.Errorf("tunnel port %d out of range (1-65535, or 0 for %d)", s.Port, s.Protocol.DefaultPort())
	case d.vni > maxVNI:
		return nil, fmt.Errorf("tunnel VNI %d out of range (1-%d, or 0 for %d)", s.VNI, maxVNI, DefaultVNI)
	case !d.local.IsValid():
		return nil, errors.New("tunnel local address: none given")
	case !isUnicast(d.local):
		return nil, fmt.Errorf("tunnel local address %s is not a unicast address", s.LocalIP)
	case d.underlay < 0:
		return nil, fmt.Errorf("tunnel underlay link index %d is negative", s.UnderlayIndex)
	case d.mtu != 0 && (d.mtu < 68 || d.mtu > 65535):
		return nil, fmt.Errorf("tunnel MTU %d out of range (68-65535, or 0 for the underlay's minus %d)", s.MTU, Overhead(s.Protocol, d.local.Is6()))
	}
	mac := s.MAC
	if mac == nil {
		mac = MACFor(d.local)
	}
	var err error
	if d.mac, err = unicastMAC(mac); err != nil {
		return nil, fmt.Errorf("tunnel MAC: %w", err)
	}
	for _, a := range s.Addresses {
		switch {
		case !a.IsValid():
			return nil, errors.New("tunnel device address: the zero address")
		case a.Is4In6():
			return nil, fmt.Errorf("tunnel device address %s is an IPv4-mapped IPv6 address", a)
		case !isUnicast(a) || a.IsLinkLocalUnicast():
			return nil, fmt.Errorf("tunnel device address %s is not a global unicast address", a)
		}
		p := netip.PrefixFrom(a, a.BitLen())
		if !slices.Contains(d.addrs, p) {
			d.addrs = append(d.addrs, p)
		}
	}
	slices.SortFunc(d.addrs, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return d, nil
}

func isUnicast(a netip.Addr) bool {
	return a.IsValid() && !a.IsUnspecified() && !a.IsMulticast() && !a.IsLoopback() &&
		a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

func unicastMAC(mac net.HardwareAddr) (hwAddr, error) {
	switch {
	case len(mac) != 6:
		return hwAddr{}, fmt.Errorf("%q is not a 6-byte Ethernet address", mac.String())
	case mac[0]&1 != 0:
		return hwAddr{}, fmt.Errorf("%s is a multicast address", mac)
	case hwAddr(mac) == hwAddr{}:
		return hwAddr{}, errors.New("00:00:00:00:00:00 is not a unicast address")
	}
	return hwAddr(mac), nil
}

// entries are the FDB and neighbour entries the device should hold.
type entries struct {
	fdb   map[hwAddr]netip.Addr // peer MAC → peer node address
	neigh map[netip.Addr]hwAddr // peer gateway → peer MAC
}

// planEntries turns peers into the entries of the device dev. It refuses,
// with an error each, a peer it cannot write, and every peer of a MAC or
// gateway that two peers claim with different values: no entry at all is
// better than one that sends a node's traffic to another. The result does
// not depend on the order of peers.
func planEntries(dev *device, peers []Peer) (entries, []error) {
	e := entries{fdb: map[hwAddr]netip.Addr{}, neigh: map[netip.Addr]hwAddr{}}
	var errs []error
	var valid []PeerKey
	seen := map[PeerKey]bool{}
	local := map[netip.Addr]bool{}
	for _, p := range dev.addrs {
		local[p.Addr()] = true
	}
	for _, p := range peers {
		if err := checkPeer(dev, p, local); err != nil {
			errs = append(errs, fmt.Errorf("peer %s: %w", p, err))
			continue
		}
		k := p.Key()
		k.NodeIP = k.NodeIP.Unmap()
		if !seen[k] {
			seen[k] = true
			valid = append(valid, k)
		}
	}
	slices.SortFunc(valid, func(a, b PeerKey) int {
		if c := a.NodeIP.Compare(b.NodeIP); c != 0 {
			return c
		}
		if c := bytes.Compare(a.MAC[:], b.MAC[:]); c != 0 {
			return c
		}
		return a.Gateway.Compare(b.Gateway)
	})

	nodes := map[hwAddr][]netip.Addr{}
	for _, k := range valid {
		if n := nodes[k.MAC]; !slices.Contains(n, k.NodeIP) {
			nodes[k.MAC] = append(n, k.NodeIP)
		}
	}
	macs := map[netip.Addr][]hwAddr{}
	for _, k := range valid {
		if len(nodes[k.MAC]) > 1 {
			continue
		}
		if m := macs[k.Gateway]; !slices.Contains(m, k.MAC) {
			macs[k.Gateway] = append(m, k.MAC)
		}
	}
	reported := map[string]bool{}
	report := func(err error) {
		if !reported[err.Error()] {
			reported[err.Error()] = true
			errs = append(errs, err)
		}
	}
	for _, k := range valid {
		if n := nodes[k.MAC]; len(n) > 1 {
			report(fmt.Errorf("peers %s have the same tunnel MAC %s (the low 32 bits of their addresses are equal): refusing them all", joinAddrs(n), hwAddr(k.MAC)))
			continue
		}
		if m := macs[k.Gateway]; len(m) > 1 {
			report(fmt.Errorf("gateway %s is claimed by peers with MACs %s: refusing them all", k.Gateway, joinMACs(m)))
			continue
		}
		e.fdb[k.MAC] = k.NodeIP
		e.neigh[k.Gateway] = k.MAC
	}
	return e, errs
}

func checkPeer(dev *device, p Peer, local map[netip.Addr]bool) error {
	node := p.NodeIP.Unmap()
	switch {
	case !node.IsValid():
		return errors.New("no node address")
	case !isUnicast(node):
		return fmt.Errorf("node address %s is not a unicast address", p.NodeIP)
	case node.Is4() != dev.local.Is4():
		return fmt.Errorf("node address %s is not of the underlay's family (the local address is %s)", p.NodeIP, dev.local)
	case node == dev.local:
		return fmt.Errorf("node address %s is this node's", p.NodeIP)
	case !p.Gateway.IsValid():
		return errors.New("no gateway")
	case p.Gateway.Is4In6():
		return fmt.Errorf("gateway %s is an IPv4-mapped IPv6 address", p.Gateway)
	case !isUnicast(p.Gateway) || p.Gateway.IsLinkLocalUnicast():
		return fmt.Errorf("gateway %s is not a global unicast address", p.Gateway)
	case local[p.Gateway]:
		return fmt.Errorf("gateway %s is an address of this node's tunnel device", p.Gateway)
	}
	if p.MAC != nil {
		if _, err := unicastMAC(p.MAC); err != nil {
			return fmt.Errorf("MAC: %w", err)
		}
	}
	if k := p.Key(); k.MAC == dev.mac {
		return fmt.Errorf("MAC %s is this node's tunnel MAC", dev.mac)
	}
	return nil
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, " and ")
}

func joinMACs(ms []hwAddr) string {
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = m.String()
	}
	slices.Sort(s)
	return strings.Join(s, " and ")
}
