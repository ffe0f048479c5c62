package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// node is a throw-away network namespace standing for one node: named, so
// that `ip netns exec` can run ping in it, and deleted when the test ends,
// however it ends. Nothing a test does reaches the namespace the tests run
// in.
type node struct {
	name string
	ns   netns.NsHandle
	h    *netlink.Handle
	eth0 int        // the underlay link
	ip   netip.Addr // its address
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to make network namespaces")
	}
}

// runID returns a random name prefix, so that concurrent runs (and other
// packages' tests) never share a namespace name.
func runID(t testing.TB) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return "ra-tun-" + hex.EncodeToString(b)
}

func newNode(t testing.TB, name string) *node {
	t.Helper()
	needRoot(t)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", name, err, out)
		}
	})
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	n := &node{name: name, ns: ns, h: h}
	n.up(t, n.link(t, "lo"))
	return n
}

// twoNodes makes two nodes joined by a veth pair, eth0 on both sides,
// with 10.99.0.1/24 and 10.99.0.2/24, or fd99::1/64 and fd99::2/64.
func twoNodes(t testing.TB, ipv6 bool) (a, b *node) {
	t.Helper()
	id := runID(t)
	a, b = newNode(t, id+"-a"), newNode(t, id+"-b")
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(b.ns))}
	if err := a.h.LinkAdd(veth); err != nil {
		t.Fatalf("adding the veth between the nodes: %v", err)
	}
	pa, pb := "10.99.0.1/24", "10.99.0.2/24"
	if ipv6 {
		pa, pb = "fd99::1/64", "fd99::2/64"
	}
	a.ip, a.eth0 = a.addAddr(t, "eth0", pa), a.link(t, "eth0").Attrs().Index
	b.ip, b.eth0 = b.addAddr(t, "eth0", pb), b.link(t, "eth0").Attrs().Index
	a.up(t, a.link(t, "eth0"))
	b.up(t, b.link(t, "eth0"))
	return a, b
}

func (n *node) link(t testing.TB, name string) netlink.Link {
	t.Helper()
	l, err := n.h.LinkByName(name)
	if err != nil {
		t.Fatalf("%s: finding link %s: %v", n.name, name, err)
	}
	return l
}

// linkOrNil returns the link called name, or nil when there is none.
func (n *node) linkOrNil(t testing.TB, name string) netlink.Link {
	t.Helper()
	l, err := n.h.LinkByName(name)
	if _, missing := errors.AsType[netlink.LinkNotFoundError](err); missing {
		return nil
	}
	if err != nil {
		t.Fatalf("%s: finding link %s: %v", n.name, name, err)
	}
	return l
}

func (n *node) up(t testing.TB, l netlink.Link) {
	t.Helper()
	if err := n.h.LinkSetUp(l); err != nil {
		t.Fatalf("%s: setting %s up: %v", n.name, l.Attrs().Name, err)
	}
}

// addAddr gives link name the address a (with its prefix length), without
// duplicate address detection, and returns the address.
func (n *node) addAddr(t testing.TB, name, a string) netip.Addr {
	t.Helper()
	p := netip.MustParsePrefix(a)
	addr := &netlink.Addr{IPNet: ipNet(p), Flags: unix.IFA_F_NODAD}
	if err := n.h.AddrAdd(n.link(t, name), addr); err != nil {
		t.Fatalf("%s: adding %s to %s: %v", n.name, a, name, err)
	}
	return p.Addr()
}

