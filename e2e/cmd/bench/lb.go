package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"routeagent.io/route-agent/bgp/lbipam"
	"routeagent.io/route-agent/e2e/bench"
	"routeagent.io/route-agent/e2e/lab"
)

// The LoadBalancer figures (P1, P6, P9) add two FRR routers to the
// benchmark's segment:
//
//	lbtor  10.6.0.3 AS 65100  the ToR both speakers announce to; it passes
//	                          nothing on and installs nothing in its kernel
//	lbfrr  10.6.0.4 AS 65004  the peer speaker: the same prefixes as
//	                          `network` statements
//
// and the bench node's agent (10.6.0.11, AS 65011) peers with lbtor. The
// Services' addresses are /32s of lbRange, in the bgp-config's pool
// "bench" while a figure wants them announced.
var (
	lbTorAddr = netip.MustParseAddr("10.6.0.3")
	lbFRRAddr = netip.MustParseAddr("10.6.0.4")
	lbRange   = netip.MustParsePrefix("10.8.0.0/18")
	// p6NodeRange holds the InternalIPs of P6's Nodes, on no lab segment,
	// and p6PodRange their pod CIDRs.
	p6NodeRange = netip.MustParsePrefix("10.9.0.0/16")
	p6PodRange  = netip.MustParsePrefix("10.128.0.0/9")
)

const (
	lbTorASN    = 65100
	lbFRRASN    = 65004
	lbNamespace = "bench-lb"
	lbPoolName  = "bench"
	// lbLabel marks every object the LoadBalancer figures create.
	lbLabel = "bench.routeagent.io/figure"
	// lbManagedBy is the EndpointSlices' manager, as the EndpointSlice
	// controller's is "endpointslice-controller.k8s.io".
	lbManagedBy = "bench.routeagent.io"
	lbServices  = 10_000
	// lbWorkers is how many API calls are in flight while objects are
	// created or deleted.
	lbWorkers = 32
)

// speakerArgs run the agent without the address allocator: the benchmark
// writes the addresses, and A measures the allocator on its own. On a
// cluster one agent of many allocates.
var speakerArgs = []string{"--lb-ipam=false"}

// lbEnv is the LoadBalancer figures' state, made by the first of them and
// undone by lbClose.
type lbEnv struct {
	tor    *lab.Router
	frr    *lab.FRR
	client kubernetes.Interface
	// racks are the lab's own nodes, whose agents are stopped while the
	// LoadBalancer figures run (see lbEnsure).
	racks []*lab.Node
	// prevConfig is the bgp-config before, restored by lbClose.
	prevConfig string
	// services is how many of the benchmark's Services exist: those of
	// index 0 to services-1.
	services int
	// nodes is how many of P6's Nodes exist.
	nodes int
	pool  bool
	// frrNetworks is true while lbfrr announces the prefixes.
	frrNetworks bool
}

// lbAddr is the address of the benchmark's i-th Service.
func lbAddr(i int) netip.Addr { return nthAddr(lbRange, i) }

