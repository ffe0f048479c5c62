package snat

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Verdicts as the test runs return them.
const (
	verdictNext = uint32(0xffffffff) // TC_ACT_UNSPEC / TCX_NEXT
	verdictDrop = uint32(2)          // TC_ACT_SHOT
)

// The test-run packets enter on the loopback device of the test's
// network namespace, so the masquerade address is set for ifindex 1.
const testIfindex = 1

var (
	nodeAddr  = netip.MustParseAddr("192.0.2.10")
	pod       = netip.MustParseAddr("10.244.1.5")
	pod2      = netip.MustParseAddr("10.244.1.6")
	pod3      = netip.MustParseAddr("10.244.1.7")
	nonMasq   = netip.MustParseAddr("10.244.1.130")
	remote    = netip.MustParseAddr("203.0.113.7")
	router    = netip.MustParseAddr("198.51.100.1")
	routableA = netip.MustParseAddr("10.1.2.3")
)

const (
	portMin = 61000
	portMax = 65000
)

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to load BPF programs")
	}
}

// load loads a datapath closed with the test, or skips the test when the
// kernel cannot run BPF.
func load(t testing.TB, o Options) *Datapath {
	t.Helper()
	needRoot(t)
	d, err := Load(o)
	if errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, unix.EPERM) {
		t.Skipf("BPF is not available: %v", err)
	}
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

