package lab

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
)

// reaperEnv names the lab state file when the lab's own executable is
// re-run as its reaper.
const reaperEnv = "ROUTE_AGENT_LAB_REAPER_STATE"

// RunReaperIfAsked turns this process into a lab reaper when it was started
// as one, and never returns in that case. Call it first thing in main and in
// TestMain.
//
// The reaper is what makes teardown happen when the lab's process cannot do
// it itself (a panic in a test, SIGKILL, a crash): it waits for its stdin,
// a pipe from the lab process, to close, and then releases whatever the
// state file still lists. After an orderly teardown the file lists nothing.
func RunReaperIfAsked() {
	file := os.Getenv(reaperEnv)
	if file == "" {
		return
	}
	// Ctrl-C in the terminal reaches the whole foreground group; the reaper
	// must outlive it to clean up.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	_, _ = io.Copy(io.Discard, os.Stdin)
	b, err := os.ReadFile(file)
	if err != nil {
		os.Exit(0) // the lab removed its state: nothing left to do
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		fmt.Fprintf(os.Stderr, "lab reaper: reading %s: %v\n", file, err)
		os.Exit(1)
	}
	if err := release(st); err != nil {
		fmt.Fprintf(os.Stderr, "lab reaper: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// startReaper starts the reaper for the state file and returns the pipe
// whose closing (explicitly, or by the death of this process) sets it off.
func startReaper(stateFile string) (*exec.Cmd, io.WriteCloser, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, fmt.Errorf("finding own executable for the reaper: %w", err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), reaperEnv+"="+stateFile)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	w, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("starting lab reaper: %w", err)
	}
	return cmd, w, nil
}
