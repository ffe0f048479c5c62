// Package lab builds the route-agent lab on one machine: a real
// kube-apiserver with etcd on a management network, FRR top-of-rack
// routers, and nodes running the real route-agent, each in its own network
// namespace. Nothing is added to the root namespace, every name carries the
// run's id, and Down (or the reaper, if this process dies first) removes
// everything Up made.
package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// Options locate what the lab runs.
type Options struct {
	// BinDir holds the route-agent and routectl binaries under test; when
	// empty, Up builds them from RepoRoot into the lab's directory, so they
	// go away with it.
	BinDir string
	// KubeAPIServer is the kube-apiserver binary (see KubeAPIServer()).
	KubeAPIServer string
	// KubeProxy is the kube-proxy binary (see KubeProxy()) each node runs;
	// empty runs none, and LoadBalancer traffic goes nowhere.
	KubeProxy string
	// RepoRoot is the repository, for deploy/.
	RepoRoot string
	// Out receives progress lines; nil discards them.
	Out io.Writer
}

// Lab is a running lab.
type Lab struct {
	ID  string
	Dir string

	Routers []*Router
	Nodes   []*Node
	// Pods are the pods AddPod made and DeletePod has not removed; Down
	// deletes them (CNI DEL) before the nodes go.
	Pods []*Pod
	// Outside is the host beyond the ToRs (OutsidePrefix), with an echo
	// responder whose log shows the source each connection came from. It
	// is not a pod: it has no Node.
	Outside *Pod
	bpffs   string
	podsMu  sync.Mutex
	// Kube is a cluster-admin client, for the lab and its tests.
	Kube kubernetes.Interface

	opts       Options
	res        *resources
	reaper     *exec.Cmd
	reaperPipe io.WriteCloser
	restConfig *rest.Config
	dynamic    dynamic.Interface
	caPEM      []byte
}

func (l *Lab) logf(format string, args ...any) {
	if l.opts.Out != nil {
		fmt.Fprintf(l.opts.Out, "lab %s: "+format+"\n", append([]any{l.ID}, args...)...)
	}
}

func (l *Lab) nsName(s string) string { return "ra-" + l.ID + "-" + s }

// Up builds the whole lab and returns when every agent's session is
// established. On error it tears down what it made.
func Up(ctx context.Context, opts Options) (l *Lab, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the lab needs root (network namespaces, FRR)")
	}
	id := make([]byte, 2)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	l = &Lab{ID: hex.EncodeToString(id), opts: opts}
	if l.Dir, err = os.MkdirTemp("", "route-agent-lab-"+l.ID+"-"); err != nil {
		return nil, err
	}
	// The directory holds FRR's sockets, which the frr user must reach.
	if err := os.Chmod(l.Dir, 0o755); err != nil {
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
	defer func() {
		if err != nil {
			if derr := l.Down(); derr != nil {
				err = errors.Join(err, fmt.Errorf("tearing down after the failure: %w", derr))
			}
			l = nil
		}
	}()
	l.Routers, l.Nodes = seedTopology()
	l.logf("directory %s", l.Dir)
	if l.opts.BinDir == "" {
		l.opts.BinDir = filepath.Join(l.Dir, "bin")
		l.logf("building route-agent and routectl")
		if err := BuildAgent(ctx, opts.RepoRoot, l.opts.BinDir); err != nil {
			return l, err
		}
	}
	if err := l.buildNetwork(ctx); err != nil {
		return l, fmt.Errorf("building the network: %w", err)
	}
	// The nodes' eBPF state is pinned on a bpf file system of the lab's
	// own, as a node's is on its /sys/fs/bpf.
	l.bpffs = filepath.Join(l.Dir, "bpffs")
	if err := os.MkdirAll(l.bpffs, 0o700); err != nil {
		return l, err
	}
	if err := unix.Mount("bpf", l.bpffs, "bpf", 0, "mode=0700"); err != nil {
		return l, fmt.Errorf("mounting a bpf file system on %s: %w", l.bpffs, err)
	}
	if err := l.res.addMount(l.bpffs); err != nil {
		return l, err
	}
	l.logf("starting etcd and kube-apiserver on %s", apiAddr)
	if err := l.startAPIServer(ctx, l.nsName("mgmt")); err != nil {
		return l, err
	}
	if err := l.setupCluster(ctx); err != nil {
		return l, err
	}
	for i, r := range l.Routers {
		l.logf("starting FRR on %s (AS %d, %s)", r.Name, r.ASN, r.Addr)
		if err := l.startFRR(ctx, r, l.Routers[1-i]); err != nil {
			return l, err
		}
	}
	for _, n := range l.Nodes {
		l.logf("starting route-agent on %s (%s, pod CIDR %s)", n.Name, n.IP, n.PodCIDR)
		if err := l.StartAgent(ctx, n); err != nil {
			return l, err
		}
	}
	for _, n := range l.Nodes {
		if err := l.WaitEstablished(ctx, n, n.Router, 2*time.Minute); err != nil {
			return l, err
		}
		l.logf("%s: session to %s established", n.Name, n.Router.Name)
	}
	if err := l.WaitConverged(ctx, time.Minute); err != nil {
		return l, err
	}
	l.logf("both ToRs hold every node's pod CIDR")
	if l.opts.KubeProxy != "" {
		if err := l.setupKubeProxy(ctx); err != nil {
			return l, err
		}
		for _, n := range l.Nodes {
			l.logf("starting kube-proxy (%s mode) on %s", KubeProxyMode, n.Name)
			if err := l.startKubeProxy(ctx, n); err != nil {
				return l, err
			}
		}
	}
	if err := l.startEcho(ctx, l.Outside); err != nil {
		return l, err
	}
	// One pod per node, from the conflist each agent wrote.
	for _, n := range l.Nodes {
		if _, err := l.AddPod(ctx, n, n.Name+"-pod1"); err != nil {
			return l, err
		}
	}
	return l, nil
}

