package main

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"routeagent.io/route-agent/e2e/lab"
)

// The benchmark's own segment, next to the lab's racks:
//
//	feed10k  10.6.0.1  AS 65001   10,000 /27s from 100.64.0.0    (P2)
//	feed100k 10.6.0.2  AS 65002  100,000 /28s from 100.96.0.0    (P7)
//	bench-node 10.6.0.11 AS 65011  route-agent, pods 10.5.116.0/24, mgmt 10.250.0.21
//	bird     10.6.0.12 AS 65012   BIRD 2 exporting into its namespace's kernel
//
// Both FRR feeds start with every neighbour shut down; each figure opens
// the sessions it measures.
var (
	feedSegment = netip.MustParsePrefix("10.6.0.0/24")
	nodeAddr    = netip.MustParseAddr("10.6.0.11")
	birdAddr    = netip.MustParseAddr("10.6.0.12")

	range10k  = netip.MustParsePrefix("100.64.0.0/12")
	range100k = netip.MustParsePrefix("100.96.0.0/11")
)

const (
	coalesceMs = 20
	nodeASN    = 65011
	birdASN    = 65012
	nodeLabel  = "bench-feed"
)

// feed is an FRR router advertising n prefixes.
type feed struct {
	r      *lab.Router
	n      int
	bits   int
	rng    netip.Prefix
	prefix func(i int) netip.Prefix
}

type env struct {
	l        *lab.Lab
	seg      *lab.Segment
	feed10k  *feed
	feed100k *feed
	node     *lab.Node
	bird     *lab.Bird
	birdNS   string
	// lb is the LoadBalancer figures' setup while they run (lb.go).
	lb *lbEnv
}

func newFeed(name string, addr netip.Addr, asn uint32, n, bits int, rng netip.Prefix) *feed {
	base := rng.Addr().As4()
	b := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	step := uint32(1) << (32 - bits)
	return &feed{
		r: &lab.Router{Name: name, ASN: asn, Addr: addr, Segment: feedSegment},
		n: n, bits: bits, rng: rng,
		prefix: func(i int) netip.Prefix {
			a := b + uint32(i)*step
			return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), bits)
		},
	}
}

// config is the feed's bgpd.conf: the node and BIRD as neighbours, shut
// down, and its prefixes as network statements.
func (f *feed) config() string {
	var b strings.Builder
	fmt.Fprintf(&b, "frr defaults datacenter\nhostname %s\n", f.r.Name)
	fmt.Fprintf(&b, "router bgp %d\n bgp router-id %s\n no bgp ebgp-requires-policy\n no bgp network import-check\n", f.r.ASN, f.r.Addr)
	// FRR holds a new peer's first UPDATEs back by its subgroup coalesce
	// time (about 1.2 s by default), the same for every receiver: shorten
	// it, so that the figures are the receivers' rather than the feed's.
	fmt.Fprintf(&b, " coalesce-time %d\n", coalesceMs)
	for _, nb := range []struct {
		addr netip.Addr
		asn  int
	}{{nodeAddr, nodeASN}, {birdAddr, birdASN}} {
		fmt.Fprintf(&b, " neighbor %s remote-as %d\n neighbor %s shutdown\n", nb.addr, nb.asn, nb.addr)
	}
	b.WriteString(" address-family ipv4 unicast\n")
	for i := range f.n {
		fmt.Fprintf(&b, "  network %s\n", f.prefix(i))
	}
	b.WriteString(" exit-address-family\n")
	return b.String()
}

// neighbor shuts the feed's session to addr down or opens it.
func (f *feed) neighbor(ctx context.Context, addr netip.Addr, up bool) error {
	cmd := "neighbor " + addr.String() + " shutdown"
	if up {
		cmd = "no " + cmd
	}
	out, err := exec.CommandContext(ctx, "vtysh", "--vty_socket", f.r.VTYDir,
		"-c", "configure terminal", "-c", fmt.Sprintf("router bgp %d", f.r.ASN), "-c", cmd).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		return fmt.Errorf("vtysh on %s %q: %v: %s", f.r.Name, cmd, err, out)
	}
	return nil
}

// ours matches the agent's routes to the feed's prefixes.
func (f *feed) ours(proto int) func(*netlink.Route) bool {
	return func(r *netlink.Route) bool {
		if int(r.Protocol) != proto || r.Dst == nil {
			return false
		}
		ones, _ := r.Dst.Mask.Size()
		a, ok := netip.AddrFromSlice(r.Dst.IP)
		return ok && ones == f.bits && f.rng.Contains(a.Unmap())
	}
}

// birdProto is RTPROT_BIRD, the protocol of BIRD's kernel routes.
const birdProto = unix.RTPROT_BIRD

