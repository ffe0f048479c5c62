//go:build e2e

package lab

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeLabEnv makes the test binary act as a lab process that gets killed.
const fakeLabEnv = "ROUTE_AGENT_FAKE_LAB"

func TestMain(m *testing.M) {
	RunReaperIfAsked()
	if ns := os.Getenv(fakeLabEnv); ns != "" {
		fakeLab(ns)
	}
	os.Exit(m.Run())
}

// fakeLab records a namespace, a process in it and a directory the way Up
// does, reports them on stdout, and waits to be killed.
func fakeLab(ns string) {
	fail := func(err error) {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "route-agent-lab-reapertest-")
	if err != nil {
		fail(err)
	}
	res := &resources{file: filepath.Join(dir, "state.json")}
	if err := res.addDir(dir); err != nil {
		fail(err)
	}
	if _, _, err := startReaper(res.file); err != nil {
		fail(err)
	}
	if err := res.addNamespace(ns); err != nil {
		fail(err)
	}
	if err := ip(context.Background(), "", "netns", "add", ns); err != nil {
		fail(err)
	}
	sleep := exec.Command("ip", "netns", "exec", ns, "sleep", "600")
	sleep.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := sleep.Start(); err != nil {
		fail(err)
	}
	if err := res.addPID(sleep.Process.Pid); err != nil {
		fail(err)
	}
	fmt.Printf("ready %d %s\n", sleep.Process.Pid, dir)
	select {}
}

// When the lab's process dies without tearing down (SIGKILL here; a panic
// or a crash alike), its reaper removes the processes, namespaces and
// directories it recorded.
func TestReaperCleansUpAfterLabDies(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root")
	}
	b := make([]byte, 3)
	rand.Read(b)
	ns := "ra-reapertest-" + hex.EncodeToString(b)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fakeLabEnv+"="+ns)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready ") {
		_ = cmd.Process.Kill()
		t.Fatalf("fake lab did not start: %q %v", line, err)
	}
	f := strings.Fields(line)
	pid, _ := strconv.Atoi(f[1])
	dir := f[2]
	// Whatever happens below, leave nothing behind.
	t.Cleanup(func() { _ = release(state{Namespaces: []string{ns}, PIDs: []int{pid}, Dirs: []string{dir}}) })

	if !alive(pid) {
		t.Fatalf("the fake lab's process %d is not running", pid)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	err = WaitFor(context.Background(), 30*time.Second, "the reaper to clean up", func() error {
		if alive(pid) {
			return fmt.Errorf("process %d still runs", pid)
		}
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
			return fmt.Errorf("namespace %s still exists", ns)
		}
		if _, err := os.Stat(dir); err == nil {
			return fmt.Errorf("directory %s still exists", dir)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
