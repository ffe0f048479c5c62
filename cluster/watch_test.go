package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/events"

	"routeagent.io/route-agent/cluster/snapshot"

	bgpconfig "routeagent.io/route-agent/bgp/config"
)

// waitTimeout bounds every wait for a snapshot. It is generous on purpose:
// the tests assert what gets published, never how fast.
const waitTimeout = 10 * time.Second

const (
	validConfig = "peers:\n- peer-address: 10.0.0.1\n  peer-asn: 64512\n  my-asn: 64513\n"
	otherConfig = "peers:\n- peer-address: 10.0.0.2\n  peer-asn: 64600\n  my-asn: 64513\n"
	badConfig   = "peers:\n- peer-address: 10.0.0.300\n  peer-asn: 64512\n  my-asn: 64513\n"
)

var bgpConfigName = types.NamespacedName{Namespace: "kube-system", Name: "bgp-config"}

// addrCmp lets cmp compare the netip types, whose fields are unexported.
var addrCmp = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

// nodeSpec describes a Node for the fake API server.
type nodeSpec struct {
	name     string
	rv       string
	labels   map[string]string
	addrs    []corev1.NodeAddress
	podCIDR  string
	podCIDRs []string
}

func (s nodeSpec) obj() *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: s.name, ResourceVersion: s.rv, Labels: s.labels},
		Spec:       corev1.NodeSpec{PodCIDR: s.podCIDR, PodCIDRs: s.podCIDRs},
		Status:     corev1.NodeStatus{Addresses: s.addrs},
	}
}

func internal(ip string) corev1.NodeAddress {
	return corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip}
}

func external(ip string) corev1.NodeAddress {
	return corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: ip}
}

func configMap(nn types.NamespacedName, rv string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: nn.Namespace, Name: nn.Name, ResourceVersion: rv},
		Data:       data,
	}
}

func bgpConfigMap(rv, yaml string) *corev1.ConfigMap {
	return configMap(bgpConfigName, rv, map[string]string{BGPConfigKey: yaml})
}

// watcher runs Watch against a fake clientset and hands the published
// snapshots to the test.
type watcher struct {
	t      *testing.T
	client *fake.Clientset
	snaps  chan *snapshot.Cluster
	ctx    context.Context
	// published counts calls of publish.
	mu        sync.Mutex
	published int
}

// startWatch starts Watch in a goroutine. Cleanup cancels it and fails the
// test if Watch does not return or returns an error.
func startWatch(t *testing.T, nodeName string, objs ...runtime.Object) *watcher {
	t.Helper()
	client := fake.NewSimpleClientset(objs...)
	return startWatchWith(t, client, nodeName, nil)
}

func startWatchWith(t *testing.T, client *fake.Clientset, nodeName string, rec events.EventRecorder) *watcher {
	t.Helper()
	return startWatchOpts(t, WatchOptions{Client: client, NodeName: nodeName, Events: rec})
}

// startWatchOpts is startWatch with every option; BGPConfig and Logger
// are filled in.
func startWatchOpts(t *testing.T, opts WatchOptions) *watcher {
	t.Helper()
	opts.BGPConfig = bgpConfigName
	return runWatch(t, opts)
}

// runWatch is startWatchOpts with BGPConfig as given; Logger is filled in.
func runWatch(t *testing.T, opts WatchOptions) *watcher {
	t.Helper()
	client := opts.Client.(*fake.Clientset)
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{t: t, client: client, snaps: make(chan *snapshot.Cluster), ctx: ctx}
	done := make(chan error, 1)
	opts.Logger = slog.New(slog.DiscardHandler)
	go func() {
		done <- Watch(ctx, opts, func(s *snapshot.Cluster) {
			w.mu.Lock()
			w.published++
			w.mu.Unlock()
			select {
			case w.snaps <- s:
			case <-ctx.Done():
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Watch returned %v after cancel, want nil", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("Watch did not return within %v of ctx cancel", waitTimeout)
		}
	})
	return w
}

// waitFor returns the first published snapshot for which ok returns true.
// Intermediate states may be coalesced away, so predicates must describe the
// final state wanted, not a step towards it.
func (w *watcher) waitFor(what string, ok func(*snapshot.Cluster) bool) *snapshot.Cluster {
	w.t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	var last *snapshot.Cluster
	for {
		select {
		case s := <-w.snaps:
			if ok(s) {
				return s
			}
			last = s
		case <-deadline.C:
			w.t.Fatalf("no snapshot with %s within %v; last one: %s", what, waitTimeout, dump(last))
			return nil
		}
	}
}

func dump(s *snapshot.Cluster) string {
	if s == nil {
		return "none"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "NodeName=%q Self=%v Nodes=[", s.NodeName, s.Self != nil)
	for _, n := range s.Nodes {
		fmt.Fprintf(&b, "%s%v ", n.Name, n.Labels)
	}
	fmt.Fprintf(&b, "] BGP={Source:%q Present:%v Config:%v Applied:%q Err:%v ErrVersion:%q}",
		s.BGP.Source, s.BGP.Present, s.BGP.Config != nil, s.BGP.AppliedVersion, s.BGP.Err, s.BGP.ErrVersion)
	return b.String()
}

func (w *watcher) createNode(s nodeSpec) {
	w.t.Helper()
	if _, err := w.client.CoreV1().Nodes().Create(context.Background(), s.obj(), metav1.CreateOptions{}); err != nil {
		w.t.Fatalf("creating node %s: %v", s.name, err)
	}
}

func (w *watcher) updateNode(s nodeSpec) {
	w.t.Helper()
	if _, err := w.client.CoreV1().Nodes().Update(context.Background(), s.obj(), metav1.UpdateOptions{}); err != nil {
		w.t.Fatalf("updating node %s: %v", s.name, err)
	}
}

func (w *watcher) deleteNode(name string) {
	w.t.Helper()
	if err := w.client.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		w.t.Fatalf("deleting node %s: %v", name, err)
	}
}

