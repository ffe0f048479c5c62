//go:build e2e

package lab

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"routeagent.io/route-agent/routing/cni"
)

// These tests run the pod machinery against a small lab of their own: two
// node namespaces joined by a veth, routing each other's pod CIDR, with the
// conflist written the way the agent writes it (cni.Conflist, cni.Write)
// and no API server, router or agent. Everything goes through the lab's
// resources, reaper and Down.

// fakePodLabEnv makes the test binary a small lab with a pod that gets
// killed; see TestPodsReapedWhenLabDies.
const fakePodLabEnv = "ROUTE_AGENT_FAKE_POD_LAB"

func init() {
	// Not in the reaper or an echo responder this process starts: they
	// inherit the environment (and echo.go's init has already run).
	if os.Getenv(fakePodLabEnv) != "" && os.Getenv(reaperEnv) == "" {
		fakePodLab()
	}
}

// newPodLab makes the small lab with nodes nodes (at most 2). It tears
// down with the test, or earlier when the test calls down.
func newPodLab(t *testing.T, nodes int) (l *Lab, down func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root")
	}
	l, err := podLab(context.Background(), nodes)
	if l != nil {
		down = sync.OnceFunc(func() {
			if err := l.Down(); err != nil {
				t.Errorf("Down: %v", err)
			}
		})
		t.Cleanup(down)
	}
	if err != nil {
		t.Fatal(err)
	}
	return l, down
}

func podLab(ctx context.Context, nodes int) (*Lab, error) {
	id := make([]byte, 2)
	_, _ = rand.Read(id)
	l := &Lab{ID: "pt" + hex.EncodeToString(id)}
	var err error
	if l.Dir, err = os.MkdirTemp("", "route-agent-podtest-"+l.ID+"-"); err != nil {
		return nil, err
	}
	l.res = &resources{file: filepath.Join(l.Dir, "state.json")}
	if err := l.res.addDir(l.Dir); err != nil {
		os.RemoveAll(l.Dir)
		return nil, err
	}
	if l.reaper, l.reaperPipe, err = startReaper(l.res.file); err != nil {
		os.RemoveAll(l.Dir)
		return nil, err
	}
	l.Nodes = []*Node{
		{Name: "node1", IP: netip.MustParseAddr("10.4.94.11"), PodCIDR: netip.MustParsePrefix("10.5.112.0/24")},
		{Name: "node2", IP: netip.MustParseAddr("10.4.94.12"), PodCIDR: netip.MustParsePrefix("10.5.114.0/24")},
	}[:nodes]
	for _, n := range l.Nodes {
		n.NS = l.nsName(n.Name)
		if err := l.addNamespace(ctx, n.NS); err != nil {
			return l, err
		}
		if err := sysctl(ctx, n.NS, "net.ipv4.ip_forward", "1"); err != nil {
			return l, err
		}
		// What the agent does once it knows its pod CIDRs.
		n.CNIConfDir = filepath.Join(l.Dir, n.Name, "net.d")
		b, err := cni.Conflist(cni.Config{PodCIDRs: []netip.Prefix{n.PodCIDR}, IPAMDataDir: filepath.Join(l.Dir, n.Name, "ipam")})
		if err != nil {
			return l, err
		}
		if _, err := cni.Write(n.CNIConfDir, b); err != nil {
			return l, err
		}
	}
	if nodes == 2 {
		a, b := l.Nodes[0], l.Nodes[1]
		if err := veth(ctx, a.NS, "eth0", b.NS, "eth0"); err != nil {
			return l, err
		}
		for _, p := range [][2]*Node{{a, b}, {b, a}} {
			if err := ip(ctx, p[0].NS, "addr", "add", p[0].IP.String()+"/24", "dev", "eth0"); err != nil {
				return l, err
			}
			if err := ip(ctx, p[0].NS, "route", "add", p[1].PodCIDR.String(), "via", p[1].IP.String()); err != nil {
				return l, err
			}
		}
	}
	return l, nil
}

