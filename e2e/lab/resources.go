package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// resources records everything the lab creates, in a file next to the lab,
// so that teardown (and the reaper, if the lab's process dies) removes
// exactly what this run made and nothing else.
type resources struct {
	mu   sync.Mutex
	file string
	st   state
}

type state struct {
	Namespaces []string `json:"namespaces"`
	PIDs       []int    `json:"pids"`
	Dirs       []string `json:"dirs"`
	// Mounts are file systems the lab mounted (the nodes' bpffs).
	Mounts []string `json:"mounts"`
}

func (r *resources) save() error {
	b, err := json.Marshal(r.st)
	if err != nil {
		return err
	}
	tmp := r.file + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("writing lab state: %w", err)
	}
	return os.Rename(tmp, r.file)
}

func (r *resources) addNamespace(ns string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.st.Namespaces = append(r.st.Namespaces, ns)
	return r.save()
}

func (r *resources) addPID(pid int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.st.PIDs = append(r.st.PIDs, pid)
	return r.save()
}

func (r *resources) removePID(pid int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.st.PIDs = slices.DeleteFunc(r.st.PIDs, func(p int) bool { return p == pid })
	_ = r.save()
}

func (r *resources) addDir(dir string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.st.Dirs = append(r.st.Dirs, dir)
	return r.save()
}

func (r *resources) addMount(dir string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.st.Mounts = append(r.st.Mounts, dir)
	return r.save()
}

// snapshot returns a copy of what is recorded now.
func (r *resources) snapshot() state {
	r.mu.Lock()
	defer r.mu.Unlock()
	return state{
		Namespaces: slices.Clone(r.st.Namespaces),
		PIDs:       slices.Clone(r.st.PIDs),
		Dirs:       slices.Clone(r.st.Dirs),
		Mounts:     slices.Clone(r.st.Mounts),
	}
}

// release removes everything recorded, newest first: processes, then
// namespaces (a namespace is only gone once nothing runs in it), then
// directories. It keeps going after a failure and reports all of them.
func release(st state) error {
	var errs []error
	for _, pid := range slices.Backward(st.PIDs) {
		if err := stopPID(pid, 5*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	for _, m := range slices.Backward(st.Mounts) {
		// Detached: an agent being reaped may still hold a pin open.
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", m, err))
		}
	}
	for _, ns := range slices.Backward(st.Namespaces) {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if out, err := exec.Command("ip", "netns", "delete", ns).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("deleting namespace %s: %v: %s", ns, err, out))
		}
	}
	for _, d := range slices.Backward(st.Dirs) {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// stopPID sends SIGTERM, waits up to grace, then SIGKILLs. The lab's
// processes are its own children or were, so a recycled PID is unlikely
// within a run; this is what "stop by PID, never by name" costs.
func stopPID(pid int, grace time.Duration) error {
	if err := syscall.Kill(pid, syscall.SIGTERM); errors.Is(err, syscall.ESRCH) {
		return nil
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !alive(pid) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("killing pid %d: %w", pid, err)
	}
	for range 100 {
		if !alive(pid) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("pid %d survived SIGKILL", pid)
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses.
	i := slices.Index(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}