// birdConfig is a Calico-like BIRD: a kernel protocol exporting everything
// it learns (persist, taking part in graceful restart), and one BGP session
// per feed; the 100k feed's with graceful restart, so that a BIRD
// restarted with -R (as calico-node runs it) keeps its kernel routes.
func birdConfig(dir string, feeds ...*feed) string {
	var b strings.Builder
	fmt.Fprintf(&b, "log \"%s/bird.log\" all;\ntimeformat log \"%%F %%T.%%6f\";\nrouter id %s;\n", dir, birdAddr)
	b.WriteString("protocol device { scan time 10; }\n")
	b.WriteString("protocol kernel {\n ipv4 { import none; export all; };\n persist;\n graceful restart;\n scan time 60;\n}\n")
	for _, f := range feeds {
		gr := "aware"
		if f.n >= 100_000 {
			gr = "on"
		}
		fmt.Fprintf(&b, "protocol bgp %s {\n local %s as %d;\n neighbor %s as %d;\n ipv4 { import all; export none; };\n graceful restart %s;\n connect retry time 1;\n}\n",
			f.r.Name, birdAddr, birdASN, f.r.Addr, f.r.ASN, gr)
	}
	return b.String()
}

// bgpConfig is the lab's bgp-config with the bench node's peer at feed.
func bgpConfig(f *feed) string {
	peer := fmt.Sprintf(`- peer-address: %s
  peer-asn: %d
  my-asn: %d
  node-selectors:
  - match-labels:
      %s: %s
`, f.r.Addr, f.r.ASN, nodeASN, lab.RouteLabel, nodeLabel)
	return "peers:\n" + peer + strings.TrimPrefix(lab.BGPConfig, "peers:\n")
}

func setup(ctx context.Context, l *lab.Lab) (*env, error) {
	e := &env{l: l}
	var err error
	logf("adding segment %s with the FRR feeds, BIRD and the bench node", feedSegment)
	if e.seg, err = l.AddSegment(ctx, "feed", feedSegment); err != nil {
		return nil, err
	}
	e.feed10k = newFeed("feed10k", netip.MustParseAddr("10.6.0.1"), 65001, 10_000, 27, range10k)
	e.feed100k = newFeed("feed100k", netip.MustParseAddr("10.6.0.2"), 65002, 100_000, 28, range100k)
	for _, f := range []*feed{e.feed10k, e.feed100k} {
		if f.r.NS, err = l.AddHost(ctx, e.seg, f.r.Name, f.r.Addr); err != nil {
			return nil, err
		}
		start := time.Now()
		if err := l.StartFRRWith(ctx, f.r, f.config()); err != nil {
			return nil, err
		}
		if err := waitOriginated(ctx, f); err != nil {
			return nil, err
		}
		logf("%s (AS %d, %s) up with %d prefixes in %s", f.r.Name, f.r.ASN, f.r.Addr, f.n, time.Since(start).Round(time.Millisecond))
	}
	if e.birdNS, err = l.AddHost(ctx, e.seg, "bird", birdAddr); err != nil {
		return nil, err
	}
	if e.bird, err = l.StartBird(ctx, "bird", e.birdNS, birdConfig(filepath.Join(l.Dir, "bird"), e.feed10k), false); err != nil {
		return nil, err
	}
	logf("BIRD (AS %d, %s) up", birdASN, birdAddr)

	if _, err := l.ApplyBGPConfig(ctx, bgpConfig(e.feed10k)); err != nil {
		return nil, err
	}
	e.node = &lab.Node{
		Name: "bench-node", IP: nodeAddr, MgmtIP: netip.MustParseAddr("10.250.0.21"),
		PodCIDR: netip.MustParsePrefix("10.5.116.0/24"), Labels: map[string]string{lab.RouteLabel: nodeLabel},
	}
	if err := l.AddNode(ctx, e.node, e.seg); err != nil {
		return nil, err
	}
	logf("route-agent on %s (%s, AS %d) up", e.node.Name, e.node.IP, nodeASN)
	return e, nil
}

// waitOriginated waits until the feed's BGP table holds all its prefixes.
func waitOriginated(ctx context.Context, f *feed) error {
	return lab.WaitFor(ctx, 2*time.Minute, f.r.Name+" to originate its prefixes", func() error {
		out, err := f.r.VTY(ctx, "show bgp ipv4 unicast statistics json")
		if err != nil {
			return err
		}
		if !strings.Contains(string(out), fmt.Sprintf(`"totalPrefixes":%d`, f.n)) {
			return fmt.Errorf("not yet")
		}
		return nil
	})
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