func TestPods(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	l, down := newPodLab(t, 2)
	n1, n2 := l.Nodes[0], l.Nodes[1]

	p1, err := l.AddPod(ctx, n1, "node1-pod1")
	if err != nil {
		t.Fatal(err)
	}
	p2, err := l.AddPod(ctx, n2, "node2-pod1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.AddPod(ctx, n2, "node1-pod1"); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Errorf("a second pod of the same name: %v", err)
	}
	for _, p := range []*Pod{p1, p2} {
		if !p.Node.PodCIDR.Contains(p.IP) || len(p.IPs) != 1 {
			t.Errorf("pod %s: IP %s, IPs %v; want one address in %s", p.Name, p.IP, p.IPs, p.Node.PodCIDR)
		}
		// The address is on the pod's eth0, as the ADD result says.
		out, err := l.PodExec(ctx, p, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), " "+p.IP.String()+"/") {
			t.Errorf("pod %s eth0: %s; want %s", p.Name, out, p.IP)
		}
		// The node routes to it: a host route on the pod's veth.
		route, err := run(ctx, "ip", "-n", p.Node.NS, "-4", "route", "show", p.IP.String()+"/32")
		if err != nil || !strings.Contains(route, "dev veth") {
			t.Errorf("%s's route to pod %s: %q, %v", p.Node.Name, p.IP, route, err)
		}
		// host-local kept its reservation inside the lab.
		if _, err := os.Stat(filepath.Join(l.Dir, p.Node.Name, "ipam", cni.NetworkName, p.IP.String())); err != nil {
			t.Errorf("no host-local reservation for %s in the lab: %v", p.IP, err)
		}
	}
	if len(l.Pods) != 2 {
		t.Errorf("l.Pods holds %d pods, want 2", len(l.Pods))
	}

	// Across the nodes and back, over TCP and UDP.
	for _, c := range [][2]*Pod{{p1, p2}, {p2, p1}} {
		for _, proto := range []string{"tcp", "udp"} {
			if err := Echo(ctx, c[0], c[1].IP, proto); err != nil {
				t.Error(err)
			}
		}
	}
	// The far pod saw the near pod's own address: no NAT on the way.
	if log := l.EchoLog(p2, 50); !strings.Contains(log, "tcp from "+p1.IP.String()+":") || !strings.Contains(log, "udp from "+p1.IP.String()+":") {
		t.Errorf("pod %s's echo log does not show %s as a source:\n%s", p2.Name, p1.IP, log)
	}
	// Nothing answers on the node: a refusal, reported as such, not a hang.
	start := time.Now()
	for _, proto := range []string{"tcp", "udp"} {
		err := Echo(ctx, p1, n1.IP, proto)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("echo over %s to the node: %v, want connection refused", proto, err)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("refusals took %s", d)
	}
	if err := Echo(ctx, p1, p2.IP, "sctp"); err == nil {
		t.Error("echo over sctp: no error")
	}

	// DeletePod: the responder stops, DEL removes the node's route and the
	// reservation, the namespace goes.
	pid := p2.echo.cmd.Process.Pid
	if err := l.DeletePod(ctx, p2); err != nil {
		t.Fatal(err)
	}
	if alive(pid) {
		t.Errorf("echo responder %d still runs", pid)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", p2.NS)); !os.IsNotExist(err) {
		t.Errorf("namespace %s still there: %v", p2.NS, err)
	}
	if route, _ := run(ctx, "ip", "-n", n2.NS, "-4", "route", "show", p2.IP.String()+"/32"); route != "" {
		t.Errorf("%s still routes to the deleted pod: %s", n2.Name, route)
	}
	if _, err := os.Stat(filepath.Join(l.Dir, n2.Name, "ipam", cni.NetworkName, p2.IP.String())); !os.IsNotExist(err) {
		t.Errorf("host-local reservation for %s still there: %v", p2.IP, err)
	}
	if len(l.Pods) != 1 || l.Pods[0] != p1 {
		t.Errorf("l.Pods = %v after deleting %s", l.Pods, p2.Name)
	}
	if err := l.DeletePod(ctx, p2); err == nil {
		t.Error("deleting a deleted pod: no error")
	}
	if err := Echo(ctx, p1, p2.IP, "tcp"); err == nil {
		t.Error("echo to the deleted pod still works")
	}

	// A new pod on node2 gets an address again (maybe the same).
	p3, err := l.AddPod(ctx, n2, "node2-pod2")
	if err != nil {
		t.Fatal(err)
	}
	if err := Echo(ctx, p1, p3.IP, "tcp"); err != nil {
		t.Error(err)
	}

	// Down removes all of it, pods first.
	p1pid, p3pid := p1.echo.cmd.Process.Pid, p3.echo.cmd.Process.Pid
	down()
	if left := podLeftovers(l.ID, l.Dir, p1pid, p3pid); left != "" {
		t.Errorf("teardown left behind: %s", left)
	}
}

// podLeftovers lists what of lab id still exists.
func podLeftovers(id, dir string, pids ...int) string {
	var left []string
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "ra-"+id+"-") {
			left = append(left, "namespace "+f[0])
		}
	}
	for _, pid := range pids {
		if alive(pid) {
			left = append(left, fmt.Sprintf("process %d", pid))
		}
	}
	if _, err := os.Stat(dir); err == nil {
		left = append(left, "directory "+dir)
	}
	return strings.Join(left, ", ")
}