func nthAddr(p netip.Prefix, i int) netip.Addr {
	b := p.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(i)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// inLB selects the Services' prefixes.
func inLB(p netip.Prefix) bool { return p.Bits() == 32 && lbRange.Contains(p.Addr()) }

// lbEnsure sets up what the LoadBalancer figures share, once (lbSetup),
// and leaves the bench node's agent running as a speaker (speakerArgs)
// with its session to lbtor.
func lbEnsure(ctx context.Context, e *env) (*lbEnv, error) {
	if e.lb == nil {
		if err := lbSetup(ctx, e); err != nil {
			return e.lb, err
		}
	}
	return e.lb, e.lb.agentArgs(ctx, e, speakerArgs)
}

// lbSetup makes lbtor and lbfrr, peers the bench node with lbtor, and
// stops the lab's rack agents. On two cores, four agents each planning
// 10,000 Services, and two ToRs exchanging them, would take the CPU from
// the one agent under test, which the FRR speaker has to itself; on a
// cluster each agent has its node's CPUs. lbClose undoes it.
func lbSetup(ctx context.Context, e *env) error {
	l := e.l
	lb := &lbEnv{tor: &lab.Router{Name: "lbtor", ASN: lbTorASN, Addr: lbTorAddr, Segment: feedSegment}}
	cm, err := l.Kube.CoreV1().ConfigMaps("kube-system").Get(ctx, "bgp-config", metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading the bgp-config to restore it later: %w", err)
	}
	lb.prevConfig = cm.Data["config.yaml"]
	if lb.client, err = l.BulkClient(); err != nil {
		return err
	}
	// From here on lbClose restores whatever was changed.
	e.lb = lb
	logf("LB: adding lbtor (%s, AS %d) and lbfrr (%s, AS %d) to segment %s", lbTorAddr, lbTorASN, lbFRRAddr, lbFRRASN, feedSegment)
	if lb.tor.NS, err = l.AddHost(ctx, e.seg, lb.tor.Name, lb.tor.Addr); err != nil {
		return err
	}
	// -n: the ToR keeps the routes in its BGP table and installs none, so
	// its kernel work does not take the two cores from the speakers.
	if err := l.StartFRRWith(ctx, lb.tor, lbTorConfig(), "-n"); err != nil {
		return err
	}
	fr := &lab.Router{Name: "lbfrr", ASN: lbFRRASN, Addr: lbFRRAddr, Segment: feedSegment}
	if fr.NS, err = l.AddHost(ctx, e.seg, fr.Name, fr.Addr); err != nil {
		return err
	}
	if lb.frr, err = l.StartFRRDaemons(ctx, fr, lbFRRConfig(false)); err != nil {
		return err
	}
	if _, err := l.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: lbNamespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", lbNamespace, err)
	}
	for _, n := range l.Nodes {
		if n.Router == nil || !l.AgentRunning(n) {
			continue
		}
		logf("LB: stopping the agent on %s for the LoadBalancer figures", n.Name)
		if err := l.StopAgent(n, 15*time.Second); err != nil {
			return err
		}
		lb.racks = append(lb.racks, n)
	}
	if _, err := l.ApplyBGPConfig(ctx, lbBGPConfig(false)); err != nil {
		return err
	}
	return lb.waitSession(ctx, lbFRRAddr, "lbfrr")
}

// lbClose deletes what the LoadBalancer figures made in the API server and
// brings the lab's agents and the bgp-config back as they were. The FRR
// routers and their namespaces go with the lab.
func lbClose(ctx context.Context, e *env) error {
	lb := e.lb
	if lb == nil {
		return nil
	}
	e.lb = nil
	if ctx.Err() != nil {
		return nil // interrupted: the lab's teardown takes its API server, and everything in it, away
	}
	logf("LB: cleaning up: %d Services, %d Nodes; restoring the bgp-config and the agents", lb.services, lb.nodes)
	var errs []error
	if err := lb.setServices(ctx, e, 0); err != nil {
		errs = append(errs, err)
	}
	if err := lb.setNodes(ctx, 0); err != nil {
		errs = append(errs, err)
	}
	if err := e.l.Kube.CoreV1().Namespaces().Delete(ctx, lbNamespace, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("deleting namespace %s: %w", lbNamespace, err))
	}
	if _, err := e.l.ApplyBGPConfig(ctx, lb.prevConfig); err != nil {
		errs = append(errs, err)
	}
	if err := restartAgent(ctx, e.l, e.node, nil); err != nil {
		errs = append(errs, err)
	}
	for _, n := range lb.racks {
		if err := e.l.StartAgent(ctx, n); err != nil {
			errs = append(errs, err)
		}
	}
	for _, n := range lb.racks {
		if err := e.l.WaitEstablished(ctx, n, n.Router, 2*time.Minute); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// lbTorConfig is lbtor's bgpd.conf: FRR's datacenter defaults as on the
// lab's ToRs, both speakers as neighbours, and nothing sent back to either
// (a speaker that heard the other's prefixes would work on them while it
// is measured). No graceful restart: a stopped speaker's routes leave the
// table at once, so that a cold start begins from none.
func lbTorConfig() string {
	var b strings.Builder
	fmt.Fprintf(&b, "frr defaults datacenter\nhostname lbtor\nrouter bgp %d\n bgp router-id %s\n no bgp ebgp-requires-policy\n", lbTorASN, lbTorAddr)
	nbs := []struct {
		addr netip.Addr
		asn  int
	}{{nodeAddr, nodeASN}, {lbFRRAddr, lbFRRASN}}
	for _, nb := range nbs {
		fmt.Fprintf(&b, " neighbor %s remote-as %d\n", nb.addr, nb.asn)
	}
	b.WriteString(" address-family ipv4 unicast\n")
	for _, nb := range nbs {
		fmt.Fprintf(&b, "  neighbor %s route-map BENCH-SINK out\n", nb.addr)
	}
	b.WriteString(" exit-address-family\nroute-map BENCH-SINK deny 10\n")
	return b.String()
}

// lbFRRConfig is lbfrr's bgpd.conf, with the Services' prefixes as
// network statements when networks is true, as MetalLB's FRR mode renders
// its frr.conf.
func lbFRRConfig(networks bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "frr defaults datacenter\nhostname lbfrr\nrouter bgp %d\n bgp router-id %s\n no bgp ebgp-requires-policy\n no bgp network import-check\n", lbFRRASN, lbFRRAddr)
	fmt.Fprintf(&b, " neighbor %s remote-as %d\n address-family ipv4 unicast\n", lbTorAddr, lbTorASN)
	if networks {
		for i := range lbServices {
			fmt.Fprintf(&b, "  network %s/32\n", lbAddr(i))
		}
	}
	b.WriteString(" exit-address-family\n")
	return b.String()
}

