package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"routeagent.io/route-agent/routing/cni"
)

// Pods are made as a container runtime makes them: a network namespace,
// then the CNI plugins of the conflist the node's agent wrote, run through
// libcni with the pod's namespace as CNI_NETNS, and DEL when the pod goes.

const (
	// CNIPluginDir holds the reference plugins (Debian's
	// containernetworking-plugins).
	CNIPluginDir = "/usr/lib/cni"
	// cniTimeout bounds one ADD or DEL of the whole plugin chain.
	cniTimeout = time.Minute
	// podIfName is the pod's interface, as Kubernetes names it.
	podIfName = "eth0"
)

// cniConfTimeout bounds the wait for an agent to write its conflist; it
// does so as soon as it knows its Node's spec.podCIDRs. A variable so that
// a test need not wait this long for the failure.
var cniConfTimeout = time.Minute

// Pod is a pod in the lab: a network namespace attached to its node by the
// CNI plugins, running an echo responder on EchoPort (TCP and UDP).
type Pod struct {
	Name string
	// NS is the pod's network namespace.
	NS   string
	Node *Node
	// IP is the pod's address in its node's pod CIDR; IPs lists every
	// address the CNI ADD result gave, one per family of the node.
	IP  netip.Addr
	IPs []netip.Addr

	echo    *proc
	cni     *libcni.CNIConfig
	netConf *libcni.NetworkConfigList
	rt      *libcni.RuntimeConf
}

// AddPod makes pod name on node n: it waits for the conflist n's agent
// writes into n.CNIConfDir, creates the pod's namespace, runs the plugins'
// ADD inside n's namespace and starts the pod's echo responder. On error
// nothing of the pod is left.
func (l *Lab) AddPod(ctx context.Context, n *Node, name string) (p *Pod, err error) {
	l.podsMu.Lock()
	defer l.podsMu.Unlock()
	for _, q := range l.Pods {
		if q.Name == name {
			return nil, fmt.Errorf("pod %s exists already (on %s)", name, q.Node.Name)
		}
	}
	list, err := l.nodeNetConf(ctx, n)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(l.Dir, n.Name)
	p = &Pod{
		Name:    name,
		NS:      l.nsName(name),
		Node:    n,
		netConf: list,
		cni:     libcni.NewCNIConfigWithCacheDir([]string{CNIPluginDir}, filepath.Join(dir, "cni-cache"), &nodeExec{ns: n.NS}),
		rt: &libcni.RuntimeConf{
			ContainerID: l.ID + "-" + name,
			NetNS:       filepath.Join("/run/netns", l.nsName(name)),
			IfName:      podIfName,
			// What the kubelet passes: plugins must take it in their stride.
			Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", name},
				{"K8S_POD_INFRA_CONTAINER_ID", l.ID + "-" + name}},
		},
	}
	if err := l.addNamespace(ctx, p.NS); err != nil {
		return nil, fmt.Errorf("pod %s: %w", name, err)
	}
	// From here DeletePod undoes whatever part was done, and Down finds the
	// pod should this process not get that far.
	l.Pods = append(l.Pods, p)
	defer func() {
		if err != nil {
			if derr := l.deletePod(p); derr != nil {
				err = errors.Join(err, fmt.Errorf("removing the half-made pod: %w", derr))
			}
			p = nil
		}
	}()
	addCtx, cancel := context.WithTimeout(ctx, cniTimeout)
	defer cancel()
	res, err := p.cni.AddNetworkList(addCtx, list, p.rt)
	if err != nil {
		return p, fmt.Errorf("pod %s: CNI ADD on %s: %w", name, n.Name, err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return p, fmt.Errorf("pod %s: CNI ADD result: %w", name, err)
	}
	for _, ipc := range r.IPs {
		a, ok := netip.AddrFromSlice(ipc.Address.IP)
		if !ok {
			continue
		}
		a = a.Unmap()
		p.IPs = append(p.IPs, a)
		if n.PodCIDR.Contains(a) && !p.IP.IsValid() {
			p.IP = a
		}
	}
	if !p.IP.IsValid() {
		return p, fmt.Errorf("pod %s: CNI ADD gave %v, nothing in %s's pod CIDR %s", name, p.IPs, n.Name, n.PodCIDR)
	}
	if err := l.startEcho(ctx, p); err != nil {
		return p, err
	}
	l.logf("pod %s on %s: %s (namespace %s)", name, n.Name, p.IP, p.NS)
	return p, nil
}

// DeletePod stops p's echo responder, runs the plugins' DEL and removes p's
// namespace, as the runtime does when a pod goes.
func (l *Lab) DeletePod(ctx context.Context, p *Pod) error {
	l.podsMu.Lock()
	defer l.podsMu.Unlock()
	if !slices.Contains(l.Pods, p) {
		return fmt.Errorf("pod %s is not in the lab", p.Name)
	}
	return l.deletePodCtx(ctx, p)
}

func (l *Lab) deletePod(p *Pod) error {
	ctx, cancel := context.WithTimeout(context.Background(), cniTimeout)
	defer cancel()
	return l.deletePodCtx(ctx, p)
}