// configure gives d the configuration most tests use.
func configure(t testing.TB, d *Datapath) {
	t.Helper()
	must(t, d.SetLocalPods([]netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}))
	must(t, d.SetNonMasqSources([]netip.Prefix{netip.MustParsePrefix("10.244.1.128/28")}))
	must(t, d.SetRoutable([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.16.0.0/12")}))
	must(t, d.SetPortRange(portMin, portMax))
	must(t, d.SetDevice(testIfindex, nodeAddr))
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// run runs prog on frame and returns the verdict and the packet after.
func run(t testing.TB, prog *ebpf.Program, frame []byte) (uint32, []byte) {
	t.Helper()
	out := make([]byte, len(frame)+256)
	opts := &ebpf.RunOptions{Data: frame, DataOut: out}
	ret, err := prog.Run(opts)
	if err != nil {
		t.Fatalf("running %s: %v", prog, err)
	}
	return ret, opts.DataOut
}

func egress(t testing.TB, d *Datapath, p pkt) (uint32, []byte) {
	t.Helper()
	return run(t, d.objs.SnatEgress, p.frame())
}

func ingress(t testing.TB, d *Datapath, p pkt) (uint32, []byte) {
	t.Helper()
	return run(t, d.objs.SnatIngress, p.frame())
}

// masquerade sends p out and returns the translated packet, failing if
// it was not translated.
func masquerade(t testing.TB, d *Datapath, p pkt) parsed {
	t.Helper()
	ret, out := egress(t, d, p)
	if ret != verdictNext {
		t.Fatalf("egress of %s %s -> %s: verdict %d, want pass", p.proto, p.src, p.dst, int32(ret))
	}
	got := mustParse(t, out)
	if got.src.Addr() != nodeAddr {
		t.Fatalf("egress of %s %s -> %s: source %s, want %s", p.proto, p.src, p.dst, got.src, nodeAddr)
	}
	if got.src.Port() < portMin || got.src.Port() > portMax {
		t.Fatalf("egress of %s %s -> %s: NAT port %d outside %d-%d", p.proto, p.src, p.dst, got.src.Port(), portMin, portMax)
	}
	if got.dst != p.dst {
		t.Fatalf("egress of %s %s -> %s: destination changed to %s", p.proto, p.src, p.dst, got.dst)
	}
	return got
}

func stats(t testing.TB, d *Datapath) Stats {
	t.Helper()
	s, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMasqueradeAndReply(t *testing.T) {
	d := load(t, Options{})
	configure(t, d)
	for _, tc := range []struct {
		name string
		p    pkt
	}{
		{"tcp", pkt{proto: ProtoTCP, src: netip.AddrPortFrom(pod, 40000), dst: netip.AddrPortFrom(remote, 443), payload: []byte("GET / HTTP/1.1\r\n")}},
		{"udp", pkt{proto: ProtoUDP, src: netip.AddrPortFrom(pod, 40001), dst: netip.AddrPortFrom(remote, 53), payload: []byte("query")}},
		{"udp odd length", pkt{proto: ProtoUDP, src: netip.AddrPortFrom(pod, 40002), dst: netip.AddrPortFrom(remote, 53), payload: []byte("odd")}},
		{"udp without checksum", pkt{proto: ProtoUDP, src: netip.AddrPortFrom(pod, 40003), dst: netip.AddrPortFrom(remote, 53), noUDPCsum: true, payload: []byte("none")}},
		{"icmp echo", pkt{proto: ProtoICMP, icmpType: 8, src: netip.AddrPortFrom(pod, 777), dst: netip.AddrPortFrom(remote, 0), payload: []byte("ping")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := stats(t, d)
			out := masquerade(t, d, tc.p)
			if tc.p.noUDPCsum && out.l4csum != 0 {
				t.Errorf("a zero UDP checksum became %#04x", out.l4csum)
			}
			again := masquerade(t, d, tc.p)
			if again.src != out.src {
				t.Errorf("second packet of the flow left as %s, first as %s", again.src, out.src)
			}

			reply := pkt{proto: tc.p.proto, src: tc.p.dst, dst: out.src, payload: []byte("answer"), noUDPCsum: tc.p.noUDPCsum}
			if tc.p.proto == ProtoICMP {
				reply.icmpType = 0
				reply.src = netip.AddrPortFrom(tc.p.dst.Addr(), out.src.Port())
				reply.dst = netip.AddrPortFrom(nodeAddr, 0)
			}
			ret, b := ingress(t, d, reply)
			if ret != verdictNext {
				t.Fatalf("ingress verdict %d, want pass", int32(ret))
			}
			back := mustParse(t, b)
			wantDst := tc.p.src
			if tc.p.proto == ProtoICMP {
				// The echo identifier travels as the "source port".
				if back.src.Port() != tc.p.src.Port() || back.dst.Addr() != pod {
					t.Errorf("echo reply arrived as %s -> %s id %d, want to %s id %d", back.src.Addr(), back.dst.Addr(), back.src.Port(), pod, tc.p.src.Port())
				}
			} else if back.dst != wantDst || back.src != tc.p.dst {
				t.Errorf("reply arrived as %s -> %s, want %s -> %s", back.src, back.dst, tc.p.dst, wantDst)
			}
			if tc.p.noUDPCsum && back.l4csum != 0 {
				t.Errorf("a zero UDP checksum became %#04x on the reply", back.l4csum)
			}

			after := stats(t, d)
			if got := after.Translated - before.Translated; got != 2 {
				t.Errorf("Translated grew by %d, want 2", got)
			}
			if got := after.NewFlows - before.NewFlows; got != 1 {
				t.Errorf("NewFlows grew by %d, want 1", got)
			}
			if got := after.ReverseTranslated - before.ReverseTranslated; got != 1 {
				t.Errorf("ReverseTranslated grew by %d, want 1", got)
			}
		})
	}

	tr, err := d.Translations()
	if err != nil {
		t.Fatal(err)
	}
	if len(tr) != 5 {
		t.Fatalf("Translations: %d flows, want 5: %+v", len(tr), tr)
	}
	for _, x := range tr {
		if x.NAT.Addr() != nodeAddr || x.Pod.Addr() != pod || x.Remote.Addr() != remote || x.Idle < 0 {
			t.Errorf("odd translation %+v", x)
		}
	}
}

func TestNotMasqueraded(t *testing.T) {
	d := load(t, Options{})
	configure(t, d)
	for _, tc := range []struct {
		name string
		p    pkt
		stat func(Stats) uint64
	}{
		{"routable destination", pkt{proto: ProtoTCP, src: netip.AddrPortFrom(pod, 40000), dst: netip.AddrPortFrom(routableA, 443)}, func(s Stats) uint64 { return s.SkippedRoutable }},
		{"non-masquerade source", pkt{proto: ProtoUDP, src: netip.AddrPortFrom(nonMasq, 40000), dst: netip.AddrPortFrom(remote, 53)}, func(s Stats) uint64 { return s.SkippedNonMasqSource }},
		{"host source", pkt{proto: ProtoUDP, src: netip.AddrPortFrom(nodeAddr, 40000), dst: netip.AddrPortFrom(remote, 53)}, nil},
		{"echo reply from a pod", pkt{proto: ProtoICMP, icmpType: 0, src: netip.AddrPortFrom(pod, 5), dst: netip.AddrPortFrom(routableA, 0)}, func(s Stats) uint64 { return s.SkippedRoutable }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := stats(t, d)
			in := tc.p.frame()
			ret, out := run(t, d.objs.SnatEgress, in)
			if ret != verdictNext {
				t.Fatalf("verdict %d, want pass", int32(ret))
			}
			if string(out) != string(in) {
				t.Fatalf("packet changed")
			}
			after := stats(t, d)
			if after.Translated != before.Translated {
				t.Errorf("counted as translated")
			}
			if tc.stat != nil && tc.stat(after)-tc.stat(before) != 1 {
				t.Errorf("reason not counted: %+v", after)
			}
		})
	}

	// Host traffic on ingress, even to a port of the range, is not ours.
	in := pkt{proto: ProtoUDP, src: netip.AddrPortFrom(remote, 53), dst: netip.AddrPortFrom(nodeAddr, 61500)}.frame()
	ret, out := run(t, d.objs.SnatIngress, in)
	if ret != verdictNext || string(out) != string(in) {
		t.Errorf("unknown reply was touched: verdict %d", int32(ret))
	}
}

func TestUnsupportedIsDropped(t *testing.T) {
	d := load(t, Options{})
	configure(t, d)
	frag := pkt{proto: ProtoUDP, src: netip.AddrPortFrom(pod, 40000), dst: netip.AddrPortFrom(remote, 53)}.frame()
	frag[ethHdrLen+6] = 0x20 // more fragments
	frag[ethHdrLen+10], frag[ethHdrLen+11] = 0, 0
	gre := pkt{proto: ProtoUDP, src: netip.AddrPortFrom(pod, 40000), dst: netip.AddrPortFrom(remote, 53)}.frame()
	gre[ethHdrLen+9] = 47
	for name, frame := range map[string][]byte{"fragment": frag, "gre": gre} {
		before := stats(t, d)
		if ret, _ := run(t, d.objs.SnatEgress, frame); ret != verdictDrop {
			t.Errorf("%s: verdict %d, want drop", name, int32(ret))
		}
		if stats(t, d).DroppedUnsupported-before.DroppedUnsupported != 1 {
			t.Errorf("%s: drop not counted", name)
		}
	}
	// The same towards a routable destination is none of our business.
	gre[ethHdrLen+16] = 10
	if ret, _ := run(t, d.objs.SnatEgress, gre); ret != verdictNext {
		t.Errorf("routable gre: verdict %d, want pass", int32(ret))
	}
}

func TestPortChoice(t *testing.T) {
	d := load(t, Options{})
	configure(t, d)
	dst := netip.AddrPortFrom(remote, 443)
	kept := masquerade(t, d, pkt{proto: ProtoTCP, src: netip.AddrPortFrom(pod, 61234), dst: dst})
	if kept.src.Port() != 61234 {
		t.Errorf("port 61234 is in the range and free but became %d", kept.src.Port())
	}
	other := masquerade(t, d, pkt{proto: ProtoTCP, src: netip.AddrPortFrom(pod2, 61234), dst: dst})
	if other.src.Port() == 61234 {
		t.Errorf("second pod got the port already taken towards %s", dst)
	}
	elsewhere := masquerade(t, d, pkt{proto: ProtoTCP, src: netip.AddrPortFrom(pod2, 61234), dst: netip.AddrPortFrom(remote, 80)})
	if elsewhere.src.Port() != 61234 {
		t.Errorf("towards another remote port the pod's port should be kept, got %d", elsewhere.src.Port())
	}
	udp := masquerade(t, d, pkt{proto: ProtoUDP, src: netip.AddrPortFrom(pod2, 61234), dst: dst})
	if udp.src.Port() != 61234 {
		t.Errorf("UDP shares no ports with TCP, but got %d", udp.src.Port())
	}
	out := masquerade(t, d, pkt{proto: ProtoTCP, src: netip.AddrPortFrom(pod3, 40000), dst: dst})
	if out.src.Port() == 61234 || out.src.Port() == other.src.Port() {
		t.Errorf("third flow to %s got a port in use: %d", dst, out.src.Port())
	}
}

func TestPortExhaustion(t *testing.T) {
	d := load(t, Options{})
	configure(t, d)
	must(t, d.SetPortRange(61000, 61001))
	dst := netip.AddrPortFrom(remote, 443)
	seen := map[uint16]bool{}
	for _, a := range []netip.Addr{pod, pod2} {
		got := masquerade(t, d, pkt{proto: ProtoTCP, src: netip.AddrPortFrom(a, 40000), dst: dst})
		seen[got.src.Port()] = true
	}
	if len(seen) != 2 {
		t.Fatalf("two flows share a port: %v", seen)
	}
	before := stats(t, d)
	p := pkt{proto: ProtoTCP, src: netip.AddrPortFrom(pod3, 40000), dst: dst}
	if ret, _ := egress(t, d, p); ret != verdictDrop {
		t.Fatalf("third flow with two ports: verdict %d, want drop", int32(ret))
	}
	if got := stats(t, d).DroppedNoPort - before.DroppedNoPort; got != 1 {
		t.Errorf("DroppedNoPort grew by %d, want 1", got)
	}
	// Another remote has its own ports.
	masquerade(t, d, pkt{proto: ProtoTCP, src: netip.AddrPortFrom(pod3, 40000), dst: netip.AddrPortFrom(remote, 80)})
}

// A closed TCP flow's port goes to a new flow to the same remote once the
// closed one has been quiet for a second, not only when GC runs: a pod
// that opens connections to one server in a loop must not run out.
func TestClosedFlowPortReused(t *testing.T) {
	d := load(t, Options{})
	configure(t, d)
	must(t, d.SetPortRange(61000, 61000))
	dst := netip.AddrPortFrom(remote, 443)
	first := masquerade(t, d, pkt{proto: ProtoTCP, src: netip.AddrPortFrom(pod, 40000), dst: dst, tcpFlags: 0x02})
	// The server closes: its FIN comes back to the NAT port.
	if ret, _ := ingress(t, d, pkt{proto: ProtoTCP, src: dst, dst: first.src, tcpFlags: 0x11}); ret != verdictNext {
		t.Fatalf("FIN from the server: verdict %d", int32(ret))
	}
	next := pkt{proto: ProtoTCP, src: netip.AddrPortFrom(pod2, 40001), dst: dst, tcpFlags: 0x02}
	if ret, _ := egress(t, d, next); ret != verdictDrop {
		t.Fatalf("a new flow while the closed one is fresh: verdict %d, want drop (one port)", int32(ret))
	}
	time.Sleep(1200 * time.Millisecond)
	got := masquerade(t, d, next)
	if got.src.Port() != 61000 {
		t.Fatalf("new flow got port %d", got.src.Port())
	}
	// Closed by both sides: the port is free at once.
	if ret, _ := ingress(t, d, pkt{proto: ProtoTCP, src: dst, dst: got.src, tcpFlags: 0x11}); ret != verdictNext {
		t.Fatalf("FIN from the server: verdict %d", int32(ret))
	}
	masquerade(t, d, pkt{proto: ProtoTCP, src: netip.AddrPortFrom(pod2, 40001), dst: dst, tcpFlags: 0x11})
	third := masquerade(t, d, pkt{proto: ProtoTCP, src: netip.AddrPortFrom(pod3, 40009), dst: dst, tcpFlags: 0x02})
	if third.src.Port() != 61000 {
		t.Fatalf("after both FINs the port was not free at once: %d", third.src.Port())
	}
	// The old flows no longer own the port: a packet of theirs starts
	// over and finds none free, rather than sharing the new flow's.
	for _, old := range []netip.AddrPort{netip.AddrPortFrom(pod, 40000), netip.AddrPortFrom(pod2, 40001)} {
		if ret, _ := egress(t, d, pkt{proto: ProtoTCP, src: old, dst: dst, tcpFlags: 0x10}); ret != verdictDrop {
			t.Errorf("a packet of the closed flow from %s: verdict %d, want drop (the one port is the new flow's)", old, int32(ret))
		}
	}
	// An open flow's port is never taken.
	must(t, d.SetPortRange(61001, 61001))
	masquerade(t, d, pkt{proto: ProtoTCP, src: netip.AddrPortFrom(pod3, 40002), dst: dst, tcpFlags: 0x02})
	time.Sleep(1200 * time.Millisecond)
	if ret, _ := egress(t, d, pkt{proto: ProtoTCP, src: netip.AddrPortFrom(pod2, 40003), dst: dst, tcpFlags: 0x02}); ret != verdictDrop {
		t.Errorf("an open flow's port went to a new flow: verdict %d", int32(ret))
	}
}

func TestNoDeviceDrops(t *testing.T) {
	d := load(t, Options{})
	configure(t, d)
	must(t, d.RemoveDevice(testIfindex))
	before := stats(t, d)
	if ret, _ := egress(t, d, pkt{proto: ProtoUDP, src: netip.AddrPortFrom(pod, 40000), dst: netip.AddrPortFrom(remote, 53)}); ret != verdictDrop {
		t.Fatalf("verdict %d, want drop", int32(ret))
	}
	if stats(t, d).DroppedNoDevice-before.DroppedNoDevice != 1 {
		t.Error("drop not counted")
	}
}

// quoteOf returns what a router quotes of a packet: its IP header and at
// least the first 8 bytes of the payload; n < 0 quotes it all.
func quoteOf(ip []byte, n int) []byte {
	if n < 0 || n > len(ip) {
		n = len(ip)
	}
	return append([]byte(nil), ip[:n]...)
}

func TestICMPErrorsIngress(t *testing.T) {
	d := load(t, Options{})
	configure(t, d)
	for _, tc := range []struct {
		name      string
		p         pkt
		typ, code uint8
		quote     int
	}{
		{"udp time exceeded", pkt{proto: ProtoUDP, src: netip.AddrPortFrom(pod, 33434), dst: netip.AddrPortFrom(remote, 33435), payload: []byte("traceroute")}, 11, 0, -1},
		{"udp without checksum", pkt{proto: ProtoUDP, src: netip.AddrPortFrom(pod, 33436), dst: netip.AddrPortFrom(remote, 33437), noUDPCsum: true}, 11, 0, -1},
		{"tcp fragmentation needed", pkt{proto: ProtoTCP, src: netip.AddrPortFrom(pod, 40000), dst: netip.AddrPortFrom(remote, 443), payload: []byte("big segment")}, 3, 4, -1},
		{"tcp short quote", pkt{proto: ProtoTCP, src: netip.AddrPortFrom(pod, 40001), dst: netip.AddrPortFrom(remote, 443)}, 3, 4, ipHdrLen + 8},
		{"echo time exceeded", pkt{proto: ProtoICMP, icmpType: 8, src: netip.AddrPortFrom(pod, 4242), dst: netip.AddrPortFrom(remote, 0), payload: []byte("ping")}, 11, 0, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := masquerade(t, d, tc.p)
			// The packet as it left, quoted back by a router on the path.
			ret, sent := egress(t, d, tc.p)
			if ret != verdictNext {
				t.Fatal("second packet not passed")
			}
			icmp := pkt{
				proto: ProtoICMP, icmpType: tc.typ, icmpCode: tc.code,
				src: netip.AddrPortFrom(router, 0), dst: netip.AddrPortFrom(nodeAddr, 0),
				quote: quoteOf(sent[ethHdrLen:], tc.quote),
			}
			before := stats(t, d)
			ret, b := ingress(t, d, icmp)
			if ret != verdictNext {
				t.Fatalf("verdict %d, want pass", int32(ret))
			}
			got := mustParse(t, b)
			if got.src.Addr() != router || got.dst.Addr() != pod {
				t.Errorf("error arrived as %s -> %s, want %s -> %s", got.src.Addr(), got.dst.Addr(), router, pod)
			}
			if got.inner == nil {
				t.Fatal("quote lost")
			}
			if got.inner.src != tc.p.src || got.inner.dst.Addr() != tc.p.dst.Addr() {
				t.Errorf("quote reads %s -> %s, want %s -> %s (left as %s)", got.inner.src, got.inner.dst, tc.p.src, tc.p.dst, out.src)
			}
			if tc.p.noUDPCsum && got.inner.l4csum != 0 {
				t.Errorf("quoted zero UDP checksum became %#04x", got.inner.l4csum)
			}
			if stats(t, d).ICMPErrors-before.ICMPErrors != 1 {
				t.Error("not counted")
			}
		})
	}

	t.Run("unknown flow", func(t *testing.T) {
		quoted := pkt{proto: ProtoUDP, src: netip.AddrPortFrom(nodeAddr, 61999), dst: netip.AddrPortFrom(remote, 9)}.ip()
		icmp := pkt{proto: ProtoICMP, icmpType: 3, icmpCode: 3, src: netip.AddrPortFrom(remote, 0), dst: netip.AddrPortFrom(nodeAddr, 0), quote: quoted}
		in := icmp.frame()
		ret, b := run(t, d.objs.SnatIngress, in)
		if ret != verdictNext || string(b) != string(in) {
			t.Errorf("error about a host flow was touched")
		}
	})
}

func TestICMPErrorEgress(t *testing.T) {
	d := load(t, Options{})
	configure(t, d)
	p := pkt{proto: ProtoUDP, src: netip.AddrPortFrom(pod, 40000), dst: netip.AddrPortFrom(remote, 53)}
	out := masquerade(t, d, p)
	// A reply comes back after the pod closed its socket...
	_, replyFrame := ingress(t, d, pkt{proto: ProtoUDP, src: p.dst, dst: out.src, payload: []byte("late")})
	// ...and the pod says port unreachable, quoting the reply it got.
	unreach := pkt{
		proto: ProtoICMP, icmpType: 3, icmpCode: 3,
		src: netip.AddrPortFrom(pod, 0), dst: netip.AddrPortFrom(remote, 0),
		quote: quoteOf(replyFrame[ethHdrLen:], -1),
	}
	ret, b := egress(t, d, unreach)
	if ret != verdictNext {
		t.Fatalf("verdict %d, want pass", int32(ret))
	}
	got := mustParse(t, b)
	if got.src.Addr() != nodeAddr || got.dst.Addr() != remote {
		t.Errorf("error left as %s -> %s, want %s -> %s", got.src.Addr(), got.dst.Addr(), nodeAddr, remote)
	}
	if got.inner == nil || got.inner.dst != out.src || got.inner.src != p.dst {
		t.Errorf("quote reads %+v, want %s -> %s", got.inner, p.dst, out.src)
	}

	// An error about nothing we translated must not leave with the pod's
	// address towards a destination that needs masquerading.
	stray := pkt{
		proto: ProtoICMP, icmpType: 3, icmpCode: 3,
		src: netip.AddrPortFrom(pod, 0), dst: netip.AddrPortFrom(remote, 0),
		quote: pkt{proto: ProtoUDP, src: netip.AddrPortFrom(remote, 9), dst: netip.AddrPortFrom(pod, 1)}.ip(),
	}
	if ret, _ := egress(t, d, stray); ret != verdictDrop {
		t.Errorf("stray error: verdict %d, want drop", int32(ret))
	}
}

func TestSetValidation(t *testing.T) {
	d := load(t, Options{LocalPodEntries: 2})
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"unaligned", d.SetRoutable([]netip.Prefix{netip.MustParsePrefix("10.0.0.1/8")}), `routable[0]: 10.0.0.1/8 is not aligned to a CIDR block (10.0.0.0/8 is)`},
		{"mapped", d.SetNonMasqSources([]netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")}), "nonMasqueradeSrcCIDRs[0]: ::ffff:10.0.0.0/104 is IPv4-mapped"},
		{"invalid", d.SetRoutable([]netip.Prefix{{}}), "routable[0]: "},
		{"too many", d.SetLocalPods([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("10.0.1.0/24"), netip.MustParsePrefix("10.0.2.0/24")}), "localPodCIDRs: 3 prefixes do not fit the map of 2 entries"},
		{"port range", d.SetPortRange(65000, 61000), "snat port range 65000-61000"},
		{"zero port", d.SetPortRange(0, 10), "snat port range 0-10"},
		{"ipv6 device", d.SetDevice(3, netip.MustParseAddr("2001:db8::1")), "IPv6 masquerade is not implemented"},
		{"bad ifindex", d.SetDevice(0, nodeAddr), "ifindex 0"},
		{"attach without device", d.Attach(7), "no masquerade address"},
	} {
		if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, tc.err, tc.want)
		}
	}
}