// frrNetworksFile writes the vtysh input that adds (or, with no, removes)
// the Services' prefixes on lbfrr in one transaction, as MetalLB's FRR
// mode applies a changed frr.conf (frr-reload runs `vtysh -f` on the
// difference), and returns its path.
func frrNetworksFile(dir string, no bool) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "router bgp %d\n address-family ipv4 unicast\n", lbFRRASN)
	verb := "network"
	if no {
		verb = "no network"
	}
	for i := range lbServices {
		fmt.Fprintf(&b, "  %s %s/32\n", verb, lbAddr(i))
	}
	b.WriteString(" exit-address-family\n")
	path := filepath.Join(dir, "lbfrr-add.vtysh")
	if no {
		path = filepath.Join(dir, "lbfrr-del.vtysh")
	}
	return path, os.WriteFile(path, []byte(b.String()), 0o644)
}

// vtyshFile runs `vtysh -f path` against r.
func vtyshFile(ctx context.Context, r *lab.Router, path string) error {
	out, err := exec.CommandContext(ctx, "vtysh", "--vty_socket", r.VTYDir, "-f", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		return fmt.Errorf("vtysh -f %s on %s: %v: %s", path, r.Name, err, out)
	}
	return nil
}

// lbBGPConfig is the lab's bgp-config with the bench node's peer at lbtor
// and, when pool is true, the pool holding the Services' addresses.
func lbBGPConfig(pool bool) string {
	cfg := fmt.Sprintf(`peers:
- peer-address: %s
  peer-asn: %d
  my-asn: %d
  node-selectors:
  - match-labels:
      %s: %s
`, lbTorAddr, lbTorASN, nodeASN, lab.RouteLabel, nodeLabel) + strings.TrimPrefix(lab.BGPConfig, "peers:\n")
	if pool {
		// The lab's bgp-config ends with its address-pools list.
		cfg += fmt.Sprintf("- name: %s\n  protocol: bgp\n  addresses:\n  - %s\n", lbPoolName, lbRange)
	}
	return cfg
}

// setPool puts the benchmark's pool into the bgp-config or takes it out,
// and returns when it began writing the ConfigMap.
// ensurePool puts the benchmark's pool in the bgp-config or takes it out,
// unless it already is or is not.
func (lb *lbEnv) ensurePool(ctx context.Context, l *lab.Lab, pool bool) error {
	if lb.pool == pool {
		return nil
	}
	_, err := lb.setPool(ctx, l, pool)
	return err
}

func (lb *lbEnv) setPool(ctx context.Context, l *lab.Lab, pool bool) (time.Time, error) {
	t0 := time.Now()
	if _, err := l.ApplyBGPConfig(ctx, lbBGPConfig(pool)); err != nil {
		return t0, err
	}
	lb.pool = pool
	return t0, nil
}