// deletePodCtx undoes as much of p as exists; l.podsMu is held.
func (l *Lab) deletePodCtx(ctx context.Context, p *Pod) error {
	var errs []error
	if p.echo != nil {
		pid := p.echo.cmd.Process.Pid
		if err := stopPID(pid, 5*time.Second); err != nil {
			errs = append(errs, fmt.Errorf("pod %s: stopping its echo responder: %w", p.Name, err))
		} else {
			<-p.echo.done
			l.res.removePID(pid)
		}
	}
	// DEL also after a failed or partial ADD, as the CNI spec asks of a
	// runtime; the plugins tolerate what is not there. It needs the
	// namespace, so it comes first.
	if _, err := os.Stat(p.rt.NetNS); err == nil {
		dctx, cancel := context.WithTimeout(ctx, cniTimeout)
		err := p.cni.DelNetworkList(dctx, p.netConf, p.rt)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("pod %s: CNI DEL on %s: %w", p.Name, p.Node.Name, err))
		}
		if err := ip(ctx, "", "netns", "delete", p.NS); err != nil {
			errs = append(errs, err)
		}
	}
	l.Pods = slices.DeleteFunc(l.Pods, func(q *Pod) bool { return q == p })
	return errors.Join(errs...)
}

// deletePods deletes every pod while the nodes still exist: Down calls it
// before releasing the namespaces.
func (l *Lab) deletePods() error {
	l.podsMu.Lock()
	defer l.podsMu.Unlock()
	var errs []error
	for _, p := range slices.Backward(slices.Clone(l.Pods)) {
		errs = append(errs, l.deletePod(p))
	}
	return errors.Join(errs...)
}

// PodExec runs a command inside p's network namespace and returns its
// combined output.
func (l *Lab) PodExec(ctx context.Context, p *Pod, args ...string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", p.NS}, args...)...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s in pod %s: %w: %s", strings.Join(args, " "), p.Name, err, bytes.TrimSpace(out))
	}
	return out, nil
}

// nodeNetConf waits for the conflist n's agent writes and loads it as it
// is. The lab starts each agent with --cni-ipam-data-dir in the node's
// directory (the lab's nodes share this machine's file system, where a real
// node has its own /var/lib/cni); a conflist that would keep host-local's
// state anywhere else is refused, so that no pod leaves state outside the
// lab.
func (l *Lab) nodeNetConf(ctx context.Context, n *Node) (*libcni.NetworkConfigList, error) {
	if n.CNIConfDir == "" {
		return nil, fmt.Errorf("%s has no CNI config directory: its agent was not started by the lab", n.Name)
	}
	path := filepath.Join(n.CNIConfDir, cni.FileName)
	var list *libcni.NetworkConfigList
	err := WaitFor(ctx, cniConfTimeout, fmt.Sprintf("the agent on %s to write %s", n.Name, path), func() error {
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			err = errors.New("not there (route-agent writes it when started with --cni-conf-dir, once its Node has spec.podCIDRs)")
		}
		if err != nil {
			if n.agent != nil && n.agent.exited() {
				return Permanent(fmt.Errorf("%w, and route-agent on %s has exited:\n%s", err, n.Name, n.agent.tail(20)))
			}
			return err
		}
		if list, err = libcni.ConfListFromBytes(b); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if err := l.checkIPAMDataDir(list); err != nil {
			return Permanent(fmt.Errorf("%s: %w", path, err))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return list, nil
}

// checkIPAMDataDir makes sure every host-local plugin of list keeps its
// state inside the lab's directory.
func (l *Lab) checkIPAMDataDir(list *libcni.NetworkConfigList) error {
	for _, pl := range list.Plugins {
		var conf struct {
			IPAM struct {
				Type    string `json:"type"`
				DataDir string `json:"dataDir"`
			} `json:"ipam"`
		}
		if err := json.Unmarshal(pl.Bytes, &conf); err != nil {
			return err
		}
		if conf.IPAM.Type != "host-local" {
			continue
		}
		dir := filepath.Clean(conf.IPAM.DataDir)
		if !filepath.IsAbs(dir) || !strings.HasPrefix(dir, filepath.Clean(l.Dir)+string(filepath.Separator)) {
			return fmt.Errorf("host-local's dataDir %q is outside the lab's %s (empty means the host's /var/lib/cni/networks); "+
				"the lab starts route-agent with --cni-ipam-data-dir for this", conf.IPAM.DataDir, l.Dir)
		}
	}
	return nil
}

// nodeExec runs CNI plugins inside the node's network namespace, where a
// runtime on that node runs them: the plugin creates the veth there, moves
// one end into CNI_NETNS, adds the node's host route and sets the node's
// sysctls, all in the namespace it runs in.
//
// It wraps each plugin in `ip netns exec <node>` rather than switching a
// locked OS thread into the node's namespace and forking from it. Both give
// the child the node's network namespace, but ip netns exec also mounts a
// sysfs of that namespace (the thread switch leaves /sys showing the root
// namespace's links), does not depend on which thread Go's runtime forks
// from, and cannot leave a thread of this process in the wrong namespace;
// it is also how the lab runs everything else in a node, and it execs the
// plugin in place. If `ip netns exec` cannot enter the namespace it fails,
// so a plugin never runs in the root namespace by mistake.
type nodeExec struct {
	ns string
	version.PluginDecoder
}

func (e *nodeExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	c := exec.CommandContext(ctx, "ip", "netns", "exec", e.ns, pluginPath)
	c.Env, c.Stdin, c.Stdout, c.Stderr = environ, bytes.NewReader(stdin), &stdout, &stderr
	if err := c.Run(); err != nil {
		// A failing plugin prints a CNI error object on stdout.
		var perr types.Error
		if json.Unmarshal(stdout.Bytes(), &perr) == nil && perr.Msg != "" {
			return nil, &perr
		}
		return nil, fmt.Errorf("%s in %s: %w: %s", filepath.Base(pluginPath), e.ns, err,
			bytes.TrimSpace(append(stdout.Bytes(), stderr.Bytes()...)))
	}
	return stdout.Bytes(), nil
}

func (e *nodeExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}