func (w *watcher) createCM(cm *corev1.ConfigMap) {
	w.t.Helper()
	if _, err := w.client.CoreV1().ConfigMaps(cm.Namespace).Create(context.Background(), cm, metav1.CreateOptions{}); err != nil {
		w.t.Fatalf("creating configmap %s/%s: %v", cm.Namespace, cm.Name, err)
	}
}

func (w *watcher) updateCM(cm *corev1.ConfigMap) {
	w.t.Helper()
	if _, err := w.client.CoreV1().ConfigMaps(cm.Namespace).Update(context.Background(), cm, metav1.UpdateOptions{}); err != nil {
		w.t.Fatalf("updating configmap %s/%s: %v", cm.Namespace, cm.Name, err)
	}
}

func (w *watcher) deleteCM(nn types.NamespacedName) {
	w.t.Helper()
	if err := w.client.CoreV1().ConfigMaps(nn.Namespace).Delete(context.Background(), nn.Name, metav1.DeleteOptions{}); err != nil {
		w.t.Fatalf("deleting configmap %s: %v", nn, err)
	}
}

func nodeNames(s *snapshot.Cluster) []string {
	var names []string
	for _, n := range s.Nodes {
		names = append(names, n.Name)
	}
	return names
}

func findNode(s *snapshot.Cluster, name string) *snapshot.Node {
	for i := range s.Nodes {
		if s.Nodes[i].Name == name {
			return &s.Nodes[i]
		}
	}
	return nil
}

func TestWatchInitialNodes(t *testing.T) {
	nodeB := nodeSpec{
		name: "node-b", rv: "10", labels: map[string]string{"rack": "r2"},
		addrs: []corev1.NodeAddress{
			{Type: corev1.NodeHostName, Address: "node-b"},
			internal("fd00::2"),
			external("203.0.113.2"),
			internal("10.0.0.2"),
		},
		// podCIDRs wins over podCIDR; host bits are masked off.
		podCIDR:  "10.244.99.0/24",
		podCIDRs: []string{"10.244.1.0/24", "fd00:244:1::1/64"},
	}
	nodeA := nodeSpec{
		name: "node-a", rv: "11",
		addrs:   []corev1.NodeAddress{internal("10.0.0.1")},
		podCIDR: "10.244.0.0/24", // only the singular field, as some clusters do
	}
	nodeC := nodeSpec{
		name: "node-c", rv: "12",
		addrs:    []corev1.NodeAddress{internal("not-an-ip"), internal("10.0.0.3"), external("10.0.0.33")},
		podCIDRs: []string{"10.244.2.0/33", "bogus", "10.244.2.0/24"},
	}
	w := startWatch(t, "node-b", nodeC.obj(), nodeB.obj(), nodeA.obj())

	s := w.waitFor("three nodes", func(s *snapshot.Cluster) bool { return len(s.Nodes) == 3 })
	want := &snapshot.Cluster{Synced: true,
		NodeName: "node-b",
		Nodes: []snapshot.Node{
			{
				Name:        "node-a",
				InternalIPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")},
				PodCIDRs:    []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")},
			},
			{
				Name:        "node-b",
				Labels:      map[string]string{"rack": "r2"},
				InternalIPs: []netip.Addr{netip.MustParseAddr("fd00::2"), netip.MustParseAddr("10.0.0.2")},
				PodCIDRs:    []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd00:244:1::/64")},
			},
			{
				Name:        "node-c",
				InternalIPs: []netip.Addr{netip.MustParseAddr("10.0.0.3")},
				PodCIDRs:    []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")},
			},
		},
		BGP: snapshot.BGPConfig{Source: "kube-system/bgp-config"},
	}
	// Self is checked separately: it must point into Nodes.
	if diff := cmp.Diff(want, s, addrCmp, cmp.FilterPath(func(p cmp.Path) bool {
		return p.String() == "Self"
	}, cmp.Ignore())); diff != "" {
		t.Errorf("snapshot mismatch (-want +got):\n%s", diff)
	}
	if s.Self == nil {
		t.Fatal("Self is nil, want node-b")
	}
	if s.Self != &s.Nodes[1] {
		t.Errorf("Self = %p (%s), want a pointer to Nodes[1] %p", s.Self, s.Self.Name, &s.Nodes[1])
	}
	if ip, ok := s.Self.InternalIP(false); !ok || ip != netip.MustParseAddr("10.0.0.2") {
		t.Errorf("Self.InternalIP(v4) = %v, %v; want 10.0.0.2, true", ip, ok)
	}
	if ip, ok := s.Self.InternalIP(true); !ok || ip != netip.MustParseAddr("fd00::2") {
		t.Errorf("Self.InternalIP(v6) = %v, %v; want fd00::2, true", ip, ok)
	}
	if s.BGP.Present || s.BGP.Config != nil || s.BGP.Err != nil {
		t.Errorf("BGP = %+v, want absent with no config and no error", s.BGP)
	}
}