// agentArgs restarts the bench node's agent with args unless it already
// runs with them, and waits for its session to lbtor.
func (lb *lbEnv) agentArgs(ctx context.Context, e *env, args []string) error {
	if e.l.AgentRunning(e.node) && slices.Equal(e.node.AgentArgs, args) {
		return nil
	}
	if err := restartAgent(ctx, e.l, e.node, args); err != nil {
		return err
	}
	return lb.waitSession(ctx, nodeAddr, e.node.Name)
}

// restartAgent stops n's agent (if it runs) and starts it with args.
func restartAgent(ctx context.Context, l *lab.Lab, n *lab.Node, args []string) error {
	if l.AgentRunning(n) {
		if err := l.StopAgent(n, 15*time.Second); err != nil {
			return err
		}
	}
	n.AgentArgs = args
	return l.StartAgent(ctx, n)
}

// torState returns lbtor's session state with the speaker at from and
// how many prefixes it accepted from it.
func (lb *lbEnv) torState(ctx context.Context, from netip.Addr) (string, uint64, error) {
	nb, err := lb.tor.Neighbors(ctx)
	if err != nil {
		return "", 0, err
	}
	n, ok := nb[from.String()]
	if !ok {
		return "", 0, fmt.Errorf("lbtor has no neighbour %s", from)
	}
	return n.BGPState, n.AddressFamily["ipv4Unicast"].AcceptedPrefixCounter, nil
}

// waitSession waits until lbtor's session with the speaker at from is
// established.
func (lb *lbEnv) waitSession(ctx context.Context, from netip.Addr, name string) error {
	return lab.WaitFor(ctx, 2*time.Minute, "lbtor's session with "+name, func() error {
		st, _, err := lb.torState(ctx, from)
		if err != nil {
			return err
		}
		if st != "Established" {
			return fmt.Errorf("state %s", st)
		}
		return nil
	})
}

// waitTor waits until lbtor holds exactly n of the Services' prefixes
// from the speaker at from.
func (lb *lbEnv) waitTor(ctx context.Context, from netip.Addr, n int, timeout time.Duration) error {
	if from == nodeAddr {
		n++ // the agent also announces its node's pod CIDR
	}
	return lab.WaitFor(ctx, timeout, fmt.Sprintf("lbtor to hold %d prefixes from %s", n, from), func() error {
		st, got, err := lb.torState(ctx, from)
		if err != nil {
			return err
		}
		if st != "Established" || got != uint64(n) {
			return fmt.Errorf("session %s, %d prefixes", st, got)
		}
		return nil
	})
}

// waitTorDown waits until lbtor has no session with the speaker at from
// and holds nothing of it.
func (lb *lbEnv) waitTorDown(ctx context.Context, from netip.Addr) error {
	return lab.WaitFor(ctx, time.Minute, fmt.Sprintf("lbtor to drop the session with %s", from), func() error {
		st, got, err := lb.torState(ctx, from)
		if err != nil {
			return err
		}
		if st == "Established" || got != 0 {
			return fmt.Errorf("session %s, %d prefixes", st, got)
		}
		return nil
	})
}

// waitCover waits until the capture shows all lbServices prefixes
// announced (or withdrawn) by the speaker at from, and returns when the
// last one arrived at lbtor.
func waitCover(ctx context.Context, c *bench.Capture, from netip.Addr, withdrawn bool, timeout time.Duration, what string) (time.Time, bench.Coverage, error) {
	deadline := time.Now().Add(timeout)
	lastLog := time.Now()
	for {
		var cov bench.Coverage
		for _, s := range c.Sessions(from, lbTorAddr) {
			sc := s.Cover(inLB, lbServices)
			// A restarted speaker's new session is the one that counts.
			if sc.NAnnounced+sc.NWithdrawn >= cov.NAnnounced+cov.NWithdrawn {
				cov = sc
			}
		}
		at := cov.Announced
		if withdrawn {
			at = cov.Withdrawn
		}
		if !at.IsZero() {
			return at, cov, nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, cov, fmt.Errorf("%s: after %s lbtor had received %d announcements and %d withdrawals of the %d prefixes",
				what, timeout, cov.NAnnounced, cov.NWithdrawn, lbServices)
		}
		if time.Since(lastLog) > 15*time.Second {
			logf("  %s: %d announced, %d withdrawn so far", what, cov.NAnnounced, cov.NWithdrawn)
			lastLog = time.Now()
		}
		// The timestamps are the capture's: polling only decides when to
		// look, and seldom enough to leave the CPU to the speakers.
		select {
		case <-ctx.Done():
			return time.Time{}, cov, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// lbService is the benchmark's i-th Service: a LoadBalancer in the
// benchmark's pool asking for its address, as a user pinning addresses
// would write it, so that an allocator would give it that address and
// nothing else.
func lbService(i int) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Name: lbServiceName(i), Namespace: lbNamespace, Labels: map[string]string{lbLabel: "lb"},
			Annotations: map[string]string{lbipam.AnnotationPool: lbPoolName, lbipam.AnnotationIPs: lbAddr(i).String()},
		},
		Spec: corev1.ServiceSpec{
			Type:                          corev1.ServiceTypeLoadBalancer,
			Ports:                         []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}},
			AllocateLoadBalancerNodePorts: ptr.To(false), // 10,000 would not fit the NodePort range
			ExternalTrafficPolicy:         corev1.ServiceExternalTrafficPolicyCluster,
		},
	}
}