// buildNetwork makes the namespaces and links: one switch namespace with a
// bridge per rack and for management, the ToRs, the ToR-to-ToR link, and
// the nodes.
func (l *Lab) buildNetwork(ctx context.Context) error {
	mgmt := l.nsName("mgmt")
	l.logf("creating namespaces %s*", l.nsName(""))
	if err := l.addNamespace(ctx, mgmt); err != nil {
		return err
	}
	if err := ip(ctx, mgmt, "link", "add", "br0", "type", "bridge"); err != nil {
		return err
	}
	if err := ip(ctx, mgmt, "addr", "add", fmt.Sprintf("%s/%d", apiAddr, mgmtPrefix.Bits()), "dev", "br0"); err != nil {
		return err
	}
	if err := ip(ctx, mgmt, "link", "set", "br0", "up"); err != nil {
		return err
	}
	for _, r := range l.Routers {
		r.NS = l.nsName(r.Name)
		sw := l.nsName("sw-" + r.Name)
		for _, ns := range []string{sw, r.NS} {
			if err := l.addNamespace(ctx, ns); err != nil {
				return err
			}
		}
		if err := ip(ctx, sw, "link", "add", "br0", "type", "bridge"); err != nil {
			return err
		}
		if err := ip(ctx, sw, "link", "set", "br0", "up"); err != nil {
			return err
		}
		if err := bridgePort(ctx, sw, "p-"+r.Name, r.NS, "eth0"); err != nil {
			return err
		}
		if err := ip(ctx, r.NS, "addr", "add", fmt.Sprintf("%s/%d", r.Addr, r.Segment.Bits()), "dev", "eth0"); err != nil {
			return err
		}
		if err := sysctl(ctx, r.NS, "net.ipv4.ip_forward", "1"); err != nil {
			return err
		}
	}
	a, b := l.Routers[0], l.Routers[1]
	if err := veth(ctx, a.NS, "link0", b.NS, "link0"); err != nil {
		return err
	}
	for _, r := range l.Routers {
		if err := ip(ctx, r.NS, "addr", "add", r.LinkAddr.String(), "dev", "link0"); err != nil {
			return err
		}
	}
	if err := l.buildOutside(ctx); err != nil {
		return err
	}
	for _, n := range l.Nodes {
		n.NS = l.nsName(n.Name)
		if err := l.addNamespace(ctx, n.NS); err != nil {
			return err
		}
		if err := bridgePort(ctx, l.nsName("sw-"+n.Router.Name), "p-"+n.Name, n.NS, "eth0"); err != nil {
			return err
		}
		if err := ip(ctx, n.NS, "addr", "add", fmt.Sprintf("%s/%d", n.IP, n.Router.Segment.Bits()), "dev", "eth0"); err != nil {
			return err
		}
		if err := ip(ctx, n.NS, "route", "add", "default", "via", n.Router.Addr.String()); err != nil {
			return err
		}
		if err := bridgePort(ctx, mgmt, "m-"+n.Name, n.NS, "mgmt0"); err != nil {
			return err
		}
		if err := ip(ctx, n.NS, "addr", "add", fmt.Sprintf("%s/%d", n.MgmtIP, mgmtPrefix.Bits()), "dev", "mgmt0"); err != nil {
			return err
		}
		if err := sysctl(ctx, n.NS, "net.ipv4.ip_forward", "1"); err != nil {
			return err
		}
	}
	return nil
}