func TestSetPrefixesDiffs(t *testing.T) {
	d := load(t, Options{})
	ps := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	set := func(want []netip.Prefix) ([]netip.Prefix, []netip.Prefix) {
		t.Helper()
		added, removed, err := setPrefixes("routable", d.objs.SnatRoutable, 100, want)
		if err != nil {
			t.Fatal(err)
		}
		return added, removed
	}
	if a, r := set(ps("10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32")); len(a) != 3 || len(r) != 0 {
		t.Fatalf("first set: added %v removed %v", a, r)
	}
	if a, r := set(ps("2001:db8::/32", "10.0.0.0/8", "192.168.0.0/16", "10.0.0.0/8")); len(a) != 0 || len(r) != 0 {
		t.Fatalf("same set again: added %v removed %v", a, r)
	}
	a, r := set(ps("10.0.0.0/8", "192.168.1.0/24"))
	if len(a) != 1 || a[0] != netip.MustParsePrefix("192.168.1.0/24") || len(r) != 2 {
		t.Fatalf("changed set: added %v removed %v", a, r)
	}
	var k snatLpmKey
	var v uint8
	var have []string
	it := d.objs.SnatRoutable.Iterate()
	for it.Next(&k, &v) {
		have = append(have, prefixOf(k).String())
	}
	must(t, it.Err())
	if len(have) != 2 {
		t.Errorf("map holds %v, want 10.0.0.0/8 and 192.168.1.0/24", have)
	}

	// The trie answers as the set says, from the datapath's side.
	configure(t, d)
	must(t, d.SetRoutable(ps("203.0.113.0/25")))
	p := pkt{proto: ProtoUDP, src: netip.AddrPortFrom(pod, 40000), dst: netip.AddrPortFrom(remote, 53)}
	in := p.frame()
	if _, out := run(t, d.objs.SnatEgress, in); string(out) != string(in) {
		t.Error("destination in the routable set was masqueraded")
	}
	must(t, d.SetRoutable(ps("10.0.0.0/8")))
	masquerade(t, d, p)
}

