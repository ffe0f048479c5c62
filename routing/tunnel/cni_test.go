package tunnel

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"routeagent.io/route-agent/routing/cni"
)

// pluginDir is where Debian's containernetworking-plugins installs the
// reference plugins.
const pluginDir = "/usr/lib/cni"

// nsExec runs CNI plugins inside a node's namespace, as a runtime on that
// node would.
type nsExec struct {
	ns string
	version.PluginDecoder
}

func (e *nsExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	c := exec.CommandContext(ctx, "ip", "netns", "exec", e.ns, pluginPath)
	c.Env, c.Stdin, c.Stdout, c.Stderr = environ, bytes.NewReader(stdin), &stdout, &stderr
	if err := c.Run(); err != nil {
		var perr types.Error
		if json.Unmarshal(stdout.Bytes(), &perr) == nil && perr.Msg != "" {
			return nil, &perr
		}
		return nil, fmt.Errorf("%s in %s: %w: %s%s", filepath.Base(pluginPath), e.ns, err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

func (e *nsExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

// addPod runs the agent's conflist (ptp + host-local) on node n for a new
// pod namespace and returns the pod with its addresses. The pod goes away
// with the test, through a CNI DEL.
func addPod(t *testing.T, n *node, name string, mtu int, cidrs ...netip.Prefix) (*node, []netip.Addr) {
	t.Helper()
	pod := newNode(t, name)
	conf, err := cni.Conflist(cni.Config{PodCIDRs: cidrs, MTU: mtu, IPAMDataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.ConfListFromBytes(conf)
	if err != nil {
		t.Fatal(err)
	}
	cniConf := libcni.NewCNIConfigWithCacheDir([]string{pluginDir}, t.TempDir(), &nsExec{ns: n.name})
	rt := &libcni.RuntimeConf{ContainerID: name, NetNS: filepath.Join("/run/netns", name), IfName: "eth0"}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := cniConf.AddNetworkList(ctx, list, rt)
	t.Cleanup(func() {
		if err := cniConf.DelNetworkList(context.Background(), list, rt); err != nil {
			t.Errorf("CNI DEL of %s: %v", name, err)
		}
	})
	if err != nil {
		t.Fatalf("CNI ADD of %s on %s: %v", name, n.name, err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	var addrs []netip.Addr
	for _, ipc := range r.IPs {
		a, _ := netip.AddrFromSlice(ipc.Address.IP)
		addrs = append(addrs, a.Unmap())
	}
	return pod, addrs
}

// TestTunnelWithPTPPods puts pods on two nodes with the CNI ptp plugin,
// which gives the host side of every pod's veth the pod CIDR's gateway
// (10.5.112.1, fd05:112::1), and gives the tunnel device the first address
// of the pod CIDR (10.5.112.0, fd05:112::). The two do not get in each
// other's way: pods reach pods on the other node in both families, the
// node reaches remote pods from its tunnel address (so that the replies
// come back through the tunnel), and neither the plugin nor Set undoes the
// other's work.
func TestTunnelWithPTPPods(t *testing.T) {
	needRoot(t)
	for _, p := range []string{"ptp", "host-local"} {
		if _, err := os.Stat(filepath.Join(pluginDir, p)); err != nil {
			t.Skipf("needs Debian's containernetworking-plugins: %v", err)
		}
	}
	a, b := twoNodes(t, false)
	cidrA := []netip.Prefix{netip.MustParsePrefix("10.5.112.0/24"), netip.MustParsePrefix("fd05:112::/64")}
	cidrB := []netip.Prefix{netip.MustParsePrefix("10.5.114.0/24"), netip.MustParsePrefix("fd05:114::/64")}
	ta, tb := a.tunnel(t), b.tunnel(t)
	da := Desired{Device: a.spec("10.5.112.0", "fd05:112::"), Peers: []Peer{b.peer("10.5.114.0"), b.peer("fd05:114::")}}
	db := Desired{Device: b.spec("10.5.114.0", "fd05:114::"), Peers: []Peer{a.peer("10.5.112.0"), a.peer("fd05:112::")}}
	ra, rb := mustSet(t, ta, da), mustSet(t, tb, db)
	for _, n := range []*node{a, b} {
		if out, err := n.exec("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"); err != nil {
			t.Fatalf("%s: enabling forwarding: %v\n%s", n.name, err, out)
		}
	}
	a.route(t, "10.5.114.0/24", "10.5.114.0", ra.Index)
	a.route(t, "fd05:114::/64", "fd05:114::", ra.Index)
	b.route(t, "10.5.112.0/24", "10.5.112.0", rb.Index)
	b.route(t, "fd05:112::/64", "fd05:112::", rb.Index)

	podA, addrsA := addPod(t, a, a.name+"-pod", ra.MTU, cidrA...)
	podB, addrsB := addPod(t, b, b.name+"-pod", rb.MTU, cidrB...)
	t.Logf("pod a %v, pod b %v", addrsA, addrsB)

	// The plugin left the tunnel device as Set made it.
	if res := mustSet(t, ta, da); res.Writes != 0 {
		t.Errorf("Set after the CNI ADD on a wrote %d times", res.Writes)
	}
	if res := mustSet(t, tb, db); res.Writes != 0 {
		t.Errorf("Set after the CNI ADD on b wrote %d times", res.Writes)
	}

	for _, dst := range addrsB {
		if out, err := podA.ping(dst.String(), 0); err != nil {
			t.Errorf("pod a cannot ping pod b at %s: %v\n%s", dst, err, out)
		}
		if out, err := a.ping(dst.String(), 0); err != nil {
			t.Errorf("node a cannot ping pod b at %s: %v\n%s", dst, err, out)
		}
		// From the tunnel device's address, so that the reply comes back
		// through the tunnel.
		routes, err := a.h.RouteGet(dst.AsSlice())
		if err != nil || len(routes) != 1 {
			t.Fatalf("route to %s on node a: %v %v", dst, routes, err)
		}
		src, _ := netip.AddrFromSlice(routes[0].Src)
		if want := map[bool]string{true: "10.5.112.0", false: "fd05:112::"}[dst.Is4()]; src.Unmap().String() != want || routes[0].LinkIndex != ra.Index {
			t.Errorf("node a reaches %s from %s through if%d, want from %s through %s (if%d)", dst, src, routes[0].LinkIndex, want, VXLANDevice, ra.Index)
		}
	}
	for _, dst := range addrsA {
		if out, err := podB.ping(dst.String(), 0); err != nil {
			t.Errorf("pod b cannot ping pod a at %s: %v\n%s", dst, err, out)
		}
	}
	// The largest packet the pods' MTU allows crosses the tunnel.
	if out, err := podA.ping(addrsB[0].String(), ra.MTU-28); err != nil {
		t.Errorf("pod a cannot send pod b a packet of %d bytes: %v\n%s", ra.MTU, err, out)
	}
	// Node b reaches node a's gateway address from its own.
	if out, err := podB.ping("10.5.112.0", 0); err != nil {
		t.Errorf("pod b cannot ping node a's tunnel address: %v\n%s", err, out)
	}
}
