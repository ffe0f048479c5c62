package engine

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"routeagent.io/route-agent/cluster/snapshot"
)

// waitTimeout bounds every wait for the engine; the tests assert what
// happens, not how fast.
const waitTimeout = 10 * time.Second

// fakePart records its reconciles and returns what the test tells it to.
type fakePart struct {
	name string
	mu   sync.Mutex
	// calls holds the snapshot version and time of every reconcile.
	calls    []call
	err      error
	warnings []string
	block    chan struct{} // when set, Reconcile waits for it (or ctx)
	panicMsg string
	called   chan struct{}
}

type call struct {
	version uint64
	at      time.Time
}

func newFakePart(name string) *fakePart {
	return &fakePart{name: name, called: make(chan struct{}, 1000)}
}

func (p *fakePart) Name() string { return p.name }

func (p *fakePart) Reconcile(ctx context.Context, s *snapshot.Snapshot) ([]string, error) {
	p.mu.Lock()
	p.calls = append(p.calls, call{s.Version, time.Now()})
	block, err, warnings, panicMsg := p.block, p.err, p.warnings, p.panicMsg
	p.mu.Unlock()
	p.called <- struct{}{}
	if panicMsg != "" {
		panic(panicMsg)
	}
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return warnings, err
}

func (p *fakePart) set(f func(p *fakePart)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p)
}

func (p *fakePart) versions() []uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []uint64
	for _, c := range p.calls {
		out = append(out, c.version)
	}
	return out
}

func (p *fakePart) times() []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []time.Time
	for _, c := range p.calls {
		out = append(out, c.at)
	}
	return out
}

// waitCalls waits until the part has reconciled at least n times.
func (p *fakePart) waitCalls(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		p.mu.Lock()
		got := len(p.calls)
		p.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-p.called:
		case <-deadline:
			t.Fatalf("part %s reconciled %d times, want at least %d", p.name, got, n)
		}
	}
}

func startEngine(t *testing.T, opts Options, parts ...Part) *Engine {
	t.Helper()
	opts.Logger = slog.New(slog.DiscardHandler)
	e := New(opts)
	for _, p := range parts {
		e.Add(p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(waitTimeout):
			t.Errorf("Run did not return within %v of cancel", waitTimeout)
		}
	})
	return e
}

func synced(s *snapshot.Snapshot) { s.Cluster = snapshot.Cluster{Synced: true, NodeName: "n"} }

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func statusOf(e *Engine, name string) PartStatus {
	for _, st := range e.Status() {
		if st.Name == name {
			return st
		}
	}
	return PartStatus{}
}

func TestNoReconcileBeforeSync(t *testing.T) {
	p := newFakePart("p")
	e := startEngine(t, Options{Resync: time.Millisecond}, p)
	e.Update(func(s *snapshot.Snapshot) { s.Learned = []snapshot.LearnedRoute{{}} })
	time.Sleep(50 * time.Millisecond) // many resync periods
	if v := p.versions(); len(v) != 0 {
		t.Fatalf("reconciled versions %v before the caches synced, want none", v)
	}
	if st := statusOf(e, "p"); st.State() != "pending" {
		t.Errorf("State() = %q, want pending", st.State())
	}
	e.Update(synced)
	p.waitCalls(t, 1)
	if v := p.versions(); v[0] != 2 {
		t.Errorf("first reconcile saw version %d, want 2", v[0])
	}
}

// A part stuck in its reconcile, and one that keeps failing, hold up
// neither the others nor each other.
func TestFailingPartDoesNotBlockOthers(t *testing.T) {
	stuck, failing, healthy := newFakePart("stuck"), newFakePart("failing"), newFakePart("healthy")
	stuck.block = make(chan struct{})
	failing.err = errors.New("netlink: operation not permitted")
	e := startEngine(t, Options{MinRetry: time.Millisecond, MaxRetry: 5 * time.Millisecond}, stuck, failing, healthy)
	e.Update(synced)
	for i := range 5 {
		e.Update(func(s *snapshot.Snapshot) { s.Learned = make([]snapshot.LearnedRoute, i) })
		waitUntil(t, "healthy applies the latest snapshot", func() bool {
			return statusOf(e, "healthy").SnapshotVersion == e.Snapshot().Version
		})
	}
	// Failures are counted when a reconcile ends, calls when it starts.
	waitUntil(t, "ten recorded failures", func() bool { return statusOf(e, "failing").Failures >= 10 })
	if got := len(stuck.versions()); got != 1 {
		t.Errorf("stuck part reconciled %d times, want 1 (it is still in its first)", got)
	}
	st := statusOf(e, "failing")
	if st.State() != "failing" || st.LastError != "netlink: operation not permitted" || st.Failures < 10 || st.FailingSince.IsZero() {
		t.Errorf("failing part status = %+v", st)
	}
	if st := statusOf(e, "healthy"); st.State() != "ok" || st.Failures != 0 {
		t.Errorf("healthy part status = %+v, want ok", st)
	}
	close(stuck.block)
	waitUntil(t, "stuck part catches up", func() bool {
		return statusOf(e, "stuck").SnapshotVersion == e.Snapshot().Version
	})
}

