package snat

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Proto is an IP protocol number the datapath translates.
type Proto uint8

// The protocols the datapath translates.
const (
	ProtoICMP Proto = 1
	ProtoTCP  Proto = 6
	ProtoUDP  Proto = 17
)

func (p Proto) String() string {
	switch p {
	case ProtoICMP:
		return "icmp"
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	}
	return "proto-" + strconv.Itoa(int(p))
}

// Translation is one masqueraded flow. For ICMP echo the ports are the
// echo identifier, and the remote port is zero.
type Translation struct {
	Proto  Proto
	Pod    netip.AddrPort
	NAT    netip.AddrPort
	Remote netip.AddrPort
	// Idle is the time since the last packet either way, to the second.
	Idle time.Duration
	// Closing is set once a TCP FIN or RST went through.
	Closing bool
}

// entryClosing mirrors NAT_F_CLOSING.
const entryClosing = 0x01

// flow is a forward entry with the reverse entry that belongs to it.
type flow struct {
	proto  Proto
	pod    netip.Addr
	nat    netip.AddrPort
	remote netip.Addr
	fkey   snatNatKey
	fval   snatNatEntry
	rkey   snatNatKey
	rval   snatNatEntry
	// hasRev is false when the reverse entry is missing or belongs to
	// another flow.
	hasRev bool
}

func (f *flow) seen() uint64 {
	if f.hasRev {
		return max(f.fval.Seen, f.rval.Seen)
	}
	return f.fval.Seen
}

func (f *flow) closing() bool {
	return f.fval.Flags&entryClosing != 0 || (f.hasRev && f.rval.Flags&entryClosing != 0)
}

func revKeyOf(fk snatNatKey, fv snatNatEntry) snatNatKey {
	var rk snatNatKey
	rk.Local.B = fv.Addr.B
	rk.Remote = fk.Remote
	rk.Lport = fv.Port
	rk.Rport = fk.Rport
	rk.Proto = fk.Proto
	return rk
}

// flows reads the forward map and joins each entry with its reverse one.
func (d *Datapath) flows() ([]flow, error) {
	var out []flow
	var k snatNatKey
	var v snatNatEntry
	it := d.objs.SnatFwd.Iterate()
	for it.Next(&k, &v) {
		f := flow{
			proto:  Proto(k.Proto),
			pod:    addrOf(k.Local.B),
			nat:    netip.AddrPortFrom(addrOf(v.Addr.B), ntohs(v.Port)),
			remote: addrOf(k.Remote.B),
			fkey:   k,
			fval:   v,
			rkey:   revKeyOf(k, v),
		}
		err := d.objs.SnatRev.Lookup(f.rkey, &f.rval)
		switch {
		case err == nil:
			f.hasRev = f.rval.Addr.B == k.Local.B && f.rval.Port == k.Lport
		case !errors.Is(err, ebpf.ErrKeyNotExist):
			return nil, fmt.Errorf("reading snat reverse entry: %w", err)
		}
		out = append(out, f)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading snat forward entries: %w", err)
	}
	return out, nil
}

// dropFlows deletes the flows for which drop says so, both directions.
func (d *Datapath) dropFlows(drop func(flow) bool) (int, error) {
	fs, err := d.flows()
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, f := range fs {
		if !drop(f) {
			continue
		}
		if err := d.deleteFlow(&f); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

func (d *Datapath) deleteFlow(f *flow) error {
	if err := d.objs.SnatFwd.Delete(f.fkey); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("deleting snat flow %s %s -> %s: %w", f.proto, f.pod, f.remote, err)
	}
	if f.hasRev {
		if err := d.objs.SnatRev.Delete(f.rkey); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("deleting snat reverse flow %s %s -> %s: %w", f.proto, f.nat, f.remote, err)
		}
	}
	return nil
}

// clock converts the datapath's CLOCK_MONOTONIC timestamps to wall time.
type clock struct {
	wall time.Time
	mono uint64
}

func readClock() (clock, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return clock{}, fmt.Errorf("reading the monotonic clock: %w", err)
	}
	return clock{wall: time.Now(), mono: uint64(ts.Nano())}, nil
}

func (c clock) at(mono uint64) time.Time {
	return c.wall.Add(-time.Duration(int64(c.mono - mono)))
}

// Translations lists the masqueraded flows, ordered by protocol, pod and
// remote.
func (d *Datapath) Translations() ([]Translation, error) {
	c, err := readClock()
	if err != nil {
		return nil, err
	}
	fs, err := d.flows()
	if err != nil {
		return nil, err
	}
	out := make([]Translation, 0, len(fs))
	for _, f := range fs {
		idle := max(c.wall.Sub(c.at(f.seen())), 0).Truncate(time.Second)
		out = append(out, Translation{
			Proto:   f.proto,
			Pod:     netip.AddrPortFrom(f.pod, ntohs(f.fkey.Lport)),
			NAT:     f.nat,
			Remote:  netip.AddrPortFrom(f.remote, ntohs(f.fkey.Rport)),
			Idle:    idle,
			Closing: f.closing(),
		})
	}
	slices.SortFunc(out, func(a, b Translation) int {
		return cmp.Or(
			cmp.Compare(a.Proto, b.Proto),
			a.Pod.Compare(b.Pod),
			a.Remote.Compare(b.Remote),
		)
	})
	return out, nil
}

// IdleTimeouts say how long a flow may stay idle before GC drops it. A
// zero field takes its default.
type IdleTimeouts struct {
	TCP time.Duration
	// TCPClosing applies once a FIN or RST went through.
	TCPClosing time.Duration
	UDP        time.Duration
	ICMP       time.Duration
}

