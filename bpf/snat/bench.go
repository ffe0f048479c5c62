package snat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"time"

	"github.com/cilium/ebpf"
)

// BenchOptions configure Bench. Zero fields take their defaults.
type BenchOptions struct {
	// RoutableSizes are the sizes of the routable set to measure with;
	// default 10, 1000 and 16000 prefixes.
	RoutableSizes []int
	// NewFlows is how many first packets of flows are timed per size;
	// default 2000.
	NewFlows int
	// Repeat is how many times the kernel runs the established-flow and
	// host packets per size; default 1,000,000.
	Repeat int
}

// BenchRow is the per-packet cost of the egress program with one size of
// the routable set, as the kernel's BPF_PROG_TEST_RUN timed it.
type BenchRow struct {
	Routable int
	// Established is a packet of an established flow.
	Established time.Duration
	// NewFlow is the first packet of a flow: the routable lookup, the
	// port choice and both NAT entries. It is the average of single
	// runs, each a system call of its own, so it includes the kernel's
	// timing of one run and caches gone cold in between (on a small VM,
	// some 100ns for a packet the program merely passes, against 20ns
	// in a loop).
	NewFlow time.Duration
	// NewFlowChained is a new flow timed in the kernel's loop, with warm
	// caches; see Bench.
	NewFlowChained time.Duration
	// Host is a packet the program leaves alone: not from a local pod.
	Host time.Duration
}

// BenchResult is what Bench measured.
type BenchResult struct {
	Rows []BenchRow
}

func (r BenchResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-10s %12s %10s %12s %8s\n", "routable", "established", "new flow", "new chained", "host")
	for _, row := range r.Rows {
		fmt.Fprintf(&b, "%-10d %10dns %8dns %10dns %6dns\n", row.Routable, row.Established.Nanoseconds(),
			row.NewFlow.Nanoseconds(), row.NewFlowChained.Nanoseconds(), row.Host.Nanoseconds())
	}
	return b.String()
}

// Bench measures the egress program on an unpinned datapath of its own,
// attached nowhere, for each size of the routable set. The prefixes are
// spread over the whole IPv4 space so that the trie is deep wherever a
// destination falls; destinations are random addresses outside them.
// It needs root and loads programs: run it on a test machine.
//
// The established flow's packet is one whose translation is itself (the
// device address is the pod's and its port lies in the NAT range): every
// repeat then walks the full established path, lookups and rewrites
// included, on the same bytes, where a translated packet would be seen
// as host traffic by the next repeat.
func Bench(o BenchOptions) (BenchResult, error) {
	if len(o.RoutableSizes) == 0 {
		o.RoutableSizes = []int{10, 1000, 16000}
	}
	if o.NewFlows <= 0 {
		o.NewFlows = 2000
	}
	if o.NewFlows > benchMaxNewFlows {
		return BenchResult{}, fmt.Errorf("benchmark NewFlows %d: at most %d flows to one destination fit the port range", o.NewFlows, benchMaxNewFlows)
	}
	if o.Repeat <= 0 {
		o.Repeat = 1_000_000
	}
	var res BenchResult
	for _, n := range o.RoutableSizes {
		row, err := benchOne(n, o)
		if err != nil {
			return res, fmt.Errorf("benchmark with %d routable prefixes: %w", n, err)
		}
		res.Rows = append(res.Rows, row)
	}
	return res, nil
}

const (
	// benchIfindex is the device test runs see: loopback.
	benchIfindex = 1
	// benchMaxNewFlows flows to one destination use at most three
	// quarters of the benchmark's 4001 NAT ports.
	benchMaxNewFlows = 3000
	benchChained     = 3000
)

