package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// The lab drives iproute2 rather than netlink: it is test scaffolding, and
// the commands in its log are the ones a reader would type to rebuild it.

func run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// ip runs `ip args...`; with ns set, inside that namespace.
func ip(ctx context.Context, ns string, args ...string) error {
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	_, err := run(ctx, "ip", args...)
	return err
}

func (l *Lab) addNamespace(ctx context.Context, ns string) error {
	if err := l.res.addNamespace(ns); err != nil {
		return err
	}
	if err := ip(ctx, "", "netns", "add", ns); err != nil {
		return err
	}
	return ip(ctx, ns, "link", "set", "lo", "up")
}

// sysctl sets a sysctl inside ns only.
func sysctl(ctx context.Context, ns, key, value string) error {
	_, err := run(ctx, "ip", "netns", "exec", ns, "sysctl", "-qw", key+"="+value)
	return err
}

// veth creates a veth pair straight between two namespaces, so no end of it
// ever exists in the root namespace, and brings both ends up.
func veth(ctx context.Context, nsA, ifA, nsB, ifB string) error {
	if err := ip(ctx, nsA, "link", "add", ifA, "type", "veth", "peer", "name", ifB, "netns", nsB); err != nil {
		return err
	}
	if err := ip(ctx, nsA, "link", "set", ifA, "up"); err != nil {
		return err
	}
	return ip(ctx, nsB, "link", "set", ifB, "up")
}

// bridgePort plugs host's interface ifName into the bridge br0 of switch
// namespace sw.
func bridgePort(ctx context.Context, sw, port, host, ifName string) error {
	if err := veth(ctx, sw, port, host, ifName); err != nil {
		return err
	}
	return ip(ctx, sw, "link", "set", port, "master", "br0")
}

// proc is a process the lab started and owns.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// start runs bin inside ns with its output in dir/<name>.log. The process
// gets its own process group, so a Ctrl-C meant for the lab reaches it only
// through the lab's orderly teardown.
func (l *Lab) start(ns, name, dir, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, bin}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	// `ip netns exec` execs bin in place, so this PID is bin's.
	if err := l.res.addPID(cmd.Process.Pid); err != nil {
		_ = cmd.Process.Kill()
		return nil, err
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether p has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// tail returns the last lines of p's log, for error messages.
func (p *proc) tail(n int) string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
