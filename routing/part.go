package routing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"routeagent.io/route-agent/cluster/snapshot"
	"routeagent.io/route-agent/routing/tunnel"
)

// Part is the agent's routing part: it plans from the snapshot and the
// kernel's facts, makes the kernel match through Kernel, and keeps what it
// reached for routectl routes, status and the metrics.
type Part struct {
	k       *Kernel
	tun     *tunnel.Tunnel
	opts    PlanOptions
	sysctls *Sysctls
	log     *slog.Logger
	// mtu is the tunnel device's MTU once it exists; see MTU.
	mtu         atomic.Int64
	onMTUChange func()

	mu    sync.Mutex
	view  []RouteView
	since map[viewKey]time.Time // when a route not installed entered its state
}

// NewPart returns the routing part over k and tun (the overlay device,
// removed when not in tunnel mode). sysctls, when not nil, is kept right for
// the devices the routes use.
func NewPart(k *Kernel, tun *tunnel.Tunnel, opts PlanOptions, sysctls *Sysctls, log *slog.Logger) *Part {
	return &Part{k: k, tun: tun, opts: opts, sysctls: sysctls, log: log, since: map[viewKey]time.Time{}}
}

// OnMTUChange registers f, called when the pods' MTU changes; set it
// before the engine runs.
func (p *Part) OnMTUChange(f func()) { p.onMTUChange = f }

// MTU is the MTU pods must use: in tunnel mode the tunnel device's, with
// known false until the device exists; 0 (leave the link's) in native mode.
func (p *Part) MTU() (mtu int, known bool) {
	if p.opts.Tunnel == nil {
		return 0, true
	}
	m := p.mtu.Load()
	return int(m), m > 0
}

// Name implements engine.Part.
func (p *Part) Name() string { return "routing" }

// Options returns the routing flags in force.
func (p *Part) Options() PlanOptions { return p.opts }

// Reconcile implements engine.Part.
func (p *Part) Reconcile(ctx context.Context, s *snapshot.Snapshot) ([]string, error) {
	facts, err := p.k.Facts()
	if err != nil {
		return nil, err
	}
	d, warnings := Plan(s, facts, p.opts)
	tres, tunErr := p.tun.Set(ctx, d.Tunnel)
	if tunErr != nil {
		tunErr = fmt.Errorf("tunnel: %w", tunErr)
		if tres.Index == 0 && d.Tunnel.Device != nil {
			if l, err := p.k.h.LinkByName(d.Tunnel.Device.Protocol.DeviceName()); err == nil {
				// The device is there, only this Set failed: keep the
				// routes through it rather than blackhole them.
				tres.Index = l.Attrs().Index
			} else {
				// No device at all: the fabric's routes carry what they
				// can meanwhile.
				native := p.opts
				native.Tunnel = nil
				d, _ = Plan(s, facts, native)
			}
		}
	}
	if tres.MTU > 0 && p.mtu.Swap(int64(tres.MTU)) != int64(tres.MTU) && p.onMTUChange != nil {
		p.onMTUChange()
	}
	d.bindTunnel(tres.Index, tunErr)
	var sysErr error
	if p.sysctls != nil {
		v4, v6 := podFamilies(s)
		sysErr = p.sysctls.Ensure(v4, v6, deviceNames(d, facts))
	}
	res, err := p.k.Set(ctx, d.Kernel())
	if tres.Name != "" {
		facts.Links[tres.Index] = Link{Name: tres.Name, Up: true}
	}
	p.record(d, res, facts)
	return warnings, errors.Join(tunErr, sysErr, err)
}

// Watch implements engine.Watcher: netlink route, link, address and
// neighbour events make the part reconcile again.
func (p *Part) Watch(ctx context.Context, kick func()) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 2)
	go func() { errs <- p.k.Watch(ctx, kick) }()
	go func() { errs <- p.tun.Watch(ctx, kick) }()
	// When either stops, both restart: the engine restarts Watch.
	err := <-errs
	cancel()
	return errors.Join(err, <-errs)
}

// RouteView is one route the agent manages, as routectl routes shows it.
type RouteView struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
	Device  string
	Kind    Kind
	For     string
	// State is "installed", "refused", "pending" or "failed"; Reason says
	// why a route is not installed.
	State  string
	Reason string
	Since  time.Time
}

type viewKey struct {
	prefix netip.Prefix
	kind   Kind
	state  string
}

// Routes returns what the last reconcile reached, sorted by prefix.
func (p *Part) Routes() []RouteView {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]RouteView(nil), p.view...)
}

func (p *Part) record(d Desired, res Result, facts Facts) {
	now := time.Now()
	status := make(map[RouteKey]RouteStatus, len(res.Routes))
	for _, st := range res.Routes {
		status[st.Route.Key()] = st
	}
	view := make([]RouteView, 0, len(d.Routes))
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := make(map[viewKey]bool, len(d.Routes))
	for _, pl := range d.Routes {
		v := RouteView{Prefix: pl.Route.Dst, NextHop: pl.Route.Gw, Kind: pl.Kind, For: pl.For, Device: facts.Links[pl.Route.LinkIndex].Name}
		switch st, ok := status[pl.Route.Key()]; {
		case pl.Refused != "":
			v.State, v.Reason = "refused", pl.Refused
		case !ok:
			v.State, v.Reason = "pending", "not applied yet"
		default:
			v.State, v.Since = st.State.String(), st.Since
			v.Reason = strings.TrimPrefix(st.Reason, v.State+": ")
		}
		if v.Since.IsZero() {
			k := viewKey{v.Prefix, v.Kind, v.State}
			if _, ok := p.since[k]; !ok {
				p.since[k] = now
			}
			v.Since = p.since[k]
			seen[k] = true
		}
		view = append(view, v)
	}
	for k := range p.since {
		if !seen[k] {
			delete(p.since, k)
		}
	}
	p.view = view
}

// deviceNames are the links the planned routes leave through.
func deviceNames(d Desired, f Facts) []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range d.Kernel() {
		if l, ok := f.Links[r.LinkIndex]; ok && !seen[l.Name] {
			seen[l.Name] = true
			out = append(out, l.Name)
		}
	}
	return out
}

// podFamilies reports which families this node's pods use.
func podFamilies(s *snapshot.Snapshot) (v4, v6 bool) {
	if s.Self == nil {
		return false, false
	}
	for _, c := range s.Self.PodCIDRs {
		if c.Addr().Is4() {
			v4 = true
		} else {
			v6 = true
		}
	}
	return v4, v6
}

// Stats are the kernel reconciler's counters.
func (p *Part) Stats() Stats { return p.k.Stats() }
