package version

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestFormat(t *testing.T) {
	for _, tc := range []struct{ version, commit, want string }{
		{"dev", "", "dev"},
		{"v1.2.0", "0356817c1a2b3c4d5e6f708192a3b4c5d6e7f809", "v1.2.0 (commit 0356817c1a2b)"},
		{"v1.2.0-4-g0356817-dirty", "0356817c1a2b3c4d5e6f708192a3b4c5d6e7f809-dirty", "v1.2.0-4-g0356817-dirty (commit 0356817c1a2b-dirty)"},
		{"v1.2.0", "0356817", "v1.2.0 (commit 0356817)"},
		{"v1.2.0", "0356817-dirty", "v1.2.0 (commit 0356817-dirty)"},
	} {
		if got := Format(tc.version, tc.commit); got != tc.want {
			t.Errorf("Format(%q, %q) = %q, want %q", tc.version, tc.commit, got, tc.want)
		}
	}
}

// build builds the commands (route-agent, routectl) with extra go build
// flags into a temporary directory and returns it.
func build(t *testing.T, commands []string, flags ...string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binaries")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command in PATH")
	}
	dir := t.TempDir()
	args := append([]string{"build", "-o", dir + "/"}, flags...)
	for _, c := range commands {
		args = append(args, "./cmd/"+c)
	}
	cmd := exec.Command(goBin, args...)
	cmd.Dir = ".." // the module's root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(cmd.Args[1:], " "), err, out)
	}
	return dir
}

// runBinary runs a built binary and returns its stdout, stderr and exit code.
func runBinary(t *testing.T, path string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e strings.Builder
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("running %s: %v", path, err)
	}
	return o.String(), e.String(), code
}

// The version set with -ldflags, as `make build` sets it, is what both
// binaries print; routectl version prints its own even without an agent.
func TestBinariesPrintLinkedVersion(t *testing.T) {
	const commit = "0356817c1a2b3c4d5e6f708192a3b4c5d6e7f809"
	dir := build(t, []string{"route-agent", "routectl"}, "-ldflags", "-X routeagent.io/route-agent/version.Version=v9.8.7-test -X routeagent.io/route-agent/version.Commit="+commit)
	for _, tc := range []struct {
		bin  string
		args []string
		want string
	}{
		{"route-agent", []string{"--version"}, "route-agent version v9.8.7-test (commit 0356817c1a2b)\n"},
		{"routectl", []string{"--version"}, "routectl version v9.8.7-test (commit 0356817c1a2b)\n"},
	} {
		out, errOut, code := runBinary(t, filepath.Join(dir, tc.bin), tc.args...)
		if out != tc.want || code != 0 {
			t.Errorf("%s %s = %q (exit %d, stderr %q), want %q and exit 0", tc.bin, strings.Join(tc.args, " "), out, code, errOut, tc.want)
		}
	}

	socket := filepath.Join(t.TempDir(), "none.sock")
	out, errOut, code := runBinary(t, filepath.Join(dir, "routectl"), "--socket", socket, "version")
	if want := "Client Version: v9.8.7-test (commit 0356817c1a2b)\n"; out != want {
		t.Errorf("routectl version without an agent printed %q, want %q", out, want)
	}
	if code != 1 || !strings.Contains(errOut, "route-agent is not running") || !strings.Contains(errOut, socket) {
		t.Errorf("routectl version without an agent: exit %d, stderr %q; want exit 1 and an error naming the socket", code, errOut)
	}
}

// Built from a git checkout without -ldflags, a binary names the revision
// Go recorded (routectl alone: the version package is the same in both).
func TestBinariesPrintBuildRevision(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries")
	}
	git := exec.Command("git", "rev-parse", "HEAD")
	git.Dir = ".."
	head, err := git.Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	rev := strings.TrimSpace(string(head))
	// -buildvcs=true on the command line wins over a GOFLAGS that turns
	// stamping off.
	dir := build(t, []string{"routectl"}, "-buildvcs=true")
	out, errOut, code := runBinary(t, filepath.Join(dir, "routectl"), "--version")
	want := "routectl version dev (commit " + rev[:12]
	if code != 0 || !strings.HasPrefix(out, want) {
		t.Errorf("routectl --version = %q (exit %d, stderr %q), want it to start with %q", out, code, errOut, want)
	}
}