// tunnel makes a Tunnel in the node's namespace, closed with the test.
func (n *node) tunnel(t testing.TB) *Tunnel {
	t.Helper()
	tun, err := New(Options{NetNS: n.ns, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(tun.Close)
	return tun
}

// spec is the VXLAN device of n, with its gateway addresses.
func (n *node) spec(gateways ...string) *DeviceSpec {
	s := &DeviceSpec{Protocol: VXLAN, LocalIP: n.ip, UnderlayIndex: n.eth0}
	for _, g := range gateways {
		s.Addresses = append(s.Addresses, netip.MustParseAddr(g))
	}
	return s
}

// peer is n as a peer with the given gateway.
func (n *node) peer(gateway string) Peer {
	return Peer{NodeIP: n.ip, MAC: MACFor(n.ip), Gateway: netip.MustParseAddr(gateway)}
}

// route installs `dst via gw dev <index> onlink`, as routing.Kernel does in
// the agent.
func (n *node) route(t testing.TB, dst, gw string, index int) {
	t.Helper()
	r := &netlink.Route{
		Dst:       ipNet(netip.MustParsePrefix(dst)),
		Gw:        netip.MustParseAddr(gw).AsSlice(),
		LinkIndex: index,
		Flags:     int(netlink.FLAG_ONLINK),
	}
	if err := n.h.RouteReplace(r); err != nil {
		t.Fatalf("%s: adding route %s via %s onlink: %v", n.name, dst, gw, err)
	}
}

// exec runs a command in the node's namespace.
func (n *node) exec(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.name}, args...)...).CombinedOutput()
	return string(out), err
}

// ping sends one echo request of size bytes of payload (0: ping's
// default) that must not be fragmented.
func (n *node) ping(dst string, size int) (string, error) {
	return n.pingWait(dst, size, 3)
}

// pingWait is ping waiting seconds for the reply, for pings that should
// not get one.
func (n *node) pingWait(dst string, size, seconds int) (string, error) {
	args := []string{"ping", "-c1", "-W" + itoa(seconds), "-M", "do"}
	if strings.Contains(dst, ":") {
		args = append(args, "-6")
	}
	if size > 0 {
		args = append(args, "-s", itoa(size))
	}
	return n.exec(append(args, dst)...)
}

// state is what the kernel holds on the tunnel device, as text, to compare
// before and after.
type state struct {
	Index int
	Link  string
	FDB   []string
	Neigh []string
	Addrs []string
}

func (n *node) state(t testing.TB, name string) state {
	t.Helper()
	l := n.linkOrNil(t, name)
	if l == nil {
		return state{}
	}
	a := l.Attrs()
	s := state{Index: a.Index, Link: a.Name + " mtu " + itoa(a.MTU) + " " + a.HardwareAddr.String() + " " + a.Flags.String()}
	if v, ok := l.(*netlink.Vxlan); ok {
		s.Link += " vni " + itoa(v.VxlanId) + " port " + itoa(v.Port) + " local " + v.SrcAddr.String()
	}
	fdb, err := n.h.NeighList(a.Index, unix.AF_BRIDGE)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range fdb {
		s.FDB = append(s.FDB, e.HardwareAddr.String()+" dst "+e.IP.String()+" state "+itoa(e.State)+" flags "+itoa(e.Flags))
	}
	for _, f := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		ns, err := n.h.NeighList(a.Index, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ns {
			if holdsMAC(e.State) {
				s.Neigh = append(s.Neigh, e.IP.String()+" lladdr "+e.HardwareAddr.String()+" state "+itoa(e.State))
			}
		}
	}
	addrs, err := n.h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, ad := range addrs {
		if !ad.IP.IsLinkLocalUnicast() {
			s.Addrs = append(s.Addrs, ad.IPNet.String())
		}
	}
	sortStrings(s.FDB, s.Neigh, s.Addrs)
	return s
}

// events records the link, neighbour and address events of a namespace on
// one socket, so that they arrive in the order the kernel sent them.
type events struct {
	n    *node
	s    *nl.NetlinkSocket
	ch   chan message
	done chan struct{}
	wg   sync.WaitGroup
}

type message struct {
	typ  uint16
	data []byte
}

func (n *node) events(t testing.TB) *events {
	t.Helper()
	s, err := nl.SubscribeAt(n.ns, netns.None(), unix.NETLINK_ROUTE,
		unix.RTNLGRP_LINK, unix.RTNLGRP_NEIGH, unix.RTNLGRP_IPV4_IFADDR, unix.RTNLGRP_IPV6_IFADDR)
	if err != nil {
		t.Fatalf("subscribing to events: %v", err)
	}
	e := &events{n: n, s: s, ch: make(chan message, 4096), done: make(chan struct{})}
	e.wg.Go(func() {
		defer close(e.ch)
		for {
			msgs, _, err := s.Receive()
			if err != nil {
				return
			}
			for _, m := range msgs {
				select {
				case e.ch <- message{typ: m.Header.Type, data: m.Data}:
				case <-e.done:
					return
				}
			}
		}
	})
	t.Cleanup(func() {
		close(e.done)
		s.Close()
		for range e.ch {
		}
		e.wg.Wait()
	})
	return e
}

