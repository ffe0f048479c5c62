// Command bench measures route-agent against its peers in the same run and
// prints one table (docs/benchmarks.md): BGP-learned routes into the kernel
// against BIRD 2 (P2), a restart with 100,000 routes (P7), the reconciler's
// install rate against serial netlink (P8), a new Node's direct routes
// (P3), tunnel mode (T1, T2), the masquerade (M1-M4), and LoadBalancer
// Services: 10,000 addresses announced and withdrawn against FRR (P1), the
// agent's memory with 1,000 Nodes and 5,000 Services (P6), a cold start
// with 10,000 Services against FRR (P9) and the address allocator (A). It brings up the lab (a real API server, FRR ToRs, nodes running the
// real route-agent), adds the benchmark's own namespaces next to it, and
// tears everything down on success, failure and Ctrl-C. Progress goes to
// stderr, the table to stdout.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"routeagent.io/route-agent/e2e/bench"
	"routeagent.io/route-agent/e2e/lab"
)

// row is one line of the table.
type row struct {
	id, what           string
	agent, peer, ratio string
	goal, met          string
}

var (
	rounds   = flag.Int("rounds", 5, "rounds of P1, P2 (per speaker), P3 and T1; the table shows medians")
	only     = flag.String("only", "", "comma-separated figures to run (P1,P2,P3,P6,P7,P8,P9,A,T1,M1); empty runs all")
	pprofDir = flag.String("pprof", "", "directory to write CPU profiles of the bench node's agent into (P1's agent rounds); empty takes none")
	p7Wait   = flag.Duration("p7-timeout", 4*time.Minute, "how long P7 waits for the first 100,000 routes in the kernels, and for each restart's resync")
)

func main() {
	lab.RunReaperIfAsked()
	flag.Parse()
	if *pprofDir != "" {
		speakerArgs = append(speakerArgs, "--pprof-listen="+pprofAddr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	rows, err := run(ctx)
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "bench: interrupted; torn down")
		os.Exit(130)
	}
	logf("done in %s", time.Since(start).Round(time.Second))
	printTable(os.Stdout, rows)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench %s: "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

// run brings the lab up, runs every figure and tears down. A figure that
// fails gets a row saying so; the others still run.
func run(ctx context.Context) (rows []row, err error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	apiserver, err := lab.KubeAPIServer(ctx, root, os.Stderr)
	if err != nil {
		return nil, err
	}
	l, err := lab.Up(ctx, lab.Options{KubeAPIServer: apiserver, RepoRoot: root, Out: os.Stderr})
	if err != nil {
		return nil, err
	}
	defer func() {
		logf("tearing down lab %s", l.ID)
		if derr := l.Down(); derr != nil {
			err = errors.Join(err, fmt.Errorf("teardown: %w", derr))
		}
	}()
	e, err := setup(ctx, l)
	if err != nil {
		return nil, fmt.Errorf("setting up the benchmark network: %w", err)
	}
	var errs []error
	// The LoadBalancer figures share a setup (lbEnsure) that stops the
	// lab's rack agents; it is undone once they are done.
	closeLB := func() {
		if err := lbClose(ctx, e); err != nil {
			logf("LB cleanup failed: %v", err)
			errs = append(errs, fmt.Errorf("LoadBalancer figures' cleanup: %w", err))
		}
	}
	defer closeLB()
	for _, fig := range []struct {
		ids []string
		f   func(context.Context, *env) ([]row, error)
	}{
		{[]string{"P3"}, p3},
		{[]string{"T1", "T2"}, tunnelFig},
		{[]string{"M1", "M2", "M3", "M4"}, masqFig},
		{[]string{"P8"}, p8},
		{[]string{"A"}, allocFig},
		{[]string{"P6"}, p6},
		{[]string{"P9"}, p9},
		{[]string{"P1", "P1w", "P1d"}, p1},
		{[]string{"P2", "P2b"}, p2},
		{[]string{"P7", "P7b", "P7c"}, p7},
	} {
		if ctx.Err() != nil {
			return rows, ctx.Err()
		}
		if *only != "" && !slices.Contains(strings.Split(*only, ","), fig.ids[0]) {
			continue
		}
		if e.lb != nil && !slices.Contains([]string{"P6", "P9", "P1"}, fig.ids[0]) {
			closeLB()
		}
		r, ferr := fig.f(ctx, e)
		if ferr != nil {
			logf("%s failed: %v", strings.Join(fig.ids, "/"), ferr)
			errs = append(errs, fmt.Errorf("%s: %w", strings.Join(fig.ids, "/"), ferr))
			have := map[string]bool{}
			for _, x := range r {
				have[x.id] = true
			}
			for _, id := range fig.ids {
				if !have[id] {
					r = append(r, row{id: id, what: "failed: " + short(ferr), agent: "—", peer: "—", ratio: "—", goal: "—", met: "no"})
				}
			}
		}
		rows = append(rows, r...)
	}
	// Here, not only deferred: a failed cleanup must reach the result.
	if e.lb != nil {
		closeLB()
	}
	order := []string{"P1", "P1w", "P1d", "P2", "P2b", "P3", "P6", "P7", "P7b", "P7c", "P8", "P9", "A", "T1", "T2", "M1", "M2", "M3", "M4"}
	slices.SortStableFunc(rows, func(a, b row) int { return slices.Index(order, a.id) - slices.Index(order, b.id) })
	return rows, errors.Join(errs...)
}

func printTable(w io.Writer, rows []row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "Figure\tMeasured\troute-agent\tpeer\tratio\tgoal\tmet")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.id, r.what, r.agent, r.peer, r.ratio, r.goal, r.met)
	}
	tw.Flush()
}

// short is the first line of err, cut to fit a table cell.
func short(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	if r := []rune(s); len(r) > 110 {
		s = string(r[:107]) + "..."
	}
	return s
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func list(ds []time.Duration) string {
	var b []string
	for _, d := range ds {
		b = append(b, ms(d))
	}
	return strings.Join(b, ", ")
}

// repoRoot finds the repository from the working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "e2e", "tools", "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run the benchmark from inside the route-agent repository")
		}
		dir = parent
	}
}

// waitRoutes waits for n matching routes in w, logging progress now and
// then, and returns when they were all there.
func waitRoutes(ctx context.Context, w *bench.RouteWatch, n int, timeout time.Duration, what string) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		slice := min(15*time.Second, time.Until(deadline))
		t, err := w.Wait(ctx, n, slice)
		if err == nil {
			return t, nil
		}
		if !errors.Is(err, bench.ErrTimeout) {
			return t, fmt.Errorf("%s: %w", what, err)
		}
		if time.Until(deadline) <= 0 {
			return t, fmt.Errorf("%s: %d of %d routes in the kernel after %s", what, w.Present(), n, timeout.Round(time.Second))
		}
		logf("  %s: %d of %d routes so far", what, w.Present(), n)
	}
}
