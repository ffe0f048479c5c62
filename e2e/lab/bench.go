package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Helpers for the benchmarks (e2e/cmd/bench): extra segments, hosts, nodes,
// FRR and BIRD instances next to the lab's own, all in namespaces and
// directories the lab records, so that Down and the reaper remove them like
// the rest.

// NSName returns the lab's name for namespace s: ra-<run id>-s.
func (l *Lab) NSName(s string) string { return l.nsName(s) }

// MgmtNS is the management namespace holding the API server's bridge.
func (l *Lab) MgmtNS() string { return l.nsName("mgmt") }

// Segment is an extra L2 segment: a switch namespace with bridge br0.
type Segment struct {
	Name   string
	NS     string
	Prefix netip.Prefix
}

// AddSegment makes switch namespace sw-<name> with a bridge.
func (l *Lab) AddSegment(ctx context.Context, name string, prefix netip.Prefix) (*Segment, error) {
	s := &Segment{Name: name, NS: l.nsName("sw-" + name), Prefix: prefix}
	if err := l.addNamespace(ctx, s.NS); err != nil {
		return nil, err
	}
	if err := ip(ctx, s.NS, "link", "add", "br0", "type", "bridge"); err != nil {
		return nil, err
	}
	return s, ip(ctx, s.NS, "link", "set", "br0", "up")
}

// AddNamespace makes an empty namespace ra-<run id>-<name> (lo up) and
// returns its name.
func (l *Lab) AddNamespace(ctx context.Context, name string) (string, error) {
	ns := l.nsName(name)
	return ns, l.addNamespace(ctx, ns)
}

// AddHost makes namespace ra-<run id>-<name> with eth0 on seg at addr and
// returns the namespace's name.
func (l *Lab) AddHost(ctx context.Context, seg *Segment, name string, addr netip.Addr) (string, error) {
	ns := l.nsName(name)
	if err := l.addNamespace(ctx, ns); err != nil {
		return "", err
	}
	if err := bridgePort(ctx, seg.NS, "p-"+name, ns, "eth0"); err != nil {
		return "", err
	}
	return ns, ip(ctx, ns, "addr", "add", fmt.Sprintf("%s/%d", addr, seg.Prefix.Bits()), "dev", "eth0")
}

// AddNode adds node n on segment seg: its namespace with eth0 on seg at
// n.IP and mgmt0 on the management network at n.MgmtIP, its Node object
// (labels, pod CIDR, InternalIP), and its route-agent. n.Router may be nil.
func (l *Lab) AddNode(ctx context.Context, n *Node, seg *Segment) error {
	ns, err := l.AddHost(ctx, seg, n.Name, n.IP)
	if err != nil {
		return err
	}
	n.NS = ns
	if err := bridgePort(ctx, l.MgmtNS(), "m-"+n.Name, n.NS, "mgmt0"); err != nil {
		return err
	}
	if err := ip(ctx, n.NS, "addr", "add", fmt.Sprintf("%s/%d", n.MgmtIP, mgmtPrefix.Bits()), "dev", "mgmt0"); err != nil {
		return err
	}
	if err := sysctl(ctx, n.NS, "net.ipv4.ip_forward", "1"); err != nil {
		return err
	}
	if err := l.createNode(ctx, n); err != nil {
		return err
	}
	l.Nodes = append(l.Nodes, n)
	return l.StartAgent(ctx, n)
}

func (l *Lab) kill(p *proc) error {
	pid := p.cmd.Process.Pid
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing %s (pid %d): %w", p.name, pid, err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) survived SIGKILL", p.name, pid)
	}
	l.res.removePID(pid)
	return nil
}

// StartFRRWith runs zebra and bgpd for r in r.NS (which must exist) with
// bgpd's configuration given and bgpdArgs added to bgpd's command line;
// r.VTYDir is set to its directory under the lab's.
func (l *Lab) StartFRRWith(ctx context.Context, r *Router, bgpdConf string, bgpdArgs ...string) error {
	_, err := l.StartFRRDaemons(ctx, r, bgpdConf, bgpdArgs...)
	return err
}

// FRR is a zebra and bgpd pair started by StartFRRDaemons, whose bgpd can
// be stopped and started again while zebra keeps running.
type FRR struct {
	Router *Router
	dir    string
	args   []string
	zebra  *proc
	bgpd   *proc
}

