package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// userHZ is the unit of the times in /proc/<pid>/stat: fixed at 100 by the
// kernel's ABI, whatever its internal tick rate.
const userHZ = 100

// Memory is a process's resident memory, from /proc/<pid>/status, in
// bytes.
type Memory struct {
	// RSS is VmRSS, what is resident now; HWM is VmHWM, the most that
	// ever was.
	RSS, HWM uint64
	// Anon and File split RSS: the process's own memory, and the pages
	// of mapped files (for a Go program, mostly its own binary).
	Anon, File uint64
}

// ProcMemory reads pid's resident memory.
func ProcMemory(pid int) (Memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, fmt.Errorf("reading the memory of pid %d: %w", pid, err)
	}
	var m Memory
	fields := map[string]*uint64{"VmRSS": &m.RSS, "VmHWM": &m.HWM, "RssAnon": &m.Anon, "RssFile": &m.File}
	var found int
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		dst := fields[k]
		if !ok || dst == nil {
			continue
		}
		f := strings.Fields(v) // "12345 kB"
		if len(f) != 2 || f[1] != "kB" {
			return Memory{}, fmt.Errorf("pid %d: unexpected %s line %q", pid, k, sc.Text())
		}
		kb, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("pid %d: %s %q: %w", pid, k, f[0], err)
		}
		*dst = kb << 10
		found++
	}
	if found != len(fields) {
		return Memory{}, fmt.Errorf("pid %d: /proc/%d/status lacks one of VmRSS, VmHWM, RssAnon, RssFile", pid, pid)
	}
	return m, nil
}

// procStat returns the fields of /proc/<pid>/stat after the command name
// (field 3 onwards), which may itself hold spaces and parentheses.
func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, fmt.Errorf("reading the stat of pid %d: %w", pid, err)
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("pid %d: malformed stat %q", pid, b)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return nil, fmt.Errorf("pid %d: short stat %q", pid, b)
	}
	return f, nil
}

// ProcStart returns when pid was started (forked), to the kernel's 10 ms
// resolution, on the wall clock.
func ProcStart(pid int) (time.Time, error) {
	f, err := procStat(pid)
	if err != nil {
		return time.Time{}, err
	}
	// starttime is field 22: ticks since boot.
	ticks, err := strconv.ParseUint(f[22-3], 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("pid %d: starttime %q: %w", pid, f[22-3], err)
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return time.Time{}, fmt.Errorf("reading the boot clock: %w", err)
	}
	now := time.Now()
	sinceBoot := time.Duration(ts.Nano())
	started := time.Duration(ticks) * time.Second / userHZ
	return now.Add(started - sinceBoot), nil
}

// ProcCPU returns the CPU time pid has used so far, user and system.
func ProcCPU(pid int) (time.Duration, error) {
	f, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	var total uint64
	for _, i := range []int{14, 15} { // utime, stime
		v, err := strconv.ParseUint(f[i-3], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("pid %d: stat field %d %q: %w", pid, i, f[i-3], err)
		}
		total += v
	}
	return time.Duration(total) * time.Second / userHZ, nil
}