func TestWatchNodeChanges(t *testing.T) {
	w := startWatch(t, "node-b",
		nodeSpec{name: "node-b", rv: "1", labels: map[string]string{"bgp": "off"}, addrs: []corev1.NodeAddress{internal("10.0.0.2")}}.obj(),
		nodeSpec{name: "node-c", rv: "2"}.obj(),
	)
	w.waitFor("the initial nodes", func(s *snapshot.Cluster) bool { return len(s.Nodes) == 2 })

	// A node added later sorts into place.
	w.createNode(nodeSpec{name: "node-a", rv: "3", addrs: []corev1.NodeAddress{internal("10.0.0.1")}})
	s := w.waitFor("node-a added", func(s *snapshot.Cluster) bool { return len(s.Nodes) == 3 })
	if diff := cmp.Diff([]string{"node-a", "node-b", "node-c"}, nodeNames(s)); diff != "" {
		t.Errorf("node order (-want +got):\n%s", diff)
	}
	if s.Self == nil || s.Self.Name != "node-b" {
		t.Errorf("Self = %v, want node-b", s.Self)
	}

	// A label change on this node shows up in Self and in Nodes.
	w.updateNode(nodeSpec{name: "node-b", rv: "4", labels: map[string]string{"bgp": "on", "rack": "r1"}, addrs: []corev1.NodeAddress{internal("10.0.0.2")}})
	wantLabels := map[string]string{"bgp": "on", "rack": "r1"}
	s = w.waitFor("node-b relabelled", func(s *snapshot.Cluster) bool {
		n := findNode(s, "node-b")
		return n != nil && cmp.Equal(n.Labels, wantLabels)
	})
	if s.Self == nil || !cmp.Equal(s.Self.Labels, wantLabels) {
		t.Errorf("Self = %+v, want node-b with labels %v", s.Self, wantLabels)
	}
	if len(s.Nodes) != 3 {
		t.Errorf("nodes = %v, want 3", nodeNames(s))
	}

	// An address change on another node.
	w.updateNode(nodeSpec{name: "node-c", rv: "5", addrs: []corev1.NodeAddress{internal("10.0.0.3"), internal("fd00::3")}})
	s = w.waitFor("node-c addresses", func(s *snapshot.Cluster) bool {
		n := findNode(s, "node-c")
		return n != nil && len(n.InternalIPs) == 2
	})
	if diff := cmp.Diff([]netip.Addr{netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("fd00::3")}, findNode(s, "node-c").InternalIPs, addrCmp); diff != "" {
		t.Errorf("node-c InternalIPs (-want +got):\n%s", diff)
	}

	// Deleting a node removes it; deleting this node clears Self.
	w.deleteNode("node-c")
	s = w.waitFor("node-c deleted", func(s *snapshot.Cluster) bool { return findNode(s, "node-c") == nil })
	if diff := cmp.Diff([]string{"node-a", "node-b"}, nodeNames(s)); diff != "" {
		t.Errorf("nodes after deleting node-c (-want +got):\n%s", diff)
	}
	w.deleteNode("node-b")
	s = w.waitFor("node-b deleted", func(s *snapshot.Cluster) bool { return findNode(s, "node-b") == nil })
	if s.Self != nil {
		t.Errorf("Self = %+v after deleting node-b, want nil", s.Self)
	}
	if s.NodeName != "node-b" {
		t.Errorf("NodeName = %q, want node-b", s.NodeName)
	}
}

func TestWatchSelfAppearsLater(t *testing.T) {
	w := startWatch(t, "late", nodeSpec{name: "early", rv: "1"}.obj())
	s := w.waitFor("the first snapshot", func(s *snapshot.Cluster) bool { return len(s.Nodes) == 1 })
	if s.Self != nil {
		t.Errorf("Self = %+v before the node exists, want nil", s.Self)
	}
	if s.NodeName != "late" {
		t.Errorf("NodeName = %q, want late", s.NodeName)
	}
	w.createNode(nodeSpec{name: "late", rv: "2", podCIDRs: []string{"10.244.7.0/24"}})
	s = w.waitFor("Self set", func(s *snapshot.Cluster) bool { return s.Self != nil })
	if s.Self.Name != "late" || len(s.Self.PodCIDRs) != 1 || s.Self.PodCIDRs[0] != netip.MustParsePrefix("10.244.7.0/24") {
		t.Errorf("Self = %+v, want late with pod CIDR 10.244.7.0/24", s.Self)
	}
}