// Without the agent's conflist, AddPod fails after its wait with an error
// naming the file, and leaves no pod behind.
func TestAddPodWithoutConflist(t *testing.T) {
	old := cniConfTimeout
	cniConfTimeout = 2 * time.Second
	t.Cleanup(func() { cniConfTimeout = old })
	l, _ := newPodLab(t, 1)
	n := l.Nodes[0]
	if err := cni.Remove(n.CNIConfDir); err != nil {
		t.Fatal(err)
	}
	_, err := l.AddPod(context.Background(), n, "nope")
	path := filepath.Join(n.CNIConfDir, cni.FileName)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "--cni-conf-dir") {
		t.Fatalf("AddPod without a conflist: %v; want an error naming %s", err, path)
	}
	t.Log(err)
	if len(l.Pods) != 0 {
		t.Errorf("l.Pods = %v", l.Pods)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", l.nsName("nope"))); !os.IsNotExist(err) {
		t.Errorf("the pod's namespace exists: %v", err)
	}
}

// A conflist the plugins reject fails AddPod with the plugin's error, after
// undoing the half-made pod.
func TestAddPodPluginError(t *testing.T) {
	l, _ := newPodLab(t, 1)
	n := l.Nodes[0]
	// A pod CIDR with room for one pod only: the second ADD fails in
	// host-local.
	b, err := cni.Conflist(cni.Config{PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.5.112.0/30")}, IPAMDataDir: filepath.Join(l.Dir, "ipam")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cni.Write(n.CNIConfDir, b); err != nil {
		t.Fatal(err)
	}
	n.PodCIDR = netip.MustParsePrefix("10.5.112.0/30")
	ctx := context.Background()
	if _, err := l.AddPod(ctx, n, "first"); err != nil {
		t.Fatal(err)
	}
	_, err = l.AddPod(ctx, n, "second")
	if err == nil || !strings.Contains(err.Error(), "CNI ADD") {
		t.Fatalf("second pod in a /30: %v; want a CNI ADD error", err)
	}
	t.Log(err)
	if len(l.Pods) != 1 {
		t.Errorf("l.Pods = %v, want only the first", l.Pods)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", l.nsName("second"))); !os.IsNotExist(err) {
		t.Errorf("the failed pod's namespace exists: %v", err)
	}
}

// fakePodLab makes a small lab with a pod, reports it on stdout and waits
// to be killed.
func fakePodLab() {
	fail := func(err error) {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	ctx := context.Background()
	l, err := podLab(ctx, 1)
	if err != nil {
		fail(err)
	}
	p, err := l.AddPod(ctx, l.Nodes[0], "pod1")
	if err != nil {
		fail(err)
	}
	fmt.Printf("ready %s %d %s\n", l.ID, p.echo.cmd.Process.Pid, l.Dir)
	select {}
}

// When the lab's process dies, its reaper removes the pods too: their
// echo responders, namespaces and host-local state.
func TestPodsReapedWhenLabDies(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fakePodLabEnv+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	f := strings.Fields(line)
	if err != nil || len(f) != 4 || f[0] != "ready" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("fake lab did not start: %q %v", line, err)
	}
	id, dir := f[1], f[3]
	pid, _ := strconv.Atoi(f[2])
	// Whatever happens below, leave nothing behind.
	t.Cleanup(func() {
		st := state{PIDs: []int{pid}, Dirs: []string{dir}}
		for _, s := range []string{"pod1", "node1"} {
			st.Namespaces = append(st.Namespaces, "ra-"+id+"-"+s)
		}
		_ = release(st)
	})
	if !alive(pid) {
		t.Fatalf("the pod's echo responder %d is not running", pid)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	err = WaitFor(context.Background(), 30*time.Second, "the reaper to clean up", func() error {
		if left := podLeftovers(id, dir, pid); left != "" {
			return errors.New(left)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A conflist that would keep host-local's state outside the lab (the
// agent started without --cni-ipam-data-dir) is refused at once: no plugin
// runs, no pod is made.
func TestAddPodRefusesStateOutsideLab(t *testing.T) {
	l, _ := newPodLab(t, 1)
	n := l.Nodes[0]
	for _, dataDir := range []string{"", "/var/lib/cni/networks", l.Dir + "-other", "relative/ipam"} {
		b, err := cni.Conflist(cni.Config{PodCIDRs: []netip.Prefix{n.PodCIDR}, IPAMDataDir: dataDir})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cni.Write(n.CNIConfDir, b); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = l.AddPod(context.Background(), n, "outside")
		if err == nil || !strings.Contains(err.Error(), "outside the lab") {
			t.Fatalf("dataDir %q: AddPod = %v, want it refused", dataDir, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("dataDir %q: refused only after %s", dataDir, d)
		}
		if len(l.Pods) != 0 {
			t.Fatalf("l.Pods = %v", l.Pods)
		}
	}
}