func TestSetsDropStaleFlows(t *testing.T) {
	d := load(t, Options{})
	configure(t, d)
	p := pkt{proto: ProtoUDP, src: netip.AddrPortFrom(pod, 40000), dst: netip.AddrPortFrom(remote, 53)}
	out := masquerade(t, d, p)
	count := func() int {
		tr, err := d.Translations()
		must(t, err)
		return len(tr)
	}
	must(t, d.SetRoutable([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}))
	if count() != 1 {
		t.Fatal("an unchanged routable set dropped a flow")
	}
	must(t, d.SetRoutable([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("203.0.113.0/24")}))
	if count() != 0 {
		t.Fatal("flow to a now routable destination kept")
	}
	in := p.frame()
	if _, b := run(t, d.objs.SnatEgress, in); string(b) != string(in) {
		t.Error("flow to a now routable destination still translated")
	}
	reply := pkt{proto: ProtoUDP, src: p.dst, dst: out.src}.frame()
	if _, b := run(t, d.objs.SnatIngress, reply); string(b) != string(reply) {
		t.Error("reply of a dropped flow still translated")
	}

	must(t, d.SetRoutable(nil))
	masquerade(t, d, p)
	must(t, d.SetDevice(testIfindex, netip.MustParseAddr("192.0.2.11")))
	if count() != 0 {
		t.Fatal("flow translated to the old device address kept")
	}
}