// Retries after failures back off exponentially up to MaxRetry, and a
// success resets the backoff.
func TestBackoff(t *testing.T) {
	const minRetry, maxRetry = 20 * time.Millisecond, 160 * time.Millisecond
	p := newFakePart("p")
	p.err = errors.New("boom")
	e := startEngine(t, Options{MinRetry: minRetry, MaxRetry: maxRetry, Resync: time.Hour}, p)
	e.Update(synced)
	p.waitCalls(t, 8)
	p.set(func(p *fakePart) { p.err = nil })
	times := p.times()
	// Expected gaps 20, 40, 80, 160, 160, 160 ms (±10% jitter; timers only
	// fire late, so only the lower bounds are firm).
	want := []time.Duration{minRetry, 2 * minRetry, 4 * minRetry, maxRetry, maxRetry, maxRetry}
	for i, w := range want {
		gap := times[i+2].Sub(times[i+1])
		if gap < w*9/10 {
			t.Errorf("retry %d came after %v, want at least %v", i+1, gap, w*9/10)
		}
		if i >= 3 && gap > 4*maxRetry {
			t.Errorf("retry %d came after %v, want it capped near %v", i+1, gap, maxRetry)
		}
	}
	waitUntil(t, "success", func() bool { return statusOf(e, "p").State() == "ok" })
	// After a success the next failure retries after MinRetry again.
	p.set(func(p *fakePart) { p.err = errors.New("again") })
	n := len(p.versions())
	e.Update(func(s *snapshot.Snapshot) {})
	p.waitCalls(t, n+2)
	ts := p.times()
	if gap := ts[n+1].Sub(ts[n]); gap > 4*minRetry+50*time.Millisecond {
		t.Errorf("first retry after a success came after %v, want about %v", gap, minRetry)
	}
}

func TestStatusRecordsErrorWarningsAndRecovery(t *testing.T) {
	p := newFakePart("bgp")
	p.warnings = []string{"pod CIDR 10.0.0.0/24 reaches no peer"}
	p.err = errors.New("adding peer 10.0.0.1: refused")
	e := startEngine(t, Options{MinRetry: time.Millisecond, MaxRetry: time.Millisecond}, p)
	e.Update(synced)
	p.waitCalls(t, 3)
	st := statusOf(e, "bgp")
	if st.State() != "failing" || st.LastError != "adding peer 10.0.0.1: refused" || !st.LastSuccess.IsZero() {
		t.Errorf("status while failing = %+v", st)
	}
	if len(st.Warnings) != 1 || st.Warnings[0] != p.warnings[0] {
		t.Errorf("Warnings = %q, want %q", st.Warnings, p.warnings)
	}
	since := st.FailingSince
	p.waitCalls(t, len(p.versions())+2)
	if st := statusOf(e, "bgp"); !st.FailingSince.Equal(since) {
		t.Errorf("FailingSince moved from %v to %v while still failing", since, st.FailingSince)
	}
	p.set(func(p *fakePart) { p.err = nil })
	waitUntil(t, "recovery", func() bool { return statusOf(e, "bgp").State() == "ok" })
	st = statusOf(e, "bgp")
	if st.LastError != "" || !st.FailingSince.IsZero() || st.LastSuccess.IsZero() || st.SnapshotVersion != e.Snapshot().Version {
		t.Errorf("status after recovery = %+v", st)
	}
}

func TestPanicIsAFailureOfThatPartOnly(t *testing.T) {
	bad, good := newFakePart("bad"), newFakePart("good")
	bad.panicMsg = "index out of range"
	e := startEngine(t, Options{MinRetry: time.Millisecond, MaxRetry: time.Millisecond}, bad, good)
	e.Update(synced)
	bad.waitCalls(t, 2)
	good.waitCalls(t, 1)
	if st := statusOf(e, "bad"); !strings.Contains(st.LastError, "panic: index out of range") {
		t.Errorf("LastError = %q, want the panic", st.LastError)
	}
}

func TestKickWakesOnlyThatPart(t *testing.T) {
	a, b := newFakePart("routing"), newFakePart("cni")
	e := startEngine(t, Options{Resync: time.Hour}, a, b)
	e.Update(synced)
	a.waitCalls(t, 1)
	b.waitCalls(t, 1)
	e.Kick("cni")
	b.waitCalls(t, 2)
	time.Sleep(50 * time.Millisecond)
	if n := len(a.versions()); n != 1 {
		t.Errorf("kicking cni reconciled routing %d times, want once (the snapshot's)", n)
	}
}

func TestResync(t *testing.T) {
	p := newFakePart("p")
	e := startEngine(t, Options{Resync: 10 * time.Millisecond}, p)
	e.Update(synced)
	p.waitCalls(t, 4) // one for the update, the rest from resync alone
	for _, v := range p.versions() {
		if v != 1 {
			t.Fatalf("versions %v, want all 1", p.versions())
		}
	}
}

