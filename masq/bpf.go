package masq

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"routeagent.io/route-agent/bpf/snat"
)

// BPF is the eBPF datapath (package bpf/snat) as the part's Datapath. It
// masquerades IPv4; IPv6 pod traffic is left alone (the planner warns).
type BPF struct {
	dp   *snat.Datapath
	idle snat.IdleTimeouts
}

// NewBPF wraps a loaded eBPF datapath.
func NewBPF(dp *snat.Datapath, idle snat.IdleTimeouts) *BPF { return &BPF{dp: dp, idle: idle} }

// Name implements Datapath.
func (b *BPF) Name() string { return "BPF" }

// Apply implements Datapath. The maps are written first, then the
// programs attached: a program never runs on a device before its address
// is known. Devices no longer wanted are detached before they are
// forgotten, for the same reason.
func (b *BPF) Apply(_ context.Context, d Desired) error {
	v4 := func(ps []netip.Prefix) []netip.Prefix {
		out := make([]netip.Prefix, 0, len(ps))
		for _, p := range ps {
			if p.Addr().Is4() {
				out = append(out, p)
			}
		}
		return out
	}
	var errs []error
	routable := d.Set.Prefixes4()
	localPods := v4(d.LocalPods)
	if !d.IPv4 {
		// Nothing of IPv4 is masqueraded: no local pod matches.
		localPods = nil
	}
	errs = append(errs, b.dp.SetRoutable(routable), b.dp.SetNonMasqSources(v4(d.Set.NonMasqSources)), b.dp.SetLocalPods(localPods))
	if d.PortMin != 0 || d.PortMax != 0 {
		errs = append(errs, b.dp.SetPortRange(d.PortMin, d.PortMax))
	}
	want := map[int]bool{}
	for _, dev := range d.Devices {
		if !dev.Addr4.IsValid() {
			continue
		}
		want[dev.Index] = true
		if err := b.dp.SetDevice(dev.Index, dev.Addr4); err != nil {
			errs = append(errs, fmt.Errorf("device %s: %w", dev.Name, err))
			continue
		}
		if !slices.Contains(b.dp.Attached(), dev.Index) {
			if err := b.dp.Attach(dev.Index); err != nil {
				errs = append(errs, fmt.Errorf("attaching to %s: %w", dev.Name, err))
			}
		}
	}
	for _, index := range b.dp.Attached() {
		if want[index] {
			continue
		}
		if err := b.dp.Detach(index); err != nil {
			errs = append(errs, fmt.Errorf("detaching from ifindex %d: %w", index, err))
			continue
		}
		errs = append(errs, b.dp.RemoveDevice(index))
	}
	return errors.Join(errs...)
}

// Translations implements Datapath.
func (b *BPF) Translations() ([]Translation, error) {
	ts, err := b.dp.Translations()
	if err != nil {
		return nil, err
	}
	out := make([]Translation, 0, len(ts))
	for _, t := range ts {
		out = append(out, Translation{Proto: t.Proto.String(), Pod: t.Pod, NAT: t.NAT, Remote: t.Remote, Idle: t.Idle})
	}
	return out, nil
}

// Collect implements Datapath.
func (b *BPF) Collect(now time.Time) (int, error) { return b.dp.GC(now, b.idle) }

// Counters implements Datapath.
func (b *BPF) Counters() (map[string]uint64, error) {
	st, err := b.dp.Stats()
	if err != nil {
		return nil, err
	}
	return map[string]uint64{
		"translated": st.Translated, "reverse_translated": st.ReverseTranslated, "icmp_error_translated": st.ICMPErrors,
		"new_flow": st.NewFlows, "skipped_routable": st.SkippedRoutable, "skipped_nonmasq_source": st.SkippedNonMasqSource,
		"dropped_no_port": st.DroppedNoPort, "dropped_unsupported": st.DroppedUnsupported,
		"dropped_no_device": st.DroppedNoDevice, "dropped_error": st.DroppedError,
	}, nil
}
