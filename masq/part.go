package masq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"routeagent.io/route-agent/cluster/snapshot"
	"routeagent.io/route-agent/masq/config"
)

// Datapath enforces a Desired state: the eBPF programs or nftables rules.
type Datapath interface {
	// Name is the implementation as routectl status shows it ("BPF",
	// "iptables").
	Name() string
	// Apply makes the datapath enforce d. Calling it again with the same d
	// is harmless and writes nothing.
	Apply(ctx context.Context, d Desired) error
	// Translations lists the NAT entries the datapath keeps; nil for an
	// implementation whose state is the kernel's conntrack.
	Translations() ([]Translation, error)
	// Collect removes idle NAT entries and returns how many.
	Collect(now time.Time) (int, error)
	// Counters are the datapath's packet counters by result
	// ("translated", "dropped_no_port", ...), for the metrics.
	Counters() (map[string]uint64, error)
}

// Translation is one masqueraded flow.
type Translation struct {
	Proto  string // "tcp", "udp", "icmp"
	Pod    netip.AddrPort
	NAT    netip.AddrPort
	Remote netip.AddrPort
	// Idle is the time since the flow's last packet.
	Idle time.Duration
}

// Part is the agent's masquerade part: it plans the routable set and the
// devices, and keeps the datapath enforcing them.
type Part struct {
	dp   Datapath
	opts Options
	// patterns are the --devices patterns ("eth0", "eth+"); empty means
	// the devices of the default routes.
	patterns []string
	log      *slog.Logger
	resync   atomic.Int64 // the config's resyncInterval, ns

	mu   sync.Mutex
	last Desired
	done bool
}

// NewPart returns the masquerade part over dp.
func NewPart(dp Datapath, opts Options, devices []string, log *slog.Logger) *Part {
	p := &Part{dp: dp, opts: opts, patterns: devices, log: log}
	p.resync.Store(int64(config.DefaultResyncInterval))
	return p
}

// Name implements engine.Part.
func (p *Part) Name() string { return "masquerade" }

// Reconcile implements engine.Part.
func (p *Part) Reconcile(ctx context.Context, s *snapshot.Snapshot) ([]string, error) {
	devices, warnings, err := FindDevices(p.patterns)
	if err != nil {
		return nil, err
	}
	d, w := PlanDesired(s, p.opts, devices)
	warnings = append(warnings, w...)
	if c := s.IPMasq.Config; c != nil && c.ResyncInterval > 0 {
		p.resync.Store(int64(c.ResyncInterval))
	}
	if err := p.dp.Apply(ctx, d); err != nil {
		return warnings, fmt.Errorf("%s datapath: %w", p.dp.Name(), err)
	}
	p.mu.Lock()
	if !p.done || !p.last.Equal(d) {
		p.log.Info("masquerade applied", "datapath", p.dp.Name(), "devices", Summary(p.dp.Name(), d.Devices, nil),
			"routable4", len(d.Set.Prefixes4()), "routable6", len(d.Set.Prefixes6()), "localPods", d.LocalPods)
	}
	p.last, p.done = d, true
	p.mu.Unlock()
	return warnings, nil
}