// watchingPart kicks itself from its own event source.
type watchingPart struct {
	*fakePart
	kick    chan func()
	watches chan struct{}
	failN   int
}

func (w *watchingPart) Watch(ctx context.Context, kick func()) error {
	w.watches <- struct{}{}
	if w.failN > 0 {
		w.failN--
		return errors.New("netlink subscription lost")
	}
	w.kick <- kick
	<-ctx.Done()
	return nil
}

func TestWatcherKicksAndIsRestarted(t *testing.T) {
	w := &watchingPart{fakePart: newFakePart("routing"), kick: make(chan func(), 1), watches: make(chan struct{}, 10), failN: 2}
	e := startEngine(t, Options{Resync: time.Hour, MinRetry: time.Millisecond, MaxRetry: time.Millisecond}, w)
	e.Update(synced)
	var kick func()
	select {
	case kick = <-w.kick:
	case <-time.After(waitTimeout):
		t.Fatal("Watch was not restarted after failing")
	}
	if n := len(w.watches); n != 3 {
		t.Errorf("Watch started %d times, want 3 (two failures, then running)", n)
	}
	w.waitCalls(t, 1)
	n := len(w.versions())
	kick()
	w.waitCalls(t, n+1)
	// A burst of kicks while the part is busy collapses.
	w.set(func(p *fakePart) { p.block = make(chan struct{}) })
	kick()
	w.waitCalls(t, n+2)
	for range 100 {
		kick()
	}
	w.fakePart.mu.Lock()
	close(w.block)
	w.block = nil
	w.fakePart.mu.Unlock()
	w.waitCalls(t, n+3)
	time.Sleep(50 * time.Millisecond)
	if got := len(w.versions()); got != n+3 {
		t.Errorf("100 kicks during one reconcile gave %d more reconciles, want 1", got-(n+2))
	}
}

func TestReady(t *testing.T) {
	p := newFakePart("routing")
	e := New(Options{Logger: slog.New(slog.DiscardHandler), ReadyGrace: time.Minute})
	e.Add(p)
	e.AddCheck(func(s *snapshot.Snapshot) string {
		if s.NodeName == "bad" {
			return "bgp-config never parsed"
		}
		return ""
	})
	reasons := func(now time.Time) []string { _, r := e.ready(now); return r }
	now := time.Now()
	if r := reasons(now); len(r) != 2 || r[0] != "waiting for the Kubernetes caches to sync" || r[1] != "routing: not applied yet" {
		t.Errorf("before sync: %q", r)
	}
	e.Update(func(s *snapshot.Snapshot) { s.Cluster = snapshot.Cluster{Synced: true, NodeName: "bad"} })
	if r := reasons(now); len(r) != 2 || r[0] != "bgp-config never parsed" {
		t.Errorf("failing check: %q", r)
	}
	e.Update(synced)
	r := e.parts[0]
	r.record(2, now, now, nil, errors.New("EPERM"), time.Second)
	if r := reasons(now); len(r) != 1 || r[0] != "routing: never applied: EPERM" {
		t.Errorf("never applied: %q", r)
	}
	r.record(2, now, now, nil, nil, time.Second)
	if ok, r := e.ready(now); !ok {
		t.Errorf("after success: not ready: %q", r)
	}
	r.record(3, now, now, nil, errors.New("EPERM"), time.Second)
	if ok, r := e.ready(now.Add(59 * time.Second)); !ok {
		t.Errorf("failing within the grace: not ready: %q", r)
	}
	if ok, r := e.ready(now.Add(61 * time.Second)); ok || len(r) != 1 || r[0] != "routing: failing for 1m1s: EPERM" {
		t.Errorf("failing past the grace: ready=%v %q", ok, r)
	}
}

func TestFuncPartPlansThenApplies(t *testing.T) {
	var applied []int
	p := Func("count", func(s *snapshot.Snapshot) (int, []string) {
		return len(s.Nodes), []string{"w"}
	}, func(_ context.Context, d int) error {
		applied = append(applied, d)
		return nil
	})
	w, err := p.Reconcile(context.Background(), &snapshot.Snapshot{Cluster: snapshot.Cluster{Nodes: make([]snapshot.Node, 3)}})
	if err != nil || len(w) != 1 || len(applied) != 1 || applied[0] != 3 || p.Name() != "count" {
		t.Errorf("Reconcile = %q, %v; applied %v", w, err, applied)
	}
}

func TestTriggerCoalesces(t *testing.T) {
	tr := NewTrigger()
	for range 1000 {
		tr.Fire()
	}
	<-tr.C()
	select {
	case <-tr.C():
		t.Fatal("1000 Fire calls gave more than one wake-up")
	default:
	}
	tr.Fire()
	select {
	case <-tr.C():
	default:
		t.Fatal("Fire after a wake-up did not wake again")
	}
}
