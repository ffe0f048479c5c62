package lbipam

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"

	"routeagent.io/route-agent/bgp/config"
	"routeagent.io/route-agent/bgp/lbipam/allocator"
)

const testPoolsYAML = `
address-pools:
- name: default
  protocol: bgp
  avoid-buggy-ips: true
  addresses: [192.0.2.0/28, "2001:db8::/64"]
- name: gold
  protocol: bgp
  auto-assign: false
  addresses: [192.0.2.128/25]
`

func testPools(t testing.TB) []config.Pool {
	t.Helper()
	cfg, err := config.Parse([]byte(testPoolsYAML))
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Pools
}

func quietLogger() *slog.Logger {
	return slog.New(slog.DiscardHandler)
}

// harness drives reconcile directly: one term whose cache is refreshed
// from the fake API server before each step, as an informer would be.
type harness struct {
	t       *testing.T
	ctx     context.Context
	client  *fake.Clientset
	c       *Controller
	term    *term
	indexer cache.Indexer
	rec     *record.FakeRecorder
}

func newHarness(t *testing.T, pools []config.Pool, inForce bool, objs ...*corev1.Service) *harness {
	t.Helper()
	h := &harness{t: t, ctx: t.Context(), client: fake.NewClientset(), rec: record.NewFakeRecorder(1000)}
	for _, o := range objs {
		h.create(o)
	}
	c, err := New(h.client, Options{Namespace: "kube-system", Identity: "node-a", Recorder: h.rec, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	h.c = c
	if pools != nil || !inForce {
		c.SetPools(pools, inForce)
	}
	h.indexer = cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	h.refresh()
	queue := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	t.Cleanup(queue.ShutDown)
	h.term = &term{alloc: allocator.New(), queue: queue, lister: corelisters.NewServiceLister(h.indexer)}
	if err := c.restore(h.ctx, h.term); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *harness) create(svc *corev1.Service) {
	h.t.Helper()
	if svc.CreationTimestamp.IsZero() {
		svc.CreationTimestamp = metav1.NewTime(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	}
	if _, err := h.client.CoreV1().Services(svc.Namespace).Create(h.t.Context(), svc, metav1.CreateOptions{}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) update(svc *corev1.Service) {
	h.t.Helper()
	if _, err := h.client.CoreV1().Services(svc.Namespace).Update(h.ctx, svc, metav1.UpdateOptions{}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) delete(name string) {
	h.t.Helper()
	if err := h.client.CoreV1().Services("ns").Delete(h.ctx, name, metav1.DeleteOptions{}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) refresh() {
	h.t.Helper()
	list, err := h.client.CoreV1().Services("").List(h.ctx, metav1.ListOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	var objs []any
	for i := range list.Items {
		objs = append(objs, &list.Items[i])
	}
	if err := h.indexer.Replace(objs, ""); err != nil {
		h.t.Fatal(err)
	}
}

// reconcile runs reconcile for each name and returns the Events sent.
func (h *harness) reconcile(names ...string) []string {
	h.t.Helper()
	for _, n := range names {
		h.refresh()
		if err := h.c.reconcile(h.ctx, h.term, "ns/"+n); err != nil {
			h.t.Fatalf("reconcile ns/%s: %v", n, err)
		}
	}
	return h.events()
}

func (h *harness) events() []string {
	var out []string
	for {
		select {
		case e := <-h.rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func (h *harness) get(name string) *corev1.Service {
	h.t.Helper()
	svc, err := h.client.CoreV1().Services("ns").Get(h.ctx, name, metav1.GetOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	return svc
}

// ingress returns the status addresses of each named Service.
func (h *harness) ingress(names ...string) map[string]string {
	out := map[string]string{}
	for _, n := range names {
		out[n] = addrText(ingressAddrs(h.get(n)))
	}
	return out
}

func withStatus(addrs ...string) func(*corev1.Service) {
	return func(s *corev1.Service) {
		for _, a := range addrs {
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: a})
		}
	}
}

func TestReconcileAssignsAndWritesStatus(t *testing.T) {
	h := newHarness(t, testPools(t), true,
		lbService("a"),
		lbService("b", annotate(AnnotationPoolMetalLB, "gold")),
		lbService("c", annotate(AnnotationPool, "gold")),
		lbService("d", func(s *corev1.Service) {
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
			s.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicyPreferDualStack)
		}),
		lbService("e", func(s *corev1.Service) { s.Spec.LoadBalancerClass = ptr.To("example.com/other") }),
		lbService("f", func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeClusterIP }),
		lbService("g", func(s *corev1.Service) { s.Spec.LoadBalancerClass = ptr.To(Class) }),
		lbService("h", annotate(AnnotationSharedMetalLB, "k"), func(s *corev1.Service) { s.Spec.LoadBalancerIP = "192.0.2.1" }),
	)
	events := h.reconcile("a", "b", "c", "d", "e", "f", "g", "h")
	want := map[string]string{
		"a": "192.0.2.1", "b": "192.0.2.128", "c": "192.0.2.129", "d": "192.0.2.2,2001:db8::",
		"e": "", "f": "", "g": "192.0.2.3",
		"h": "",
	}
	if diff := cmp.Diff(want, h.ingress("a", "b", "c", "d", "e", "f", "g", "h")); diff != "" {
		t.Errorf("status addresses (-want +got):\n%s", diff)
	}
	wantEvents := []string{
		`Normal IPAllocated Assigned IP 192.0.2.1 from pool "default"`,
		`Normal IPAllocated Assigned IP 192.0.2.128 from pool "gold"`,
		`Normal IPAllocated Assigned IP 192.0.2.129 from pool "gold"`,
		`Normal IPAllocated Assigned IP 192.0.2.2,2001:db8:: from pool "default"`,
		`Normal IPAllocated Assigned IP 192.0.2.3 from pool "default"`,
		`Warning AllocationFailed Failed to allocate IP for "ns/h": address 192.0.2.1 is in use by ns/a, which does not allow sharing`,
	}
	if diff := cmp.Diff(wantEvents, events); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	// A resync changes nothing and repeats no Event.
	if got := h.reconcile("a", "b", "c", "d", "e", "f", "g", "h"); len(got) != 0 {
		t.Errorf("events on resync: %q", got)
	}
	st := h.c.Status()
	if !st.ConfigInForce {
		t.Error("Status: config not in force")
	}
	var pending []string
	for _, s := range st.Services {
		if s.Pending != "" {
			pending = append(pending, s.Service+": "+string(s.Reason))
		}
	}
	if diff := cmp.Diff([]string{"ns/h: AddressInUse"}, pending); diff != "" {
		t.Errorf("pending services (-want +got):\n%s", diff)
	}
}

func TestReconcileFailures(t *testing.T) {
	h := newHarness(t, testPools(t), true,
		lbService("unknown", annotate(AnnotationPool, "platinum")),
		lbService("outside", annotate(AnnotationIPs, "10.0.0.1")),
		lbService("bad", annotate(AnnotationIPs, "10.0.0.1/32")),
		lbService("v6only", annotate(AnnotationPool, "gold"), func(s *corev1.Service) {
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
		}),
	)
	events := h.reconcile("unknown", "outside", "bad", "v6only")
	wantEvents := []string{
		`Warning AllocationFailed Failed to allocate IP for "ns/unknown": pool "platinum" does not exist`,
		`Warning AllocationFailed Failed to allocate IP for "ns/outside": requested address 10.0.0.1 is not in any address pool`,
		`Warning AllocationFailed Failed to allocate IP for "ns/bad": annotation routeagent.io/loadBalancerIPs: "10.0.0.1/32": invalid IP address "10.0.0.1/32"`,
		`Warning AllocationFailed Failed to allocate IP for "ns/v6only": pool "gold" has no IPv6 addresses`,
	}
	if diff := cmp.Diff(wantEvents, events); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

func TestReconcileExhaustionAndRelease(t *testing.T) {
	// default has 15 usable IPv4 addresses, .1 to .15: .0 is avoided.
	var svcs []*corev1.Service
	var names []string
	for i := range 16 {
		n := fmt.Sprintf("s%02d", i)
		names = append(names, n)
		svcs = append(svcs, lbService(n))
	}
	h := newHarness(t, testPools(t), true, svcs...)
	events := h.reconcile(names...)
	got := h.ingress(names...)
	if got["s00"] != "192.0.2.1" || got["s14"] != "192.0.2.15" || got["s15"] != "" {
		t.Fatalf("after filling the pool: %v", got)
	}
	if want := `Warning AllocationFailed Failed to allocate IP for "ns/s15": no IPv4 address left in auto-assign pools ["default"]`; events[len(events)-1] != want {
		t.Errorf("last event %q, want %q", events[len(events)-1], want)
	}
	for h.term.queue.Len() > 0 { // drain what restore queued
		k, _ := h.term.queue.Get()
		h.term.queue.Done(k)
	}
	h.delete("s03")
	h.reconcile("s03")
	if k, _ := h.term.queue.Get(); k != "ns/s15" {
		t.Fatalf("queued %q after an address was freed, want the pending ns/s15", k)
	}
	events = h.reconcile("s15")
	if got := h.ingress("s15")["s15"]; got != "192.0.2.4" {
		t.Errorf("s15 got %q after s03 was deleted, want its address 192.0.2.4", got)
	}
	if want := []string{`Normal IPAllocated Assigned IP 192.0.2.4 from pool "default"`}; !slices.Equal(events, want) {
		t.Errorf("events %q, want %q", events, want)
	}
}

func TestReconcileStopsBeingLoadBalancer(t *testing.T) {
	h := newHarness(t, testPools(t), true, lbService("a"), lbService("b"))
	h.reconcile("a")
	svc := h.get("a")
	svc.Spec.Type = corev1.ServiceTypeClusterIP
	h.update(svc)
	h.reconcile("a", "b")
	if diff := cmp.Diff(map[string]string{"a": "", "b": "192.0.2.1"}, h.ingress("a", "b")); diff != "" {
		t.Errorf("status addresses (-want +got):\n%s", diff)
	}
	// A status someone else wrote on a Service that is not ours is
	// left alone.
	h.create(lbService("other", withStatus("198.51.100.1"), func(s *corev1.Service) { s.Spec.LoadBalancerClass = ptr.To("example.com/lb") }))
	h.reconcile("other")
	if got := h.ingress("other")["other"]; got != "198.51.100.1" {
		t.Errorf("foreign status changed to %q", got)
	}
}

func TestReconcilePoolRemovedKeepsAddress(t *testing.T) {
	h := newHarness(t, testPools(t), true, lbService("a", annotate(AnnotationPool, "gold")), lbService("b"))
	h.reconcile("a", "b")
	h.events()
	onlyDefault := testPools(t)[:1]
	h.c.SetPools(onlyDefault, true)
	h.term.alloc.SetPools(onlyDefault) // SetPools reaches only a running term
	events := h.reconcile("a", "b", "a")
	want := []string{`Warning PoolRemoved Pool "gold" is no longer configured: 192.0.2.128 stays assigned until the Service is deleted or stops being a LoadBalancer`}
	if diff := cmp.Diff(want, events); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"a": "192.0.2.128", "b": "192.0.2.1"}, h.ingress("a", "b")); diff != "" {
		t.Errorf("status addresses (-want +got):\n%s", diff)
	}
	st := h.c.Status()
	if len(st.Services) != 2 || !st.Services[0].Orphaned || st.Services[0].Pool != "gold" {
		t.Errorf("Status: %+v", st.Services)
	}
}

func TestReconcileWithoutConfig(t *testing.T) {
	h := newHarness(t, nil, false, lbService("a", withStatus("192.0.2.7")), lbService("b"))
	events := h.reconcile("a", "b")
	want := []string{`Warning AllocationFailed Failed to allocate IP for "ns/b": no bgp-config is in force`}
	if diff := cmp.Diff(want, events); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"a": "192.0.2.7", "b": ""}, h.ingress("a", "b")); diff != "" {
		t.Errorf("status addresses (-want +got):\n%s", diff)
	}
}

func TestReconcileBeforeFirstConfigDoesNothing(t *testing.T) {
	h := newHarness(t, nil, true, lbService("a"))
	if events := h.reconcile("a"); len(events) != 0 {
		t.Errorf("events before any config: %q", events)
	}
	if got := h.ingress("a")["a"]; got != "" {
		t.Errorf("address %q assigned before any config", got)
	}
}

func TestRestoreResolvesConflicts(t *testing.T) {
	old := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	h := newHarness(t, testPools(t), true,
		lbService("young", withStatus("192.0.2.1")),
		lbService("old", withStatus("192.0.2.1"), func(s *corev1.Service) { s.CreationTimestamp = metav1.NewTime(old) }),
		lbService("kept", withStatus("192.0.2.2")),
		lbService("new"),
	)
	events := h.events()
	want := []string{`Warning AddressConflict Address 192.0.2.1 is also held by ns/old, which is older and keeps it (address 192.0.2.1 is in use by ns/old, which does not allow sharing); this Service gets another address`}
	if diff := cmp.Diff(want, events); diff != "" {
		t.Errorf("events at restore (-want +got):\n%s", diff)
	}
	h.reconcile("new", "young", "old", "kept")
	got := h.ingress("young", "old", "kept", "new")
	if diff := cmp.Diff(map[string]string{"old": "192.0.2.1", "kept": "192.0.2.2", "new": "192.0.2.3", "young": "192.0.2.4"}, got); diff != "" {
		t.Errorf("status addresses (-want +got):\n%s", diff)
	}
}

func TestReconcileAdoptsLateStatus(t *testing.T) {
	h := newHarness(t, testPools(t), true)
	// Created after the term re-read the assignments, with a status.
	h.create(lbService("late", withStatus("192.0.2.9")))
	h.create(lbService("next"))
	h.reconcile("next", "late")
	if diff := cmp.Diff(map[string]string{"late": "192.0.2.9", "next": "192.0.2.1"}, h.ingress("late", "next")); diff != "" {
		t.Errorf("status addresses (-want +got):\n%s", diff)
	}
}

// fastElection shortens the Lease periods so that tests take seconds.
func fastElection(c *Controller) {
	c.timing = leaseTiming{duration: 3 * time.Second, renewDeadline: 2 * time.Second, retryPeriod: 100 * time.Millisecond}
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// addresses returns the status addresses of every LoadBalancer Service.
func addresses(t *testing.T, client *fake.Clientset) map[string][]netip.Addr {
	t.Helper()
	list, err := client.CoreV1().Services("").List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]netip.Addr{}
	for i := range list.Items {
		out[list.Items[i].Namespace+"/"+list.Items[i].Name] = ingressAddrs(&list.Items[i])
	}
	return out
}

func allAssigned(t *testing.T, client *fake.Clientset, n int) func() bool {
	return func() bool {
		got := addresses(t, client)
		if len(got) != n {
			return false
		}
		for _, a := range got {
			if len(a) == 0 {
				return false
			}
		}
		return true
	}
}

// distinct fails the test if two Services share an address.
func distinct(t *testing.T, got map[string][]netip.Addr) {
	t.Helper()
	owner := map[netip.Addr]string{}
	for svc, addrs := range got {
		for _, a := range addrs {
			if o, dup := owner[a]; dup {
				t.Errorf("address %s handed out to both %s and %s", a, o, svc)
			}
			owner[a] = svc
		}
	}
}

func countEvents(rec *record.FakeRecorder, reason string) int {
	n := 0
	for {
		select {
		case e := <-rec.Events:
			if strings.Contains(e, " "+reason+" ") {
				n++
			}
		default:
			return n
		}
	}
}

func TestLeaderElectionHandover(t *testing.T) {
	client := fake.NewClientset()
	for i := range 5 {
		if _, err := client.CoreV1().Services("ns").Create(t.Context(), lbService(fmt.Sprintf("s%d", i)), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	type agent struct {
		c      *Controller
		rec    *record.FakeRecorder
		cancel context.CancelFunc
		done   chan error
	}
	var agents []*agent
	for _, node := range []string{"node-a", "node-b"} {
		rec := record.NewFakeRecorder(1000)
		c, err := New(client, Options{Namespace: "kube-system", Identity: node, Recorder: rec, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		fastElection(c)
		c.SetPools(testPools(t), true)
		ctx, cancel := context.WithCancel(t.Context())
		a := &agent{c: c, rec: rec, cancel: cancel, done: make(chan error, 1)}
		go func() { a.done <- c.Run(ctx) }()
		agents = append(agents, a)
	}
	t.Cleanup(func() {
		for _, a := range agents {
			a.cancel()
			<-a.done
		}
	})
	waitFor(t, "the first leader to assign every address", 20*time.Second, allAssigned(t, client, 5))
	var leader, follower *agent
	for _, a := range agents {
		if a.c.Status().Leading {
			leader = a
		} else {
			follower = a
		}
	}
	if leader == nil || follower == nil {
		t.Fatalf("want exactly one leader; leading: %v, %v", agents[0].c.Status().Leading, agents[1].c.Status().Leading)
	}
	if n := countEvents(follower.rec, ReasonIPAllocated); n != 0 {
		t.Errorf("the follower assigned %d addresses", n)
	}
	// The Event follows the status write: wait for it.
	leaderEvents := 0
	waitFor(t, "the leader's 5 IPAllocated events", 5*time.Second, func() bool {
		leaderEvents += countEvents(leader.rec, ReasonIPAllocated)
		return leaderEvents >= 5
	})
	waitFor(t, "the follower to see the leader", 5*time.Second, func() bool {
		return follower.c.Status().Leader == leader.c.opts.Identity
	})
	if st := follower.c.Status(); len(st.Services) != 0 {
		t.Errorf("the follower reports services: %+v", st.Services)
	}
	before := addresses(t, client)
	distinct(t, before)

	leader.cancel()
	if err := <-leader.done; err != nil {
		t.Fatalf("leader Run: %v", err)
	}
	leader.done <- nil // for the cleanup
	waitFor(t, "the follower to take over", 10*time.Second, func() bool { return follower.c.Status().Leading })
	if _, err := client.CoreV1().Services("ns").Create(t.Context(), lbService("s5"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new leader to assign the new Service", 10*time.Second, allAssigned(t, client, 6))
	after := addresses(t, client)
	distinct(t, after)
	for svc, addrs := range before {
		if !slices.Equal(addrs, after[svc]) {
			t.Errorf("%s moved from %v to %v on the change of leader", svc, addrs, after[svc])
		}
	}
	newEvents := 0
	waitFor(t, "the new leader's IPAllocated event", 5*time.Second, func() bool {
		newEvents += countEvents(follower.rec, ReasonIPAllocated)
		return newEvents >= 1
	})
	time.Sleep(200 * time.Millisecond) // room for events that should not come
	if n := newEvents + countEvents(follower.rec, ReasonIPAllocated); n != 1 {
		t.Errorf("the new leader sent %d IPAllocated events, want 1 (for the new Service only)", n)
	}
	if n := countEvents(leader.rec, ReasonIPAllocated); n != 0 {
		t.Errorf("the old leader sent %d IPAllocated events after stepping down", n)
	}
	st := follower.c.Status()
	if st.Leader != follower.c.opts.Identity || len(st.Services) != 6 {
		t.Errorf("new leader's status: leader %q, %d services", st.Leader, len(st.Services))
	}
}

func TestConcurrentCreationGetsDistinctAddresses(t *testing.T) {
	client := fake.NewClientset()
	rec := record.NewFakeRecorder(10000)
	c, err := New(client, Options{Namespace: "kube-system", Identity: "node-a", Recorder: rec, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	fastElection(c)
	c.SetPools(testPools(t), true)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	waitFor(t, "leadership", 10*time.Second, func() bool { return c.Status().Leading })

	// default has 15 addresses and gold 128: 10 and 90 Services fit
	// only if no address is handed out twice.
	const goroutines, each = 10, 10
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				svc := lbService(fmt.Sprintf("g%d-%d", g, i))
				if i > 0 {
					svc.Annotations[AnnotationPoolMetalLB] = "gold"
				}
				if _, err := client.CoreV1().Services("ns").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	waitFor(t, "every Service to get an address", 20*time.Second, allAssigned(t, client, goroutines*each))
	distinct(t, addresses(t, client))
}