func TestWatchNoObjects(t *testing.T) {
	w := startWatch(t, "node-a")
	s := w.waitFor("the first snapshot", func(*snapshot.Cluster) bool { return true })
	want := &snapshot.Cluster{Synced: true, NodeName: "node-a", BGP: snapshot.BGPConfig{Source: "kube-system/bgp-config"}}
	if diff := cmp.Diff(want, s, addrCmp); diff != "" {
		t.Errorf("snapshot of an empty cluster (-want +got):\n%s", diff)
	}
}

// firstPeer returns the address of the first peer of the config in force.
func firstPeer(s *snapshot.Cluster) string {
	if s.BGP.Config == nil || len(s.BGP.Config.Peers) == 0 {
		return ""
	}
	return s.BGP.Config.Peers[0].Address.String()
}

func TestWatchBGPConfigLifecycle(t *testing.T) {
	w := startWatch(t, "node-a", nodeSpec{name: "node-a", rv: "1"}.obj())

	// No ConfigMap.
	s := w.waitFor("the first snapshot", func(*snapshot.Cluster) bool { return true })
	if diff := cmp.Diff(snapshot.BGPConfig{Source: "kube-system/bgp-config"}, s.BGP); diff != "" {
		t.Errorf("BGP without the ConfigMap (-want +got):\n%s", diff)
	}

	// A valid config.
	w.createCM(bgpConfigMap("100", validConfig))
	s = w.waitFor("config rv 100 applied", func(s *snapshot.Cluster) bool { return s.BGP.AppliedVersion == "100" })
	if !s.BGP.Present || s.BGP.Err != nil || s.BGP.ErrVersion != "" || s.BGP.Source != "kube-system/bgp-config" {
		t.Errorf("BGP = %+v, want present, no error", s.BGP)
	}
	if s.BGP.Config == nil || len(s.BGP.Config.Peers) != 1 {
		t.Fatalf("Config = %+v, want one peer", s.BGP.Config)
	}
	p := s.BGP.Config.Peers[0]
	if p.Address != netip.MustParseAddr("10.0.0.1") || p.ASN != 64512 || p.MyASN != 64513 {
		t.Errorf("peer = %+v, want 10.0.0.1 AS64512 from AS64513", p)
	}
	good := s.BGP.Config

	// An invalid update keeps the last good config in force.
	w.updateCM(bgpConfigMap("101", badConfig))
	s = w.waitFor("error for rv 101", func(s *snapshot.Cluster) bool { return s.BGP.ErrVersion == "101" })
	if s.BGP.Err == nil {
		t.Fatal("Err = nil, want the parse error")
	}
	for _, want := range []string{"peers[0].peer-address", "10.0.0.300"} {
		if !strings.Contains(s.BGP.Err.Error(), want) {
			t.Errorf("Err = %q, want it to mention %q", s.BGP.Err, want)
		}
	}
	var fe *bgpconfig.FieldError
	if !errors.As(s.BGP.Err, &fe) || fe.Path != "peers[0].peer-address" || fe.Value != "10.0.0.300" {
		t.Errorf("Err = %#v, want a *config.FieldError for peers[0].peer-address with value 10.0.0.300", s.BGP.Err)
	}
	if s.BGP.Config != good {
		t.Errorf("Config changed to %+v on a bad update, want the previous one kept", s.BGP.Config)
	}
	if s.BGP.AppliedVersion != "100" || !s.BGP.Present {
		t.Errorf("AppliedVersion = %q, Present = %v; want 100, true", s.BGP.AppliedVersion, s.BGP.Present)
	}

	// A node change republishes without reparsing or dropping the error.
	w.updateNode(nodeSpec{name: "node-a", rv: "2", labels: map[string]string{"x": "y"}})
	s = w.waitFor("node-a relabelled", func(s *snapshot.Cluster) bool { return s.Self != nil && s.Self.Labels["x"] == "y" })
	if s.BGP.ErrVersion != "101" || s.BGP.Err == nil || s.BGP.AppliedVersion != "100" || s.BGP.Config != good {
		t.Errorf("BGP after an unrelated node change = %+v, want the same error and config", s.BGP)
	}

	// A later valid update clears the error.
	w.updateCM(bgpConfigMap("102", otherConfig))
	s = w.waitFor("config rv 102 applied", func(s *snapshot.Cluster) bool { return s.BGP.AppliedVersion == "102" })
	if s.BGP.Err != nil || s.BGP.ErrVersion != "" {
		t.Errorf("Err = %v, ErrVersion = %q after a good update, want both cleared", s.BGP.Err, s.BGP.ErrVersion)
	}
	if got := firstPeer(s); got != "10.0.0.2" {
		t.Errorf("first peer = %q, want 10.0.0.2", got)
	}
	good = s.BGP.Config

	// The key config.yaml missing.
	w.updateCM(configMap(bgpConfigName, "103", map[string]string{"config.yml": validConfig}))
	s = w.waitFor("error for rv 103", func(s *snapshot.Cluster) bool { return s.BGP.ErrVersion == "103" })
	if s.BGP.Err == nil || !strings.Contains(s.BGP.Err.Error(), `"config.yaml"`) || !strings.Contains(s.BGP.Err.Error(), "kube-system/bgp-config") {
		t.Errorf("Err = %v, want it to name the ConfigMap and the key \"config.yaml\"", s.BGP.Err)
	}
	if s.BGP.Config != good || s.BGP.AppliedVersion != "102" || !s.BGP.Present {
		t.Errorf("BGP = %+v, want rv 102 still in force", s.BGP)
	}

	// Deleting the ConfigMap drops everything.
	w.deleteCM(bgpConfigName)
	s = w.waitFor("config deleted", func(s *snapshot.Cluster) bool { return !s.BGP.Present })
	if diff := cmp.Diff(snapshot.BGPConfig{Source: "kube-system/bgp-config"}, s.BGP); diff != "" {
		t.Errorf("BGP after delete (-want +got):\n%s", diff)
	}

	// Recreated with bad content: present, nothing in force, error.
	w.createCM(bgpConfigMap("104", badConfig))
	s = w.waitFor("error for rv 104", func(s *snapshot.Cluster) bool { return s.BGP.ErrVersion == "104" })
	if !s.BGP.Present || s.BGP.Config != nil || s.BGP.AppliedVersion != "" || s.BGP.Err == nil {
		t.Errorf("BGP = %+v, want present with no config in force and an error", s.BGP)
	}

	// And fixed.
	w.updateCM(bgpConfigMap("105", validConfig))
	s = w.waitFor("config rv 105 applied", func(s *snapshot.Cluster) bool { return s.BGP.AppliedVersion == "105" })
	if s.BGP.Err != nil || s.BGP.ErrVersion != "" || firstPeer(s) != "10.0.0.1" {
		t.Errorf("BGP = %+v (first peer %q), want rv 105 with peer 10.0.0.1 and no error", s.BGP, firstPeer(s))
	}
}