// buildOutside connects the outside host to tor94 (see OutsidePrefix).
// rack 83's ToR routes to it through tor94 statically, not by BGP.
func (l *Lab) buildOutside(ctx context.Context) error {
	tor94, tor83 := l.Routers[0], l.Routers[1]
	ns := l.nsName("outside")
	if err := l.addNamespace(ctx, ns); err != nil {
		return err
	}
	if err := veth(ctx, tor94.NS, "ext0", ns, "eth0"); err != nil {
		return err
	}
	bits := strconv.Itoa(OutsidePrefix.Bits())
	for _, c := range [][]string{
		{tor94.NS, "addr", "add", outsideGW.String() + "/" + bits, "dev", "ext0"},
		{ns, "addr", "add", OutsideIP.String() + "/" + bits, "dev", "eth0"},
		{ns, "route", "add", nodesPrefix.String(), "via", outsideGW.String()},
		// LoadBalancer addresses are what the outside reaches the cluster by.
		{ns, "route", "add", LBPool, "via", outsideGW.String()},
		{tor83.NS, "route", "add", OutsidePrefix.String(), "via", tor94.LinkAddr.Addr().String()},
	} {
		if err := ip(ctx, c[0], c[1:]...); err != nil {
			return err
		}
	}
	l.Outside = &Pod{Name: "outside", NS: ns, IP: OutsideIP, IPs: []netip.Addr{OutsideIP}}
	return nil
}