func lbServiceName(i int) string { return fmt.Sprintf("lb-%05d", i) }

// lbEndpointSlice is the i-th Service's EndpointSlice: one ready endpoint,
// a pod address on the bench node.
func lbEndpointSlice(i int, node string) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: lbServiceName(i) + "-1", Namespace: lbNamespace,
			Labels: map[string]string{lbLabel: "lb", discoveryv1.LabelServiceName: lbServiceName(i), discoveryv1.LabelManagedBy: lbManagedBy},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{nthAddr(netip.MustParsePrefix("10.5.116.0/24"), 2+i%250).String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
			NodeName:   ptr.To(node),
		}},
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To[int32](8080)}},
	}
}

// setServices makes exactly the Services of index 0 to n-1 exist, each
// with its address written and its EndpointSlice, creating or deleting
// the difference. The bench node's agent is stopped while they are
// created: the API server gets the two cores to itself, and no figure
// times the creation.
func (lb *lbEnv) setServices(ctx context.Context, e *env, n int) error {
	switch {
	case n > lb.services:
		running := e.l.AgentRunning(e.node)
		if running {
			if err := e.l.StopAgent(e.node, 15*time.Second); err != nil {
				return err
			}
		}
		start := time.Now()
		from := lb.services
		err := parallel(ctx, from, n, "creating Services", func(ctx context.Context, i int) error {
			return createService(ctx, lb.client, i)
		})
		// Some may exist even on failure: cleaning up tries them all.
		lb.services = n
		if err != nil {
			return err
		}
		logf("LB: created Services %d to %d (address written, one ready endpoint each) in %s", from, n-1, time.Since(start).Round(time.Millisecond))
		if running {
			if err := e.l.StartAgent(ctx, e.node); err != nil {
				return err
			}
			return lb.waitSession(ctx, nodeAddr, e.node.Name)
		}
	case n < lb.services:
		if _, err := lb.deleteServices(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// deleteServices deletes the Services of index n and above, then their
// EndpointSlices, and returns when the last Service deletion was
// acknowledged.
func (lb *lbEnv) deleteServices(ctx context.Context, n int) (time.Time, error) {
	start := time.Now()
	from := lb.services
	err := parallel(ctx, n, from, "deleting Services", func(ctx context.Context, i int) error {
		err := lb.client.CoreV1().Services(lbNamespace).Delete(ctx, lbServiceName(i), metav1.DeleteOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	})
	last := time.Now()
	if err != nil {
		return last, err
	}
	lb.services = n
	err = parallel(ctx, n, from, "deleting EndpointSlices", func(ctx context.Context, i int) error {
		err := lb.client.DiscoveryV1().EndpointSlices(lbNamespace).Delete(ctx, lbServiceName(i)+"-1", metav1.DeleteOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	})
	logf("LB: deleted Services %d to %d in %s (and their EndpointSlices in %s)", n, from-1, last.Sub(start).Round(time.Millisecond), time.Since(last).Round(time.Millisecond))
	return last, err
}

func createService(ctx context.Context, c kubernetes.Interface, i int) error {
	svcs := c.CoreV1().Services(lbNamespace)
	svc, err := svcs.Create(ctx, lbService(i), metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) { // an earlier attempt got through
		svc, err = svcs.Get(ctx, lbServiceName(i), metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("service %s: %w", lbServiceName(i), err)
	}
	// The API server drops the status on create: the address is written
	// next, as the allocator writes it.
	want := []corev1.LoadBalancerIngress{{IP: lbAddr(i).String()}}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if len(svc.Status.LoadBalancer.Ingress) == 1 && svc.Status.LoadBalancer.Ingress[0].IP == want[0].IP {
			return nil
		}
		svc.Status.LoadBalancer.Ingress = want
		_, err := svcs.UpdateStatus(ctx, svc, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			if fresh, gerr := svcs.Get(ctx, svc.Name, metav1.GetOptions{}); gerr == nil {
				svc = fresh
			}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("status of service %s: %w", svc.Name, err)
	}
	_, err = c.DiscoveryV1().EndpointSlices(lbNamespace).Create(ctx, lbEndpointSlice(i, "bench-node"), metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("endpointslice of service %s: %w", svc.Name, err)
	}
	return nil
}

// p6Node is P6's k-th Node, as a kubelet registers one: the usual labels,
// capacity, conditions, addresses and images, a pod CIDR; no agent runs
// behind it and no peer selects it.
func p6Node(k int) *corev1.Node {
	name := fmt.Sprintf("bench-p6-node-%04d", k)
	ip := nthAddr(p6NodeRange, 1+k)
	podCIDR := netip.PrefixFrom(nthAddr(p6PodRange, k<<8), 24).String()
	now := metav1.Now()
	res := corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("16"), corev1.ResourceMemory: resource.MustParse("64Gi"),
		corev1.ResourcePods: resource.MustParse("110"), corev1.ResourceEphemeralStorage: resource.MustParse("200Gi"),
	}
	var conds []corev1.NodeCondition
	for _, c := range []struct {
		t      corev1.NodeConditionType
		s      corev1.ConditionStatus
		reason string
	}{
		{corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory"},
		{corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure"},
		{corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID"},
		{corev1.NodeReady, corev1.ConditionTrue, "KubeletReady"},
	} {
		conds = append(conds, corev1.NodeCondition{Type: c.t, Status: c.s, Reason: c.reason, Message: "kubelet " + c.reason, LastHeartbeatTime: now, LastTransitionTime: now})
	}
	var images []corev1.ContainerImage
	for j := range 10 {
		images = append(images, corev1.ContainerImage{
			Names:     []string{fmt.Sprintf("registry.example/team%d/app@sha256:%064x", j, k*10+j), fmt.Sprintf("registry.example/team%d/app:v1.%d", j, j)},
			SizeBytes: int64(50+j) << 20,
		})
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			lbLabel: "p6", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
			"beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64",
			"node.kubernetes.io/instance-type": "bench.large", "topology.kubernetes.io/region": "bench",
			"topology.kubernetes.io/zone": fmt.Sprintf("bench-%c", 'a'+k%3),
		}},
		Spec: corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}},
		Status: corev1.NodeStatus{
			Capacity: res, Allocatable: res, Conditions: conds, Images: images,
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip.String()}, {Type: corev1.NodeHostName, Address: name}},
			NodeInfo: corev1.NodeSystemInfo{
				MachineID: fmt.Sprintf("%032x", k), SystemUUID: fmt.Sprintf("%032x", k), BootID: fmt.Sprintf("%032x", k+1),
				KernelVersion: "6.12.0", OSImage: "Debian GNU/Linux 13", ContainerRuntimeVersion: "containerd://2.1.0",
				KubeletVersion: "v1.37.2", OperatingSystem: "linux", Architecture: "amd64",
			},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: 10250}},
		},
	}
}