func TestWatchBGPConfigPresentAtStart(t *testing.T) {
	w := startWatch(t, "node-a", bgpConfigMap("7", validConfig))
	s := w.waitFor("the first snapshot", func(*snapshot.Cluster) bool { return true })
	if !s.BGP.Present || s.BGP.AppliedVersion != "7" || s.BGP.Err != nil || firstPeer(s) != "10.0.0.1" {
		t.Errorf("first snapshot BGP = %+v, want rv 7 in force", s.BGP)
	}
	if s.Self != nil || len(s.Nodes) != 0 {
		t.Errorf("Self = %v, Nodes = %v; want none", s.Self, nodeNames(s))
	}
}

func TestWatchBGPConfigInvalidAtStart(t *testing.T) {
	w := startWatch(t, "node-a", bgpConfigMap("7", "peers: [\n"))
	s := w.waitFor("the first snapshot", func(*snapshot.Cluster) bool { return true })
	if !s.BGP.Present || s.BGP.Config != nil || s.BGP.AppliedVersion != "" || s.BGP.ErrVersion != "7" || s.BGP.Err == nil {
		t.Errorf("first snapshot BGP = %+v, want present, no config, error for rv 7", s.BGP)
	}
}

// Each rejected content is recorded once as a Warning event on the
// ConfigMap, naming the node, the rejected version and the version kept.
func TestWatchRecordsEventForRejectedConfig(t *testing.T) {
	rec := events.NewFakeRecorder(10)
	good := "peers:\n- peer-address: 10.0.0.1\n  peer-asn: 64512\n  my-asn: 64513\n"
	w := startWatchWith(t, fake.NewSimpleClientset(bgpConfigMap("5", good)), "node-a", rec)
	w.waitFor("the good config", func(s *snapshot.Cluster) bool { return s.BGP.AppliedVersion == "5" })
	w.updateCM(bgpConfigMap("6", "peers:\n- peer-address: 10.0.0.300\n  peer-asn: 64512\n  my-asn: 64513\n"))
	w.waitFor("the rejection", func(s *snapshot.Cluster) bool { return s.BGP.ErrVersion == "6" })
	select {
	case e := <-rec.Events:
		for _, want := range []string{"Warning", "InvalidConfig", "node-a", "resourceVersion 6", "resourceVersion 5 stays in force", `peers[0].peer-address`, `"10.0.0.300"`} {
			if !strings.Contains(e, want) {
				t.Errorf("event %q does not mention %s", e, want)
			}
		}
	case <-time.After(waitTimeout):
		t.Fatal("no event recorded for the rejected config")
	}
	// A node change re-plans but does not re-report the same rejection.
	w.createNode(nodeSpec{name: "node-b"})
	w.waitFor("node-b", func(s *snapshot.Cluster) bool { return findNode(s, "node-b") != nil })
	select {
	case e := <-rec.Events:
		t.Errorf("second event for the same rejected version: %q", e)
	default:
	}
}