// The barrier: a neighbour entry on the loopback-free underlay link that
// no test uses otherwise.
var markerIP = netip.MustParseAddr("192.0.2.77")

// settle returns the events about the device index (or a device of ours
// by name) since the last settle, leaving out the kernel's own doings: IPv6
// link-local addresses, and neighbour entries that hold no MAC. It adds
// and deletes a marker neighbour entry and waits for the deletion, which
// the kernel sends after every event caused before.
func (e *events) settle(t testing.TB, index int) []string {
	t.Helper()
	marker := netlink.Neigh{LinkIndex: e.n.eth0, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
		IP: markerIP.AsSlice(), HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 0x77}}
	if err := e.n.h.NeighSet(&marker); err != nil {
		t.Fatalf("adding the marker entry: %v", err)
	}
	if err := e.n.h.NeighDel(&marker); err != nil {
		t.Fatalf("deleting the marker entry: %v", err)
	}
	var seen []string
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-e.ch:
			if !ok {
				t.Fatal("events: subscription closed")
			}
			switch m.typ {
			case unix.RTM_NEWLINK, unix.RTM_DELLINK:
				l, err := netlink.LinkDeserialize(nil, m.data)
				if err != nil {
					continue
				}
				if a := l.Attrs(); a.Index == index || isOurs(a.Name) {
					seen = append(seen, typeName(m.typ)+" "+a.Name+" mtu "+itoa(a.MTU)+" "+a.Flags.String())
				}
			case unix.RTM_NEWNEIGH, unix.RTM_DELNEIGH:
				nb, err := netlink.NeighDeserialize(m.data)
				if err != nil {
					continue
				}
				if nb.LinkIndex == e.n.eth0 && nb.IP.Equal(markerIP.AsSlice()) {
					if m.typ == unix.RTM_DELNEIGH {
						return seen
					}
					continue
				}
				if nb.LinkIndex == index && (nb.Family == unix.AF_BRIDGE || holdsMAC(nb.State)) {
					seen = append(seen, typeName(m.typ)+" "+describeEntry(*nb))
				}
			case unix.RTM_NEWADDR, unix.RTM_DELADDR:
				msg := nl.DeserializeIfAddrmsg(m.data)
				if int(msg.Index) != index {
					continue
				}
				attrs, err := nl.ParseRouteAttr(m.data[msg.Len():])
				if err != nil {
					continue
				}
				for _, a := range attrs {
					if a.Attr.Type == unix.IFA_ADDRESS && !net.IP(a.Value).IsLinkLocalUnicast() {
						seen = append(seen, typeName(m.typ)+" "+net.IP(a.Value).String())
					}
				}
			}
		case <-timeout:
			t.Fatal("events: no marker after 10s")
		}
	}
}

func typeName(typ uint16) string {
	switch typ {
	case unix.RTM_NEWLINK:
		return "newlink"
	case unix.RTM_DELLINK:
		return "dellink"
	case unix.RTM_NEWNEIGH:
		return "newneigh"
	case unix.RTM_DELNEIGH:
		return "delneigh"
	case unix.RTM_NEWADDR:
		return "newaddr"
	case unix.RTM_DELADDR:
		return "deladdr"
	}
	return itoa(int(typ))
}

// logBuffer collects log lines, for tests that check what Set says.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// bufferLogger logs everything, as text, to w.
func bufferLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func mustSet(t testing.TB, tun *Tunnel, d Desired) Result {
	t.Helper()
	res, err := tun.Set(context.Background(), d)
	if err != nil {
		t.Fatalf("Set: %v", err)
	}
	return res
}