func TestGC(t *testing.T) {
	d := load(t, Options{})
	configure(t, d)
	tcp := pkt{proto: ProtoTCP, src: netip.AddrPortFrom(pod, 40000), dst: netip.AddrPortFrom(remote, 443)}
	fin := tcp
	fin.src = netip.AddrPortFrom(pod, 40001)
	masquerade(t, d, tcp)
	masquerade(t, d, fin)
	fin.tcpFlags = 0x11 // FIN, ACK
	masquerade(t, d, fin)
	masquerade(t, d, pkt{proto: ProtoUDP, src: netip.AddrPortFrom(pod, 40000), dst: netip.AddrPortFrom(remote, 53)})
	masquerade(t, d, pkt{proto: ProtoICMP, icmpType: 8, src: netip.AddrPortFrom(pod, 1), dst: netip.AddrPortFrom(remote, 0)})

	protos := func() map[Proto]int {
		tr, err := d.Translations()
		must(t, err)
		m := map[Proto]int{}
		for _, x := range tr {
			m[x.Proto]++
		}
		return m
	}
	gc := func(after time.Duration) int {
		n, err := d.GC(time.Now().Add(after), IdleTimeouts{TCP: time.Hour, TCPClosing: 10 * time.Second, UDP: time.Minute, ICMP: 30 * time.Second})
		must(t, err)
		return n
	}
	if n := gc(0); n != 0 {
		t.Fatalf("GC now dropped %d", n)
	}
	if n := gc(20 * time.Second); n != 1 || protos()[ProtoTCP] != 1 {
		t.Fatalf("GC after 20s dropped %d, left %v; want the closing TCP flow gone", n, protos())
	}
	if n := gc(45 * time.Second); n != 1 || protos()[ProtoICMP] != 0 {
		t.Fatalf("GC after 45s dropped %d, left %v; want the echo flow gone", n, protos())
	}
	if n := gc(2 * time.Minute); n != 1 || protos()[ProtoUDP] != 0 {
		t.Fatalf("GC after 2m dropped %d, left %v; want the UDP flow gone", n, protos())
	}
	if n := gc(2 * time.Hour); n != 1 || len(protos()) != 0 {
		t.Fatalf("GC after 2h dropped %d, left %v", n, protos())
	}

	// A reverse entry whose forward entry went is collected too.
	out := masquerade(t, d, tcp)
	var k snatNatKey
	k.Local.B = addr16(pod)
	k.Remote.B = addr16(remote)
	k.Lport = htons(40000)
	k.Rport = htons(443)
	k.Proto = uint8(ProtoTCP)
	must(t, d.objs.SnatFwd.Delete(k))
	if n := gc(2 * time.Hour); n != 1 {
		t.Fatalf("orphaned reverse entry: GC dropped %d, want 1", n)
	}
	// With both gone the port is free again and the flow starts over.
	if again := masquerade(t, d, tcp); again.src.Addr() != out.src.Addr() {
		t.Fatalf("restarted flow left as %s", again.src)
	}
}