func benchOne(n int, o BenchOptions) (BenchRow, error) {
	row := BenchRow{Routable: n}
	d, err := Load(Options{
		RoutableEntries: max(n, DefaultRoutableEntries),
		NATEntries:      max(4*o.NewFlows, DefaultNATEntries),
	})
	if err != nil {
		return row, err
	}
	defer d.Close()

	rng := rand.New(rand.NewPCG(uint64(n), 1))
	routable := randomPrefixes(rng, n)
	covered := newPrefixSet(routable)
	podAddr := netip.MustParseAddr("10.244.0.5")
	if covered.contains(podAddr) {
		routable = routable[:0]
		for _, p := range randomPrefixes(rng, n+1) {
			if !p.Contains(podAddr) && len(routable) < n {
				routable = append(routable, p)
			}
		}
		covered = newPrefixSet(routable)
	}
	if err := errors.Join(
		d.SetLocalPods([]netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")}),
		d.SetPortRange(61000, 65000),
		d.SetDevice(benchIfindex, podAddr),
		d.SetRoutable(routable),
	); err != nil {
		return row, err
	}
	dst := func() netip.Addr {
		for {
			var b [4]byte
			binary.BigEndian.PutUint32(b[:], rng.Uint32())
			a := netip.AddrFrom4(b)
			if !covered.contains(a) && a.IsGlobalUnicast() {
				return a
			}
		}
	}

	prog := d.objs.SnatEgress
	est := benchUDP(podAddr, 62000, dst(), 443)
	if err := expectPass(prog, est); err != nil {
		return row, fmt.Errorf("established flow: %w", err)
	}
	if row.Established, err = benchRun(prog, est, o.Repeat); err != nil {
		return row, err
	}
	host := benchUDP(netip.MustParseAddr("192.0.2.10"), 40000, dst(), 443)
	if row.Host, err = benchRun(prog, host, o.Repeat); err != nil {
		return row, err
	}

	// New flows as the kernel would see a burst of connections to one
	// service: one destination, distinct source ports, each timed alone.
	var total time.Duration
	svc := dst()
	for i := range o.NewFlows {
		pkt := benchUDP(podAddr, uint16(1024+i), svc, 443)
		dur, err := benchRun(prog, pkt, 1)
		if err != nil {
			return row, err
		}
		total += dur
	}
	// The chained run: with the device address equal to the pod's, a new
	// flow's translated packet is the first packet of another new flow
	// (its source port, now in the range, is taken, so the next one is
	// chosen), so every repeat creates a flow, one port collision
	// included.
	chained := min(o.NewFlows, benchChained)
	if row.NewFlowChained, err = benchRun(prog, benchUDP(podAddr, 1000, dst(), 443), chained); err != nil {
		return row, err
	}
	st, err := d.Stats()
	if err != nil {
		return row, err
	}
	if want := uint64(o.NewFlows + chained + 1); st.NewFlows != want || st.DroppedNoPort != 0 {
		return row, fmt.Errorf("expected %d new flows, made %d, %d dropped for want of a port", want, st.NewFlows, st.DroppedNoPort)
	}
	row.NewFlow = total / time.Duration(o.NewFlows)
	return row, nil
}

func benchRun(prog *ebpf.Program, pkt []byte, repeat int) (time.Duration, error) {
	ret, dur, err := prog.Benchmark(pkt, repeat, nil)
	if err != nil {
		return 0, err
	}
	if ret != uint32(0xffffffff) {
		return 0, fmt.Errorf("verdict %d, want pass", int32(ret))
	}
	return dur, nil
}

func expectPass(prog *ebpf.Program, pkt []byte) error {
	_, err := benchRun(prog, pkt, 1)
	return err
}

// randomPrefixes returns n distinct prefixes of /16 to /28 anywhere in
// the IPv4 unicast space.
func randomPrefixes(rng *rand.Rand, n int) []netip.Prefix {
	seen := make(map[netip.Prefix]bool, n)
	out := make([]netip.Prefix, 0, n)
	for len(out) < n {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], rng.Uint32())
		a := netip.AddrFrom4(b)
		if !a.IsGlobalUnicast() && !a.IsPrivate() {
			continue
		}
		p := netip.PrefixFrom(a, 16+rng.IntN(13)).Masked()
		if seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, p)
	}
	return out
}

// benchUDP is a minimal UDP packet with correct checksums, from the
// Ethernet header on as a TC program sees it.
func benchUDP(src netip.Addr, sport uint16, dst netip.Addr, dport uint16) []byte {
	const payload = 32
	b := make([]byte, 14+20+8+payload)
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	ip[8] = 64
	ip[9] = 17
	s, d := src.As4(), dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[10:], ^sum16(0, ip[:20]))
	udp := ip[20:]
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	var ph [12]byte
	copy(ph[0:], s[:])
	copy(ph[4:], d[:])
	ph[9] = 17
	binary.BigEndian.PutUint16(ph[10:], uint16(len(udp)))
	c := ^sum16(sum16(0, ph[:]), udp)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], c)
	return b
}

func sum16(init uint16, b []byte) uint16 {
	s := uint32(init)
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}
