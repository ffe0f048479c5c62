package snat

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// DefaultBPFFS is where the kernel's bpf file system is usually mounted.
const DefaultBPFFS = "/sys/fs/bpf"

// EnsureBPFFS mounts a bpf file system on dir unless one is mounted
// there already, creating dir if needed. Pins outlive the agent only on
// a bpf file system; a node that booted without one mounted gets it here.
func EnsureBPFFS(dir string) error {
	if ok, err := onBPFFS(dir); err == nil && ok {
		return nil
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating bpf file system mount point %s: %w", dir, err)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mounting a bpf file system on %s: %w", dir, err)
	}
	if ok, err := onBPFFS(dir); err != nil || !ok {
		return fmt.Errorf("mounted a bpf file system on %s but do not see it there (%v)", dir, err)
	}
	return nil
}

func onBPFFS(dir string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, os.ErrNotExist
		}
		return false, fmt.Errorf("checking the file system of %s: %w", dir, err)
	}
	return st.Type == unix.BPF_FS_MAGIC, nil
}

// preparePinDir creates dir, which must be on a bpf file system: pins
// elsewhere fail, and a tmpfs that looks like it worked would not.
func preparePinDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating pin directory %s: %w", dir, err)
	}
	ok, err := onBPFFS(dir)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("pin directory %s is not on a bpf file system (see EnsureBPFFS)", dir)
	}
	return nil
}