// Watch implements engine.Watcher: link and address changes move the
// masquerade devices and their addresses; the config's resyncInterval
// re-applies everything; idle NAT entries are collected meanwhile.
func (p *Part) Watch(parent context.Context, kick func()) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	links := make(chan netlink.LinkUpdate, 64)
	addrs := make(chan netlink.AddrUpdate, 64)
	routes := make(chan netlink.RouteUpdate, 256)
	if err := netlink.LinkSubscribeWithOptions(links, ctx.Done(), netlink.LinkSubscribeOptions{ErrorCallback: func(error) { cancel() }}); err != nil {
		return fmt.Errorf("subscribing to link changes: %w", err)
	}
	if err := netlink.AddrSubscribeWithOptions(addrs, ctx.Done(), netlink.AddrSubscribeOptions{ErrorCallback: func(error) { cancel() }}); err != nil {
		return fmt.Errorf("subscribing to address changes: %w", err)
	}
	if err := netlink.RouteSubscribeWithOptions(routes, ctx.Done(), netlink.RouteSubscribeOptions{ErrorCallback: func(error) { cancel() }}); err != nil {
		return fmt.Errorf("subscribing to route changes: %w", err)
	}
	gc := time.NewTicker(10 * time.Second)
	defer gc.Stop()
	resync := time.NewTimer(time.Duration(p.resync.Load()))
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			if parent.Err() != nil {
				return nil
			}
			// A subscription failed: the engine restarts the watch.
			return errors.New("netlink subscription failed")
		case _, ok := <-links:
			if !ok {
				return errors.New("link subscription ended")
			}
			kick()
		case _, ok := <-addrs:
			if !ok {
				return errors.New("address subscription ended")
			}
			kick()
		case u, ok := <-routes:
			if !ok {
				return errors.New("route subscription ended")
			}
			// Only default routes choose the devices.
			if u.Dst == nil || isDefault(u.Dst) {
				kick()
			}
		case <-resync.C:
			kick()
			resync.Reset(time.Duration(p.resync.Load()))
		case now := <-gc.C:
			if n, err := p.dp.Collect(now); err != nil {
				p.log.Warn("collecting idle NAT entries", "err", err)
			} else if n > 0 {
				p.log.Debug("idle NAT entries collected", "entries", n)
			}
		}
	}
}

func isDefault(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}

// Desired returns what the part last applied, and whether it has.
func (p *Part) Desired() (Desired, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last, p.done
}

// Datapath returns the part's datapath, for routectl nat list.
func (p *Part) Datapath() Datapath { return p.dp }

// Options returns the masquerade flags in force.
func (p *Part) Options() Options { return p.opts }

// FindDevices resolves the --devices patterns against the node's links: a
// name, or a prefix followed by "+" ("eth+"), as iptables and Cilium
// write them; no patterns means the devices of the main table's default
// routes. Each device comes with its first global address of each family.
func FindDevices(patterns []string) ([]Device, []string, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, nil, fmt.Errorf("listing links: %w", err)
	}
	var warnings []string
	chosen := map[int]bool{}
	if len(patterns) == 0 {
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			rs, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
			if err != nil {
				return nil, nil, fmt.Errorf("listing default routes: %w", err)
			}
			for _, r := range rs {
				if r.Dst != nil && !isDefault(r.Dst) {
					continue
				}
				if r.LinkIndex > 0 {
					chosen[r.LinkIndex] = true
				}
				for _, nh := range r.MultiPath {
					chosen[nh.LinkIndex] = true
				}
			}
		}
		if len(chosen) == 0 {
			warnings = append(warnings, "no default route: no masquerade device (set --devices)")
		}
	} else {
		for _, pat := range patterns {
			matched := false
			for _, l := range links {
				if MatchDevice(pat, l.Attrs().Name) {
					chosen[l.Attrs().Index], matched = true, true
				}
			}
			if !matched {
				warnings = append(warnings, fmt.Sprintf("--devices %q matches no link", pat))
			}
		}
	}
	var out []Device
	for _, l := range links {
		a := l.Attrs()
		if !chosen[a.Index] {
			continue
		}
		d := Device{Name: a.Name, Index: a.Index}
		as, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, nil, fmt.Errorf("listing the addresses of %s: %w", a.Name, err)
		}
		for _, ad := range as {
			ip, ok := netip.AddrFromSlice(ad.IP)
			if !ok || !ip.Unmap().IsGlobalUnicast() {
				continue
			}
			ip = ip.Unmap()
			switch {
			case ip.Is4() && !d.Addr4.IsValid():
				d.Addr4 = ip
			case ip.Is6() && !d.Addr6.IsValid() && ad.Flags&unix.IFA_F_TEMPORARY == 0:
				d.Addr6 = ip
			}
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b Device) int { return strings.Compare(a.Name, b.Name) })
	return out, warnings, nil
}

// MatchDevice reports whether the device name matches pattern: equal, or
// for "eth+" starting with "eth".
func MatchDevice(pattern, name string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "+"); ok {
		return strings.HasPrefix(name, prefix)
	}
	ok, _ := path.Match(pattern, name)
	return ok || pattern == name
}
