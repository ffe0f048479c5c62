// Package engine runs the agent's parts. Each part (BGP, kernel routes,
// masquerade, ...) is a pure plan from the snapshot plus a reconciler that
// makes the world match it. The engine owns the current snapshot, wakes every
// part when it changes, on the part's own events and on a periodic resync,
// retries a failed part with backoff, and keeps each part's status for
// routectl, the metrics and the readiness probe. Parts run on their own
// goroutines: a failing or slow part never holds up another.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"routeagent.io/route-agent/cluster/snapshot"
)

// Part is one reconciled concern of the agent.
type Part interface {
	// Name identifies the part in logs, routectl status and metrics.
	Name() string
	// Reconcile plans from s and makes the world match the plan. It must
	// be harmless to call again with the same snapshot. Warnings are
	// problems that did not stop it; an error makes the engine retry.
	Reconcile(ctx context.Context, s *snapshot.Snapshot) (warnings []string, err error)
}

// Watcher is implemented by parts that have events of their own, such as
// netlink notifications or GoBGP's best-path changes. Watch runs for the
// engine's lifetime and calls kick whenever the part should reconcile
// again; kick never blocks and bursts of kicks collapse into one pass. A
// Watch that returns an error is restarted with backoff.
type Watcher interface {
	Watch(ctx context.Context, kick func()) error
}

// Func makes a Part from a pure plan and the apply function of the part's
// reconciler, the shape every part follows.
func Func[D any](name string, plan func(*snapshot.Snapshot) (D, []string), apply func(context.Context, D) error) Part {
	return funcPart[D]{name: name, plan: plan, apply: apply}
}

type funcPart[D any] struct {
	name  string
	plan  func(*snapshot.Snapshot) (D, []string)
	apply func(context.Context, D) error
}

func (p funcPart[D]) Name() string { return p.name }

func (p funcPart[D]) Reconcile(ctx context.Context, s *snapshot.Snapshot) ([]string, error) {
	d, warnings := p.plan(s)
	return warnings, p.apply(ctx, d)
}

// Options tune the engine; zero values take the defaults.
type Options struct {
	Logger *slog.Logger
	// Resync is how often every part reconciles without a change, which
	// also repairs drift no event reported. Default 5m.
	Resync time.Duration
	// MinRetry and MaxRetry bound the backoff after a failed reconcile.
	// Defaults 1s and 30s.
	MinRetry, MaxRetry time.Duration
	// ReadyGrace is how long a part may keep failing before the agent
	// reports not ready: one failed apply that the next retry fixes should
	// not take a node out of service. Default 60s.
	ReadyGrace time.Duration
}

// Check is a readiness condition on the snapshot; it returns why the agent
// is not ready, or "".
type Check func(*snapshot.Snapshot) string

// Engine runs parts. Add parts and checks before Run.
type Engine struct {
	opts   Options
	log    *slog.Logger
	parts  []*runner
	checks []Check

	mu   sync.Mutex
	snap *snapshot.Snapshot
}

// New returns an engine with an empty, unsynced snapshot.
func New(opts Options) *Engine {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Resync <= 0 {
		opts.Resync = 5 * time.Minute
	}
	if opts.MinRetry <= 0 {
		opts.MinRetry = time.Second
	}
	if opts.MaxRetry < opts.MinRetry {
		opts.MaxRetry = max(30*time.Second, opts.MinRetry)
	}
	if opts.ReadyGrace <= 0 {
		opts.ReadyGrace = time.Minute
	}
	return &Engine{opts: opts, log: opts.Logger, snap: &snapshot.Snapshot{}}
}

// Add registers a part.
func (e *Engine) Add(p Part) {
	e.parts = append(e.parts, &runner{
		e: e, part: p, log: e.log.With("part", p.Name()),
		wake: NewTrigger(), status: PartStatus{Name: p.Name()},
	})
}

// AddCheck registers a readiness condition beyond the parts' own health.
func (e *Engine) AddCheck(c Check) { e.checks = append(e.checks, c) }

// Update publishes a new snapshot: f gets a copy of the current one and
// replaces the sections its source owns (never mutating what they point to,
// which earlier snapshots share). Every part is woken.
func (e *Engine) Update(f func(*snapshot.Snapshot)) {
	e.mu.Lock()
	next := *e.snap
	f(&next)
	next.Version = e.snap.Version + 1
	e.snap = &next
	e.mu.Unlock()
	for _, r := range e.parts {
		r.wake.Fire()
	}
}

// Kick wakes the named part, as its own events would: for a part whose
// input another part produces (the pods' MTU, from the tunnel device).
func (e *Engine) Kick(name string) {
	for _, r := range e.parts {
		if r.part.Name() == name {
			r.wake.Fire()
		}
	}
}

// Snapshot returns the current snapshot; callers must not modify it.
func (e *Engine) Snapshot() *snapshot.Snapshot {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.snap
}

// Run runs every part until ctx ends and returns once all have stopped.
func (e *Engine) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, r := range e.parts {
		wg.Go(func() { r.loop(ctx) })
		if w, ok := r.part.(Watcher); ok {
			wg.Go(func() { r.watch(ctx, w) })
		}
	}
	wg.Wait()
}

// Status returns every part's status in the order they were added.
func (e *Engine) Status() []PartStatus {
	out := make([]PartStatus, 0, len(e.parts))
	for _, r := range e.parts {
		r.mu.Lock()
		st := r.status
		st.Warnings = slices.Clone(st.Warnings)
		r.mu.Unlock()
		out = append(out, st)
	}
	return out
}