// setNodes makes exactly P6's Nodes of index 0 to n-1 exist.
func (lb *lbEnv) setNodes(ctx context.Context, n int) error {
	nodes := lb.client.CoreV1().Nodes()
	from := lb.nodes
	start := time.Now()
	switch {
	case n > from:
		lb.nodes = n // some may exist even on failure: cleaning up tries them all
		err := parallel(ctx, from, n, "creating Nodes", func(ctx context.Context, k int) error {
			obj := p6Node(k)
			created, err := nodes.Create(ctx, obj, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				created, err = nodes.Get(ctx, obj.Name, metav1.GetOptions{})
			}
			if err != nil {
				return fmt.Errorf("node %s: %w", obj.Name, err)
			}
			if len(created.Status.Addresses) == 0 { // status dropped on create: set it as the kubelet would
				created.Status = obj.Status
				if _, err := nodes.UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
					return fmt.Errorf("status of node %s: %w", obj.Name, err)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		logf("LB: created Nodes %d to %d in %s", from, n-1, time.Since(start).Round(time.Millisecond))
	case n < from:
		err := parallel(ctx, n, from, "deleting Nodes", func(ctx context.Context, k int) error {
			err := nodes.Delete(ctx, fmt.Sprintf("bench-p6-node-%04d", k), metav1.DeleteOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return err
		})
		if err != nil {
			return err
		}
		logf("LB: deleted Nodes %d to %d in %s", n, from-1, time.Since(start).Round(time.Millisecond))
	}
	lb.nodes = n
	return nil
}

// parallel runs f for every index in [from, to) with lbWorkers calls in
// flight, retrying what the API server turns away while busy, and stops
// at the first error.
func parallel(ctx context.Context, from, to int, what string, f func(context.Context, int) error) error {
	if to <= from {
		return nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next, done atomic.Int64
	next.Store(int64(from))
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(15 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				logf("  %s: %d of %d", what, done.Load(), to-from)
			}
		}
	}()
	var wg sync.WaitGroup
	for range lbWorkers {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= to {
					return
				}
				err := retry.OnError(wait.Backoff{Steps: 8, Duration: 100 * time.Millisecond, Factor: 2, Jitter: 0.1}, transient, func() error {
					return f(ctx, i)
				})
				if err != nil {
					cancel(fmt.Errorf("%s: %w", what, err))
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// transient reports errors of an API server too busy to answer now.
func transient(err error) bool {
	var ne net.Error
	return apierrors.IsTooManyRequests(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) ||
		apierrors.IsInternalError(err) || apierrors.IsServiceUnavailable(err) || errors.As(err, &ne) && ne.Timeout()
}

// milestone is a message of the agent's log whose time tells where a
// figure's time went: the first line of msg logged after a moment,
// holding has when set.
type milestone struct{ label, msg, has string }

// agentTimeline reads the agent's log for milestones logged after since
// and says when each came, relative to since.
func agentTimeline(log string, since time.Time, marks []milestone) string {
	at := make([]time.Time, len(marks))
	for _, line := range strings.Split(log, "\n") {
		var t time.Time
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "time="); ok {
				t, _ = time.Parse(time.RFC3339Nano, v)
				break
			}
		}
		if !t.After(since) {
			continue
		}
		for i, m := range marks {
			if !strings.Contains(line, `msg="`+m.msg+`"`) || !strings.Contains(line, m.has) {
				continue
			}
			if at[i].IsZero() {
				at[i] = t
			}
		}
	}
	var parts []string
	for i, m := range marks {
		if at[i].IsZero() {
			parts = append(parts, m.label+" —")
			continue
		}
		parts = append(parts, fmt.Sprintf("%s +%s", m.label, ms1(at[i].Sub(since))))
	}
	return strings.Join(parts, ", ")
}

// pathMilestones follow the agent from a new bgp-config to its paths: the
// speaker sums a burst of path changes up in one line once it has handed
// them all to GoBGP.
var pathMilestones = []milestone{
	{label: "bgp-config loaded", msg: "bgp-config loaded"},
	{label: "paths handed to GoBGP", msg: "bgp paths changed"},
}

// startMilestones follow the agent from its start to its session.
var startMilestones = []milestone{
	{label: "main", msg: "route-agent starting"},
	{label: "informers", msg: "waiting for informer caches"},
	{label: "bgp-config loaded", msg: "bgp-config loaded"},
	{label: "paths handed to GoBGP", msg: "bgp paths changed"},
	{label: "peer added", msg: "bgp peer added"},
	{label: "established", msg: "bgp session state", has: "state=established"},
}

// agentLogLines is enough of the agent's log for a figure's milestones.
const agentLogLines = 50_000