// Other ConfigMaps, in the same namespace or another, never stand in for
// the bgp-config one.
func TestWatchIgnoresOtherConfigMaps(t *testing.T) {
	w := startWatch(t, "node-a")
	w.waitFor("the first snapshot", func(*snapshot.Cluster) bool { return true })

	w.createCM(configMap(types.NamespacedName{Namespace: "default", Name: "bgp-config"}, "200", map[string]string{BGPConfigKey: otherConfig}))
	w.createCM(configMap(types.NamespacedName{Namespace: "kube-system", Name: "other"}, "201", map[string]string{BGPConfigKey: badConfig}))
	// Same namespace, so the same watch stream: by the time this one shows
	// up, the one above has been seen too.
	w.createCM(bgpConfigMap("202", validConfig))
	s := w.waitFor("config rv 202 applied", func(s *snapshot.Cluster) bool { return s.BGP.AppliedVersion == "202" })
	if s.BGP.Err != nil || firstPeer(s) != "10.0.0.1" {
		t.Errorf("BGP = %+v (first peer %q), want only kube-system/bgp-config used", s.BGP, firstPeer(s))
	}

	w.deleteCM(bgpConfigName)
	s = w.waitFor("config deleted", func(s *snapshot.Cluster) bool { return !s.BGP.Present })
	if s.BGP.Config != nil || s.BGP.Err != nil {
		t.Errorf("BGP = %+v, want nothing although other ConfigMaps exist", s.BGP)
	}
}

// A burst of changes ends in a snapshot of the final state, and changes
// made while a snapshot is being consumed coalesce into one more snapshot,
// not one per change.
func TestWatchBurstEndsInLatestState(t *testing.T) {
	w := startWatch(t, "node-00")
	w.waitFor("the first snapshot", func(*snapshot.Cluster) bool { return true })
	const n = 40
	// Nobody reads w.snaps meanwhile, so Watch is stuck in publish with
	// the snapshot of the first change, as behind a slow consumer.
	for i := range n {
		w.createNode(nodeSpec{name: fmt.Sprintf("node-%02d", i), rv: fmt.Sprint(10 + i)})
	}
	time.Sleep(200 * time.Millisecond) // let the events reach the informer
	s := w.waitFor("all nodes", func(s *snapshot.Cluster) bool { return len(s.Nodes) == n })
	for i, name := range nodeNames(s) {
		if want := fmt.Sprintf("node-%02d", i); name != want {
			t.Errorf("Nodes[%d] = %s, want %s", i, name, want)
		}
	}
	if s.Self == nil || s.Self.Name != "node-00" {
		t.Errorf("Self = %v, want node-00", s.Self)
	}
	w.mu.Lock()
	published := w.published
	w.mu.Unlock()
	t.Logf("%d node creations gave %d snapshots", n, published)
	// Without coalescing every creation would publish once: n+1 in all.
	if published > n/4 {
		t.Errorf("%d node creations behind a busy consumer gave %d snapshots, want them coalesced into a few", n, published)
	}
}

