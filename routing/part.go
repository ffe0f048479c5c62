package routing

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"routeagent.io/route-agent/cluster/snapshot"
)

// Part is the agent's routing part: it plans from the snapshot and the
// kernel's facts, makes the kernel match through Kernel, and keeps what it
// reached for routectl routes, status and the metrics.
type Part struct {
	k       *Kernel
	opts    PlanOptions
	sysctls *Sysctls
	log     *slog.Logger

	mu    sync.Mutex
	view  []RouteView
	since map[viewKey]time.Time // when a route not installed entered its state
}

// NewPart returns the routing part over k. sysctls, when not nil, is kept
// right for the devices the routes use.
func NewPart(k *Kernel, opts PlanOptions, sysctls *Sysctls, log *slog.Logger) *Part {
	return &Part{k: k, opts: opts, sysctls: sysctls, log: log, since: map[viewKey]time.Time{}}
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
	var sysErr error
	if p.sysctls != nil {
		v4, v6 := podFamilies(s)
		sysErr = p.sysctls.Ensure(v4, v6, deviceNames(d, facts))
	}
	res, err := p.k.Set(ctx, d.Kernel())
	p.record(d, res, facts)
	if sysErr != nil {
		return warnings, fmt.Errorf("%w; %w", sysErr, err)
	}
	return warnings, err
}

// Watch implements engine.Watcher: netlink route, link and address events
// make the part reconcile again.
func (p *Part) Watch(ctx context.Context, kick func()) error { return p.k.Watch(ctx, kick) }

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