// setupCluster applies deploy/ as a user would: the ServiceAccount and RBAC
// for real, the DaemonSet and the example bgp-config as server-side dry
// runs; then the lab's bgp-config and the Node objects.
func (l *Lab) setupCluster(ctx context.Context) error {
	deploy := filepath.Join(l.opts.RepoRoot, "deploy")
	// One discovery of the API server's resources serves every manifest.
	dc, err := discovery.NewDiscoveryClientForConfig(l.restConfig)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	for _, f := range []struct {
		name   string
		dryRun bool
	}{{"rbac.yaml", false}, {"daemonset.yaml", true}, {"bgp-config.yaml", true}} {
		b, err := os.ReadFile(filepath.Join(deploy, f.name))
		if err != nil {
			return err
		}
		verb := "applying"
		if f.dryRun {
			verb = "dry-run applying"
		}
		l.logf("%s deploy/%s", verb, f.name)
		if err := l.applyManifests(ctx, mapper, b, f.dryRun); err != nil {
			return fmt.Errorf("deploy/%s: %w", f.name, err)
		}
	}
	l.logf("applying the lab's ip-masq-agent config")
	if _, err := l.ApplyIPMasqConfig(ctx, IPMasqConfig); err != nil {
		return err
	}
	l.logf("applying the lab's bgp-config")
	if _, err := l.ApplyBGPConfig(ctx, BGPConfig); err != nil {
		return err
	}
	for _, n := range l.Nodes {
		if err := l.createNode(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// StartAgent starts route-agent in n's namespace, authenticated as the
// route-agent ServiceAccount.
func (l *Lab) StartAgent(ctx context.Context, n *Node) error {
	dir := filepath.Join(l.Dir, n.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := l.tokenKubeconfig(ctx, agentServiceAccount, kubeconfig); err != nil {
		return err
	}
	n.Socket = filepath.Join(dir, "agent.sock")
	// The node's CNI config directory, and host-local's state kept in the
	// node's directory: a real node has its own /var/lib/cni, the lab's
	// nodes share this machine's.
	n.CNIConfDir = filepath.Join(dir, "net.d")
	if err := os.MkdirAll(n.CNIConfDir, 0o755); err != nil {
		return err
	}
	ipamDir := filepath.Join(dir, "ipam")
	// Its own UTS namespace gives the agent the node's hostname, which
	// GoBGP announces and FRR prints next to the peer. unshare and sh exec
	// in place, so the PID stays the agent's.
	args := append([]string{"--uts", "sh", "-c", `hostname "$0" && exec "$@"`, n.Name,
		filepath.Join(l.opts.BinDir, "route-agent"),
		"--node-name", n.Name, "--kubeconfig", kubeconfig, "--api-socket", n.Socket, "--state-dir", dir, "--cni-conf-dir", n.CNIConfDir, "--cni-ipam-data-dir", ipamDir, "--log-level", "info",
		"--bpf-pin-dir", filepath.Join(l.bpffs, n.Name)},
		n.AgentArgs...)
	p, err := l.start(n.NS, "route-agent", dir, "unshare", args...)
	if err != nil {
		return err
	}
	n.agent = p
	return WaitFor(ctx, time.Minute, n.Name+" agent socket", func() error {
		if p.exited() {
			return Permanent(fmt.Errorf("route-agent on %s exited:\n%s", n.Name, p.tail(30)))
		}
		_, err := l.Routectl(ctx, n, "status")
		return err
	})
}

// AgentLog returns the end of n's agent log.
func (l *Lab) AgentLog(n *Node, lines int) string {
	if n.agent == nil {
		return ""
	}
	return n.agent.tail(lines)
}

// AgentRunning reports whether n's agent process is still alive.
func (l *Lab) AgentRunning(n *Node) bool { return n.agent != nil && !n.agent.exited() }

// Routectl runs routectl against n's agent.
func (l *Lab) Routectl(ctx context.Context, n *Node, args ...string) ([]byte, error) {
	args = append([]string{"--socket", n.Socket}, args...)
	out, err := exec.CommandContext(ctx, filepath.Join(l.opts.BinDir, "routectl"), args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("routectl %v on %s: %w: %s", args, n.Name, err, out)
	}
	return out, nil
}

// SetNodeLabel sets (or with value "" removes) one label of a Node.
func (l *Lab) SetNodeLabel(ctx context.Context, n *Node, key, value string) error {
	node, err := l.Kube.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if value == "" {
		delete(node.Labels, key)
	} else {
		node.Labels[key] = value
	}
	_, err = l.Kube.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{})
	return err
}

// Down stops every process and removes every namespace and file of the
// lab, then releases the reaper.
func (l *Lab) Down() error {
	// Pods first: CNI DEL runs in their nodes' namespaces.
	perr := l.deletePods()
	st := l.res.snapshot()
	err := errors.Join(perr, release(st))
	if l.reaperPipe != nil {
		l.reaperPipe.Close()
		_ = l.reaper.Wait()
	}
	return err
}

// StopAgent sends SIGTERM to n's agent, as the kubelet does, and waits for
// it to exit. It fails when the agent does not exit within grace or exits
// with an error.
func (l *Lab) StopAgent(n *Node, grace time.Duration) error {
	p := n.agent
	if p == nil {
		return fmt.Errorf("no agent started on %s", n.Name)
	}
	pid := p.cmd.Process.Pid
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("signalling the agent on %s: %w", n.Name, err)
	}
	select {
	case <-p.done:
	case <-time.After(grace):
		return fmt.Errorf("the agent on %s did not exit within %s of SIGTERM", n.Name, grace)
	}
	l.res.removePID(pid)
	if !p.cmd.ProcessState.Success() {
		return fmt.Errorf("the agent on %s exited with %s:\n%s", n.Name, p.cmd.ProcessState, p.tail(20))
	}
	return nil
}

// Metrics fetches n's agent's /metrics from inside n's namespace, as a
// Prometheus on the node network would.
func (l *Lab) Metrics(ctx context.Context, n *Node) (string, error) {
	b, err := l.AgentGet(ctx, n, "http://"+net.JoinHostPort(n.IP.String(), "9955")+"/metrics", 10*time.Second)
	return string(b), err
}
