package cni

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
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
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// pluginDir is where Debian's containernetworking-plugins installs the
// reference plugins.
const pluginDir = "/usr/lib/cni"

// nsExec runs CNI plugins inside the network namespace ns ("the node"), as
// a runtime on that node would: `ip netns exec` enters ns (and mounts a
// sysfs that matches it) and then execs the plugin in place. The e2e lab
// does the same; see e2e/lab/pods.go for why.
type nsExec struct {
	ns string
	version.PluginDecoder
}

func (e *nsExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	c := exec.CommandContext(ctx, "ip", "netns", "exec", e.ns, pluginPath)
	c.Env, c.Stdin, c.Stdout, c.Stderr = environ, bytes.NewReader(stdin), &stdout, &stderr
	if err := c.Run(); err != nil {
		// A failing plugin prints a CNI error object on stdout.
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

// testNamespace makes a named network namespace that is deleted when the
// test ends, whatever happens.
func testNamespace(t *testing.T, name string) (path string, h *netlink.Handle) {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", name, err, out)
		}
	})
	nsh, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nsh.Close() })
	if h, err = netlink.NewHandleAt(nsh); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	return filepath.Join("/run/netns", name), h
}

// The reference plugins, run through libcni as a container runtime runs
// them, accept the conflist: ADD gives the pod an address of each family in
// the pod CIDRs and default routes, and the node a host route to each; DEL
// takes all of it away again.
func TestPluginsAcceptConflist(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make network namespaces")
	}
	for _, p := range []string{"ptp", "host-local", "portmap"} {
		if _, err := os.Stat(filepath.Join(pluginDir, p)); err != nil {
			t.Skipf("needs Debian's containernetworking-plugins: %v", err)
		}
	}
	id := make([]byte, 3)
	_, _ = rand.Read(id)
	run := "ra-cnitest-" + hex.EncodeToString(id)
	nodeNS, podNS := run+"-node", run+"-pod"
	_, node := testNamespace(t, nodeNS)
	podPath, pod := testNamespace(t, podNS)

	v4, v6 := netip.MustParsePrefix("10.99.7.0/24"), netip.MustParsePrefix("fd00:99:7::/64")
	dataDir := t.TempDir()
	conf, err := Conflist(Config{PodCIDRs: []netip.Prefix{v4, v6}, MTU: 1400, IPAMDataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.ConfListFromBytes(conf)
	if err != nil {
		t.Fatalf("libcni rejects the conflist: %v", err)
	}
	cniConf := libcni.NewCNIConfigWithCacheDir([]string{pluginDir}, t.TempDir(), &nsExec{ns: nodeNS})
	rt := &libcni.RuntimeConf{
		ContainerID: run,
		NetNS:       podPath,
		IfName:      "eth0",
		// What the kubelet passes; the plugins must tolerate it.
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "cnitest"}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	res, err := cniConf.AddNetworkList(ctx, list, rt)
	deleted := false
	t.Cleanup(func() {
		if !deleted {
			_ = cniConf.DelNetworkList(context.Background(), list, rt)
		}
	})
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	var got4, got6 netip.Addr
	for _, ipc := range r.IPs {
		a, _ := netip.AddrFromSlice(ipc.Address.IP)
		a = a.Unmap()
		switch {
		case v4.Contains(a):
			got4 = a
		case v6.Contains(a):
			got6 = a
		default:
			t.Errorf("ADD gave %s, in neither pod CIDR", ipc.Address.String())
		}
	}
	if !got4.IsValid() || !got6.IsValid() {
		t.Fatalf("ADD gave %v, want an address in each of %s and %s", r.IPs, v4, v6)
	}

	// The pod: eth0 with both addresses and the MTU, default routes.
	eth0, err := pod.LinkByName("eth0")
	if err != nil {
		t.Fatalf("pod has no eth0: %v", err)
	}
	if eth0.Attrs().MTU != 1400 {
		t.Errorf("pod eth0 MTU %d, want 1400", eth0.Attrs().MTU)
	}
	addrs, err := pod.AddrList(eth0, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []netip.Addr{got4, got6} {
		found := false
		for _, a := range addrs {
			if aa, _ := netip.AddrFromSlice(a.IP); aa.Unmap() == want {
				found = true
			}
		}
		if !found {
			t.Errorf("pod eth0 lacks %s: %v", want, addrs)
		}
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		if !hasDefaultRoute(t, pod, fam) {
			t.Errorf("pod has no default route of family %d", fam)
		}
	}

	// The node: a host route to each pod address on the pod's veth.
	for _, a := range []netip.Addr{got4, got6} {
		rt := hostRoute(t, node, a)
		if rt == nil {
			t.Errorf("node has no host route to %s", a)
			continue
		}
		link, err := node.LinkByIndex(rt.LinkIndex)
		if err != nil || link.Type() != "veth" {
			t.Errorf("node's route to %s leaves through %v (%v), want the pod's veth", a, link, err)
		}
	}
	// And it works: the node reaches the pod over IPv4.
	if out, err := exec.Command("ip", "netns", "exec", nodeNS, "ping", "-c1", "-W5", got4.String()).CombinedOutput(); err != nil {
		t.Errorf("node cannot ping the pod at %s: %v\n%s", got4, err, out)
	}
	// host-local recorded the reservations in our data dir.
	for _, a := range []netip.Addr{got4, got6} {
		if _, err := os.Stat(filepath.Join(dataDir, NetworkName, a.String())); err != nil {
			t.Errorf("no host-local reservation for %s: %v", a, err)
		}
	}

	if err := cniConf.DelNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	deleted = true
	if _, err := pod.LinkByName("eth0"); err == nil {
		t.Error("pod eth0 still there after DEL")
	}
	for _, a := range []netip.Addr{got4, got6} {
		if hostRoute(t, node, a) != nil {
			t.Errorf("node's host route to %s still there after DEL", a)
		}
		if _, err := os.Stat(filepath.Join(dataDir, NetworkName, a.String())); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("host-local reservation for %s still there after DEL: %v", a, err)
		}
	}
	links, err := node.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Type() == "veth" {
			t.Errorf("node still has veth %s after DEL", l.Attrs().Name)
		}
	}
}

func hasDefaultRoute(t *testing.T, h *netlink.Handle, family int) bool {
	t.Helper()
	routes, err := h.RouteList(nil, family)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst == nil || (r.Dst.IP.IsUnspecified() && isZeroMask(r.Dst.Mask)) {
			return r.Gw != nil
		}
	}
	return false
}

func isZeroMask(m net.IPMask) bool {
	ones, _ := m.Size()
	return ones == 0
}

// hostRoute returns the node's /32 or /128 route to a, or nil.
func hostRoute(t *testing.T, h *netlink.Handle, a netip.Addr) *netlink.Route {
	t.Helper()
	fam := netlink.FAMILY_V4
	if a.Is6() {
		fam = netlink.FAMILY_V6
	}
	routes, err := h.RouteList(nil, fam)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		ones, bits := r.Dst.Mask.Size()
		if d, ok := netip.AddrFromSlice(r.Dst.IP); ok && d.Unmap() == a && ones == bits {
			return &r
		}
	}
	return nil
}