// When the caches never sync, Watch gives up with ctx and publishes nothing.
func TestWatchCacheNeverSyncs(t *testing.T) {
	client := fake.NewSimpleClientset()
	client.PrependReactor("list", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("injected list failure")
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	var mu sync.Mutex
	published := 0
	go func() {
		done <- Watch(ctx, WatchOptions{Client: client, NodeName: "n", BGPConfig: bgpConfigName, Logger: slog.New(slog.DiscardHandler)},
			func(*snapshot.Cluster) { mu.Lock(); published++; mu.Unlock() })
	}()
	select {
	case err := <-done:
		t.Fatalf("Watch returned %v before ctx ended", err)
	case <-time.After(200 * time.Millisecond):
	}
	cancel()
	select {
	case err := <-done:
		if err == nil || !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "did not sync") {
			t.Errorf("Watch = %v, want a 'did not sync' error wrapping context.Canceled", err)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("Watch did not return within %v of ctx cancel", waitTimeout)
	}
	mu.Lock()
	defer mu.Unlock()
	if published != 0 {
		t.Errorf("publish called %d times, want 0", published)
	}
}

func TestNodeFrom(t *testing.T) {
	tests := []struct {
		desc     string
		node     nodeSpec
		want     snapshot.Node
		wantWarn []string
	}{
		{
			desc: "empty",
			node: nodeSpec{name: "n"},
			want: snapshot.Node{Name: "n"},
		},
		{
			desc: "internal IPs in order, others ignored",
			node: nodeSpec{name: "n", labels: map[string]string{"a": "b"}, addrs: []corev1.NodeAddress{
				external("198.51.100.1"),
				internal("fd00::1"),
				{Type: corev1.NodeHostName, Address: "n"},
				{Type: corev1.NodeInternalDNS, Address: "n.cluster.local"},
				internal("10.0.0.1"),
				{Type: corev1.NodeExternalDNS, Address: "n.example.com"},
				internal("10.0.0.2"),
			}},
			want: snapshot.Node{Name: "n", Labels: map[string]string{"a": "b"}, InternalIPs: []netip.Addr{
				netip.MustParseAddr("fd00::1"), netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"),
			}},
		},
		{
			desc:     "bad internal IP skipped",
			node:     nodeSpec{name: "n", addrs: []corev1.NodeAddress{internal("10.0.0.256"), internal("10.0.0.1")}},
			want:     snapshot.Node{Name: "n", InternalIPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}},
			wantWarn: []string{"ignoring node address", "10.0.0.256"},
		},
		{
			desc: "podCIDRs preferred over podCIDR",
			node: nodeSpec{name: "n", podCIDR: "10.1.0.0/24", podCIDRs: []string{"10.2.0.0/24", "fd00:2::/64"}},
			want: snapshot.Node{Name: "n", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/24"), netip.MustParsePrefix("fd00:2::/64")}},
		},
		{
			desc: "podCIDR fallback",
			node: nodeSpec{name: "n", podCIDR: "10.1.0.0/24"},
			want: snapshot.Node{Name: "n", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}},
		},
		{
			desc: "host bits masked",
			node: nodeSpec{name: "n", podCIDRs: []string{"10.2.0.7/24"}},
			want: snapshot.Node{Name: "n", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/24")}},
		},
		{
			desc:     "invalid pod CIDR skipped",
			node:     nodeSpec{name: "n", podCIDRs: []string{"10.2.0.0", "10.3.0.0/24"}},
			want:     snapshot.Node{Name: "n", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.3.0.0/24")}},
			wantWarn: []string{"ignoring pod CIDR", "10.2.0.0"},
		},
		{
			desc:     "invalid singular podCIDR skipped",
			node:     nodeSpec{name: "n", podCIDR: "garbage"},
			want:     snapshot.Node{Name: "n"},
			wantWarn: []string{"ignoring pod CIDR", "garbage"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			got := nodeFrom(tc.node.obj(), log)
			if diff := cmp.Diff(tc.want, got, addrCmp); diff != "" {
				t.Errorf("nodeFrom (-want +got):\n%s", diff)
			}
			for _, w := range tc.wantWarn {
				if !strings.Contains(logs.String(), w) {
					t.Errorf("log %q does not mention %q", logs.String(), w)
				}
			}
			if len(tc.wantWarn) == 0 && logs.Len() != 0 {
				t.Errorf("unexpected log output: %s", logs.String())
			}
		})
	}
}

func TestParseConfigMap(t *testing.T) {
	cfg, err := testBGPWatch().parseConfigMap(bgpConfigMap("1", validConfig))
	if err != nil || cfg == nil || len(cfg.Peers) != 1 {
		t.Fatalf("testBGPWatch().parseConfigMap(valid) = %+v, %v; want one peer", cfg, err)
	}
	_, err = testBGPWatch().parseConfigMap(configMap(bgpConfigName, "1", nil))
	if err == nil || err.Error() != `configmap kube-system/bgp-config has no key "config.yaml"` {
		t.Errorf("testBGPWatch().parseConfigMap(no data) error = %v", err)
	}
	// An empty document is a valid config with no peers.
	cfg, err = testBGPWatch().parseConfigMap(bgpConfigMap("1", ""))
	if err != nil || cfg == nil || len(cfg.Peers) != 0 {
		t.Errorf("testBGPWatch().parseConfigMap(empty) = %+v, %v; want an empty config", cfg, err)
	}
}

// An agent restarted while the ConfigMap holds a rejected edit runs the
// last good configuration an earlier run saved; a deleted ConfigMap
// forgets it.
func TestWatchLastGoodSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	good := "peers:\n- peer-address: 10.0.0.1\n  peer-asn: 64512\n  my-asn: 64513\n"
	bad := "peers:\n- peer-address: 10.0.0.300\n  peer-asn: 64512\n  my-asn: 64513\n"

	first := fake.NewSimpleClientset(bgpConfigMap("5", good))
	w := startWatchOpts(t, WatchOptions{Client: first, NodeName: "node-a", StateDir: dir})
	w.waitFor("the good config", func(s *snapshot.Cluster) bool { return s.BGP.AppliedVersion == "5" })

	// "Restart": a new watch, the ConfigMap now rejected.
	second := fake.NewSimpleClientset(bgpConfigMap("6", bad))
	w2 := startWatchOpts(t, WatchOptions{Client: second, NodeName: "node-a", StateDir: dir})
	s := w2.waitFor("the rejection", func(s *snapshot.Cluster) bool { return s.BGP.ErrVersion == "6" })
	if s.BGP.Config == nil || s.BGP.AppliedVersion != "5" || firstPeer(s) != "10.0.0.1" {
		t.Errorf("after restart with a rejected config: %+v, want the saved resourceVersion 5 in force", s.BGP)
	}

	// Without a state dir, nothing is remembered.
	third := fake.NewSimpleClientset(bgpConfigMap("6", bad))
	w3 := startWatchOpts(t, WatchOptions{Client: third, NodeName: "node-a"})
	if s := w3.waitFor("the rejection", func(s *snapshot.Cluster) bool { return s.BGP.ErrVersion == "6" }); s.BGP.Config != nil {
		t.Errorf("no state dir, yet a config is in force: %+v", s.BGP)
	}

	w2.deleteCM(bgpConfigName)
	w2.waitFor("the deletion", func(s *snapshot.Cluster) bool { return !s.BGP.Present })
	if _, err := os.Stat(filepath.Join(dir, lastGoodFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("saved config still there after the ConfigMap was deleted: %v", err)
	}
}

// With BGP off (no BGPConfig), no bgp-config is listed or watched, even
// one that exists: the snapshot's BGP section stays zero through its
// edits, nothing is saved for it, and nodes and the ip-masq-agent
// ConfigMap are followed as ever.
func TestWatchWithoutBGP(t *testing.T) {
	dir := t.TempDir()
	masqName := types.NamespacedName{Namespace: "kube-system", Name: "ip-masq-agent"}
	client := fake.NewSimpleClientset(bgpConfigMap("7", validConfig), nodeSpec{name: "node-a", rv: "1"}.obj(),
		configMap(masqName, "8", map[string]string{IPMasqConfigKey: "nonMasqueradeCIDRs: [10.0.0.0/8]\n"}))
	w := runWatch(t, WatchOptions{Client: client, NodeName: "node-a", IPMasqConfig: masqName, StateDir: dir})
	s := w.waitFor("node-a and the ip-masq-agent config", func(s *snapshot.Cluster) bool {
		return s.Self != nil && s.IPMasq.AppliedVersion == "8"
	})
	if diff := cmp.Diff(snapshot.BGPConfig{}, s.BGP); diff != "" {
		t.Errorf("BGP with BGP off (-want +got):\n%s", diff)
	}

	w.updateCM(bgpConfigMap("9", otherConfig))
	w.updateNode(nodeSpec{name: "node-a", rv: "2", labels: map[string]string{"rack": "94"}})
	s = w.waitFor("node-a relabelled", func(s *snapshot.Cluster) bool { return s.Self != nil && s.Self.Labels["rack"] == "94" })
	if diff := cmp.Diff(snapshot.BGPConfig{}, s.BGP); diff != "" {
		t.Errorf("BGP with BGP off after a bgp-config edit (-want +got):\n%s", diff)
	}

	configMapCalls := func() []string {
		var calls []string
		for _, a := range client.Actions() {
			if a.GetResource().Resource != "configmaps" || (a.GetVerb() != "list" && a.GetVerb() != "watch") {
				continue
			}
			var sel string
			switch a := a.(type) {
			case k8stesting.ListAction:
				sel = a.GetListRestrictions().Fields.String()
			case k8stesting.WatchAction:
				sel = a.GetWatchRestrictions().Fields.String()
			}
			calls = append(calls, a.GetVerb()+" "+a.GetNamespace()+" "+sel)
		}
		return calls
	}
	// The reflector opens its watch after the list has been delivered, so
	// the snapshot can be published before the watch call is recorded.
	want := []string{"list kube-system metadata.name=ip-masq-agent", "watch kube-system metadata.name=ip-masq-agent"}
	var watched []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if watched = configMapCalls(); len(watched) >= len(want) || time.Now().After(deadline) {
			break
		}
	}
	if diff := cmp.Diff(want, watched); diff != "" {
		t.Errorf("ConfigMap lists and watches (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(filepath.Join(dir, lastGoodFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a last good bgp-config was saved with BGP off: %v", err)
	}
}

// A Node update that changes nothing the agent reads (a kubelet heartbeat:
// conditions, an external address) publishes nothing: every publish wakes
// every part of the agent.
func TestWatchSkipsUpdatesThatChangeNothing(t *testing.T) {
	spec := nodeSpec{name: "node-a", rv: "1", addrs: []corev1.NodeAddress{internal("10.0.0.1")}, podCIDRs: []string{"10.244.0.0/24"}}
	w := startWatch(t, "node-a", spec.obj())
	w.waitFor("node-a", func(s *snapshot.Cluster) bool { return s.Self != nil })
	w.mu.Lock()
	before := w.published
	w.mu.Unlock()

	heartbeat := spec
	heartbeat.rv = "2"
	heartbeat.addrs = append(heartbeat.addrs, external("203.0.113.7"))
	w.updateNode(heartbeat)
	time.Sleep(200 * time.Millisecond) // let the informer deliver it

	labelled := heartbeat
	labelled.rv, labelled.labels = "3", map[string]string{"rack": "94"}
	w.updateNode(labelled)
	w.waitFor("the label", func(s *snapshot.Cluster) bool { return s.Self != nil && s.Self.Labels["rack"] == "94" })
	w.mu.Lock()
	defer w.mu.Unlock()
	if got := w.published - before; got != 1 {
		t.Errorf("a heartbeat and a label change gave %d snapshots, want 1 (the label's)", got)
	}
}

func testBGPWatch() *configWatch[bgpconfig.Config] {
	return &configWatch[bgpconfig.Config]{what: "bgp-config", key: BGPConfigKey, parse: bgpconfig.Parse}
}