// DefaultIdleTimeouts keeps TCP flows long enough for the kernel's
// default keepalive (2h11m) to refresh them, and datagram flows about
// as long as conntrack would.
var DefaultIdleTimeouts = IdleTimeouts{
	TCP:        6 * time.Hour,
	TCPClosing: 30 * time.Second,
	UDP:        2 * time.Minute,
	ICMP:       30 * time.Second,
}

func (t IdleTimeouts) withDefaults() IdleTimeouts {
	t.TCP = cmp.Or(t.TCP, DefaultIdleTimeouts.TCP)
	t.TCPClosing = cmp.Or(t.TCPClosing, DefaultIdleTimeouts.TCPClosing)
	t.UDP = cmp.Or(t.UDP, DefaultIdleTimeouts.UDP)
	t.ICMP = cmp.Or(t.ICMP, DefaultIdleTimeouts.ICMP)
	return t
}

func (t IdleTimeouts) of(p Proto, closing bool) time.Duration {
	switch {
	case p == ProtoTCP && closing:
		return t.TCPClosing
	case p == ProtoTCP:
		return t.TCP
	case p == ProtoUDP:
		return t.UDP
	}
	return t.ICMP
}

// GC drops the flows idle for longer than their timeout at time now,
// and reverse entries whose forward entry is gone (the LRU evicted it)
// once they are as idle. It returns how many entries it dropped.
func (d *Datapath) GC(now time.Time, idle IdleTimeouts) (int, error) {
	idle = idle.withDefaults()
	c, err := readClock()
	if err != nil {
		return 0, err
	}
	stale := func(seen uint64, p Proto, closing bool) bool {
		return now.Sub(c.at(seen)) > idle.of(p, closing)
	}
	n, err := d.dropFlows(func(f flow) bool { return stale(f.seen(), f.proto, f.closing()) })
	if err != nil {
		return n, err
	}

	// Orphaned reverse entries hold a port that no flow uses.
	var orphans []snatNatKey
	var k snatNatKey
	var v snatNatEntry
	it := d.objs.SnatRev.Iterate()
	for it.Next(&k, &v) {
		if !stale(v.Seen, Proto(k.Proto), v.Flags&entryClosing != 0) {
			continue
		}
		var fk snatNatKey
		fk.Local.B = v.Addr.B
		fk.Remote = k.Remote
		fk.Lport = v.Port
		fk.Rport = k.Rport
		fk.Proto = k.Proto
		var fv snatNatEntry
		err := d.objs.SnatFwd.Lookup(fk, &fv)
		if err == nil && fv.Addr.B == k.Local.B && fv.Port == k.Lport {
			continue
		}
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, fmt.Errorf("reading snat forward entry: %w", err)
		}
		orphans = append(orphans, k)
	}
	if err := it.Err(); err != nil {
		return n, fmt.Errorf("reading snat reverse entries: %w", err)
	}
	var errs []error
	for _, k := range orphans {
		if err := d.objs.SnatRev.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("deleting orphaned snat reverse entry: %w", err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// Stats are the datapath's packet counters since the maps were created.
type Stats struct {
	// Translated counts egress packets given the node's address.
	Translated uint64
	// ReverseTranslated counts replies given back the pod's address.
	ReverseTranslated uint64
	// ICMPErrors counts ICMP errors rewritten for a translated flow.
	ICMPErrors uint64
	// NewFlows counts flows given a NAT port.
	NewFlows uint64
	// SkippedRoutable counts pod packets not masqueraded because their
	// destination is routable.
	SkippedRoutable uint64
	// SkippedNonMasqSource counts pod packets not masqueraded because of
	// their source.
	SkippedNonMasqSource uint64
	// DroppedNoPort counts packets dropped for want of a free NAT port
	// (or of a port range).
	DroppedNoPort uint64
	// DroppedUnsupported counts packets to masquerade that carry no port
	// to translate: fragments, other protocols, other ICMP types.
	DroppedUnsupported uint64
	// DroppedNoDevice counts packets to masquerade on a device without a
	// masquerade address.
	DroppedNoDevice uint64
	// DroppedError counts packets a rewrite failed on.
	DroppedError uint64
}

// Indexes of snat_stats, as enum stat in snat.c.
const (
	statXlateEgress = iota
	statXlateIngress
	statICMPError
	statSkipRoutable
	statSkipNonMasqSrc
	statNewFlow
	statDropNoPort
	statDropUnsupported
	statDropNoDevice
	statDropError
	statMax
)

// Stats sums the per-CPU counters.
func (d *Datapath) Stats() (Stats, error) {
	var sums [statMax]uint64
	var perCPU []uint64
	for i := range sums {
		if err := d.objs.SnatStats.Lookup(uint32(i), &perCPU); err != nil {
			return Stats{}, fmt.Errorf("reading snat counter %d: %w", i, err)
		}
		for _, n := range perCPU {
			sums[i] += n
		}
	}
	return Stats{
		Translated:           sums[statXlateEgress],
		ReverseTranslated:    sums[statXlateIngress],
		ICMPErrors:           sums[statICMPError],
		NewFlows:             sums[statNewFlow],
		SkippedRoutable:      sums[statSkipRoutable],
		SkippedNonMasqSource: sums[statSkipNonMasqSrc],
		DroppedNoPort:        sums[statDropNoPort],
		DroppedUnsupported:   sums[statDropUnsupported],
		DroppedNoDevice:      sums[statDropNoDevice],
		DroppedError:         sums[statDropError],
	}, nil
}

// ntohs and htons convert ports between host order and the network
// order the maps keep them in.
func ntohs(p uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], p)
	return binary.BigEndian.Uint16(b[:])
}

func htons(p uint16) uint16 { return ntohs(p) }