// StartFRRDaemons is StartFRRWith, returning the daemons.
func (l *Lab) StartFRRDaemons(ctx context.Context, r *Router, bgpdConf string, bgpdArgs ...string) (*FRR, error) {
	dir := filepath.Join(l.Dir, r.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	r.VTYDir = dir
	if err := os.WriteFile(filepath.Join(dir, "zebra.conf"), []byte("hostname "+r.Name+"\n"), 0o644); err != nil {
		return nil, err
	}
	f := &FRR{Router: r, dir: dir, args: bgpdArgs}
	if err := f.writeConf(ctx, bgpdConf); err != nil {
		return nil, err
	}
	var err error
	if f.zebra, err = l.start(r.NS, "zebra", dir, "/usr/lib/frr/zebra", f.common("zebra")...); err != nil {
		return nil, err
	}
	if err := WaitFor(ctx, 30*time.Second, r.Name+" zebra", func() error {
		if f.zebra.exited() {
			return Permanent(fmt.Errorf("zebra exited:\n%s", f.zebra.tail(20)))
		}
		_, err := os.Stat(filepath.Join(dir, "zserv.api"))
		return err
	}); err != nil {
		return nil, err
	}
	return f, l.startBGPD(ctx, f)
}

func (f *FRR) common(daemon string) []string {
	return []string{
		"-f", filepath.Join(f.dir, daemon+".conf"), "-i", filepath.Join(f.dir, daemon+".pid"),
		"-z", filepath.Join(f.dir, "zserv.api"), "--vty_socket", f.dir, "-u", "frr", "-g", "frr",
		"--log", "file:" + filepath.Join(f.dir, daemon+".frrlog"),
	}
}

func (f *FRR) writeConf(ctx context.Context, bgpdConf string) error {
	if err := os.WriteFile(filepath.Join(f.dir, "bgpd.conf"), []byte(bgpdConf), 0o644); err != nil {
		return err
	}
	_, err := run(ctx, "chown", "-R", "frr:frr", f.dir)
	return err
}

func (l *Lab) startBGPD(ctx context.Context, f *FRR) error {
	bgpd, err := l.start(f.Router.NS, "bgpd", f.dir, "/usr/lib/frr/bgpd", append(f.common("bgpd"), f.args...)...)
	if err != nil {
		return err
	}
	f.bgpd = bgpd
	return WaitFor(ctx, time.Minute, f.Router.Name+" bgpd", func() error {
		if bgpd.exited() {
			return Permanent(fmt.Errorf("bgpd exited:\n%s", bgpd.tail(20)))
		}
		_, err := f.Router.VTY(ctx, "show bgp summary json")
		return err
	})
}

// StopBGPD stops f's bgpd with SIGTERM, as an operator restarting it
// would (it closes its sessions with a Cease), and waits for it to exit.
func (l *Lab) StopBGPD(f *FRR) error {
	if f.bgpd == nil || f.bgpd.exited() {
		return fmt.Errorf("bgpd on %s is not running", f.Router.Name)
	}
	pid := f.bgpd.cmd.Process.Pid
	if err := f.bgpd.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("stopping bgpd on %s (pid %d): %w", f.Router.Name, pid, err)
	}
	select {
	case <-f.bgpd.done:
	case <-time.After(30 * time.Second):
		return fmt.Errorf("bgpd on %s (pid %d) did not exit within 30s of SIGTERM", f.Router.Name, pid)
	}
	l.res.removePID(pid)
	return nil
}

// StartBGPD starts f's bgpd again with bgpdConf and returns its PID once
// its vty answers.
func (l *Lab) StartBGPD(ctx context.Context, f *FRR, bgpdConf string) (int, error) {
	if f.bgpd != nil && !f.bgpd.exited() {
		return 0, fmt.Errorf("bgpd on %s is still running", f.Router.Name)
	}
	if err := f.writeConf(ctx, bgpdConf); err != nil {
		return 0, err
	}
	if err := l.startBGPD(ctx, f); err != nil {
		return 0, err
	}
	return f.bgpd.cmd.Process.Pid, nil
}

