//go:build e2e

// Package e2e tests route-agent in the lab: a real API server, FRR routers
// and the real agent binaries. It needs root; run it with
// `go test -tags e2e ./e2e/` (the README's test command does).
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"routeagent.io/route-agent/e2e/lab"
)

// theLab is shared by the tests of this package; each test leaves it as
// it found it.
var theLab *lab.Lab

func TestMain(m *testing.M) {
	lab.RunReaperIfAsked()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e: the lab needs root")
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	root, err := filepath.Abs("..")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	apiserver, err := lab.KubeAPIServer(ctx, root, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	kubeProxy, err := lab.KubeProxy(ctx, root, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	start := time.Now()
	theLab, err = lab.Up(ctx, lab.Options{KubeAPIServer: apiserver, KubeProxy: kubeProxy, RepoRoot: root, Out: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: bringing up the lab:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "e2e: lab %s up in %s\n", theLab.ID, time.Since(start).Round(100*time.Millisecond))

	code := m.Run()

	if code != 0 {
		for _, n := range theLab.Nodes {
			fmt.Fprintf(os.Stderr, "\n--- route-agent log of %s (end) ---\n%s\n", n.Name, theLab.AgentLog(n, 40))
		}
	}
	id := theLab.ID
	if err := theLab.Down(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: teardown:", err)
		code = 1
	}
	if left := leftovers(id); left != "" {
		fmt.Fprintf(os.Stderr, "e2e: teardown left behind: %s\n", left)
		code = 1
	}
	return code
}

// leftovers lists what of lab id still exists: namespaces, processes
// running in them, directories.
func leftovers(id string) string {
	var left []string
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "ra-"+id+"-") {
			left = append(left, "namespace "+f[0])
		}
	}
	// Every lab process has a path inside the lab's directory on its
	// command line.
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, c := range cmdlines {
		b, _ := os.ReadFile(c)
		if strings.Contains(string(b), "route-agent-lab-"+id+"-") {
			left = append(left, "process "+filepath.Base(filepath.Dir(c))+" ("+strings.ReplaceAll(string(b), "\x00", " ")+")")
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "route-agent-lab-"+id+"-*"))
	for _, d := range dirs {
		left = append(left, "directory "+d)
	}
	return strings.Join(left, ", ")
}