// Ready reports whether the agent is doing its job: the caches have synced,
// every check passes, and every part has applied successfully at least once
// and is not failing for longer than ReadyGrace. The reasons say what is
// missing.
func (e *Engine) Ready() (bool, []string) {
	return e.ready(time.Now())
}

func (e *Engine) ready(now time.Time) (bool, []string) {
	var reasons []string
	s := e.Snapshot()
	if !s.Synced {
		reasons = append(reasons, "waiting for the Kubernetes caches to sync")
	} else {
		for _, c := range e.checks {
			if r := c(s); r != "" {
				reasons = append(reasons, r)
			}
		}
	}
	for _, st := range e.Status() {
		switch {
		case st.LastSuccess.IsZero() && st.LastError == "":
			reasons = append(reasons, st.Name+": not applied yet")
		case st.LastSuccess.IsZero():
			reasons = append(reasons, fmt.Sprintf("%s: never applied: %s", st.Name, st.LastError))
		case st.LastError != "" && now.Sub(st.FailingSince) >= e.opts.ReadyGrace:
			reasons = append(reasons, fmt.Sprintf("%s: failing for %s: %s", st.Name, now.Sub(st.FailingSince).Round(time.Second), st.LastError))
		}
	}
	return len(reasons) == 0, reasons
}

// PartStatus is what routectl status, the metrics and readiness know of a
// part.
type PartStatus struct {
	Name string
	// Runs and Failures count reconciles since the agent started.
	Runs, Failures uint64
	// LastRun is when the last reconcile ended, LastSuccess when the last
	// successful one did; zero if none yet.
	LastRun, LastSuccess time.Time
	LastDuration         time.Duration
	// LastError is the error of the last reconcile, "" if it succeeded.
	LastError string
	// FailingSince is when the current run of failures began.
	FailingSince time.Time
	// NextRetry is when a failed part tries again.
	NextRetry time.Time
	Warnings  []string
	// SnapshotVersion is the snapshot the last successful reconcile
	// applied.
	SnapshotVersion uint64
}

// State summarises the status as "pending" (never reconciled), "ok" or
// "failing".
func (s PartStatus) State() string {
	switch {
	case s.LastError != "":
		return "failing"
	case s.LastSuccess.IsZero():
		return "pending"
	}
	return "ok"
}

// runner is the engine's loop for one part.
type runner struct {
	e    *Engine
	part Part
	log  *slog.Logger
	wake Trigger

	mu     sync.Mutex
	status PartStatus
}

func (r *runner) loop(ctx context.Context) {
	backoff := r.e.newBackoff()
	timer := time.NewTimer(r.e.opts.Resync)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake.C():
		case <-timer.C:
		}
		s := r.e.Snapshot()
		if !s.Synced {
			// Acting on an unsynced view would remove everything for
			// nodes not seen yet.
			resetTimer(timer, r.e.opts.Resync)
			continue
		}
		start := time.Now()
		warnings, err := r.reconcile(ctx, s)
		if ctx.Err() != nil {
			return // the error, if any, is the shutdown's
		}
		next := r.e.opts.Resync
		if err != nil {
			next = backoff.Step()
		} else {
			backoff = r.e.newBackoff()
		}
		r.record(s.Version, start, time.Now(), warnings, err, next)
		resetTimer(timer, next)
	}
}

// reconcile runs the part, turning a panic into an error so that one
// part's bug does not take the node's other parts down with it.
func (r *runner) reconcile(ctx context.Context, s *snapshot.Snapshot) (warnings []string, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return r.part.Reconcile(ctx, s)
}

func (r *runner) record(version uint64, start, end time.Time, warnings []string, err error, next time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := &r.status
	st.Runs++
	st.LastRun, st.LastDuration = end, end.Sub(start)
	if !slices.Equal(warnings, st.Warnings) {
		// Every snapshot is planned again; say a warning once, not per pass.
		for _, w := range warnings {
			r.log.Warn("plan warning", "warning", w)
		}
	}
	st.Warnings = warnings
	if err != nil {
		st.Failures++
		if st.LastError == "" {
			st.FailingSince = end
		}
		if msg := err.Error(); msg != st.LastError {
			r.log.Error("reconcile failed; retrying with backoff", "err", err, "retryIn", next.Round(time.Millisecond))
			st.LastError = msg
		}
		st.NextRetry = end.Add(next)
		return
	}
	if st.LastError != "" {
		r.log.Info("reconcile succeeded again", "failedFor", end.Sub(st.FailingSince).Round(time.Millisecond))
	}
	st.LastError, st.FailingSince, st.NextRetry = "", time.Time{}, time.Time{}
	st.LastSuccess, st.SnapshotVersion = end, version
}

// watch runs the part's own event source, restarting it with backoff when it
// fails.
func (r *runner) watch(ctx context.Context, w Watcher) {
	backoff := r.e.newBackoff()
	for {
		err := w.Watch(ctx, r.wake.Fire)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("returned before the agent stopped")
		}
		d := backoff.Step()
		r.log.Error("event watch failed; restarting", "err", err, "retryIn", d.Round(time.Millisecond))
		// Events may have been lost meanwhile.
		r.wake.Fire()
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

func (e *Engine) newBackoff() *wait.Backoff {
	return &wait.Backoff{Duration: e.opts.MinRetry, Factor: 2, Jitter: 0.1, Steps: math.MaxInt32, Cap: e.opts.MaxRetry}
}

func resetTimer(t *time.Timer, d time.Duration) {
	t.Stop()
	t.Reset(d)
}