// AgentPID returns the PID of n's agent: `ip netns exec`, unshare and sh
// exec in place, so it is route-agent's own.
func (l *Lab) AgentPID(n *Node) (int, error) {
	if n.agent == nil || n.agent.exited() {
		return 0, fmt.Errorf("no agent running on %s", n.Name)
	}
	return n.agent.cmd.Process.Pid, nil
}

// BulkClient returns a cluster-admin client without client-side rate
// limiting, for creating many objects at once; the API server's own
// limits still apply.
func (l *Lab) BulkClient() (kubernetes.Interface, error) {
	cfg := rest.CopyConfig(l.restConfig)
	cfg.QPS, cfg.Burst = -1, 0
	return kubernetes.NewForConfig(cfg)
}

// Bird is a BIRD 2 instance in a namespace, with its own configuration,
// control socket and pid file in the lab's directory; never the system
// service.
type Bird struct {
	Name   string
	NS     string
	Dir    string
	Socket string
	Conf   string
	p      *proc
}

// StartBird writes conf and runs BIRD in the foreground in ns. With
// recover it runs with -R (graceful restart recovery after start), as
// calico-node runs it.
func (l *Lab) StartBird(ctx context.Context, name, ns, conf string, recover bool) (*Bird, error) {
	dir := filepath.Join(l.Dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	b := &Bird{Name: name, NS: ns, Dir: dir, Socket: filepath.Join(dir, "bird.ctl"), Conf: filepath.Join(dir, "bird.conf")}
	if err := os.WriteFile(b.Conf, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	return b, l.RestartBird(ctx, b, recover)
}

// RestartBird starts b again (after KillBird), with the same configuration.
func (l *Lab) RestartBird(ctx context.Context, b *Bird, recover bool) error {
	args := []string{"-f", "-c", b.Conf, "-s", b.Socket, "-P", filepath.Join(b.Dir, "bird.pid")}
	if recover {
		args = append(args, "-R")
	}
	p, err := l.start(b.NS, "bird", b.Dir, "/usr/sbin/bird", args...)
	if err != nil {
		return err
	}
	b.p = p
	return WaitFor(ctx, 30*time.Second, b.Name+" bird", func() error {
		if p.exited() {
			return Permanent(fmt.Errorf("bird exited:\n%s", p.tail(20)))
		}
		_, err := b.Ctl(ctx, "show status")
		return err
	})
}

// ReconfigureBird replaces b's configuration and makes it take effect
// (birdc configure), as an operator would.
func (l *Lab) ReconfigureBird(ctx context.Context, b *Bird, conf string) error {
	if err := os.WriteFile(b.Conf, []byte(conf), 0o644); err != nil {
		return err
	}
	out, err := b.Ctl(ctx, "configure")
	if err != nil {
		return err
	}
	// Removing a protocol shuts it down first: BIRD then answers
	// "Reconfiguration in progress" and logs "Reconfigured" when done.
	if !strings.Contains(out, "Reconfigured") && !strings.Contains(out, "Reconfiguration in progress") {
		return fmt.Errorf("birdc configure on %s: %s", b.Name, out)
	}
	return WaitFor(ctx, 30*time.Second, b.Name+" to finish reconfiguring", func() error {
		out, err := b.Ctl(ctx, "show status")
		if err != nil {
			return err
		}
		if strings.Contains(out, "Reconfiguration in progress") {
			return errors.New(out)
		}
		return nil
	})
}

// KillBird kills b with SIGKILL and waits for it to be gone; its kernel
// routes stay.
func (l *Lab) KillBird(b *Bird) error {
	if b.p == nil {
		return fmt.Errorf("%s is not running", b.Name)
	}
	return l.kill(b.p)
}

// Running reports whether b's process is alive.
func (b *Bird) Running() bool { return b.p != nil && !b.p.exited() }

// Log returns the end of b's output.
func (b *Bird) Log(lines int) string {
	if b.p == nil {
		return ""
	}
	return b.p.tail(lines)
}

// Ctl runs one birdc command against b.
func (b *Bird) Ctl(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "birdc", append([]string{"-s", b.Socket}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("birdc %s on %s: %w: %s", strings.Join(args, " "), b.Name, err, out)
	}
	return string(out), nil
}
