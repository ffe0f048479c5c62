//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"routeagent.io/route-agent/e2e/lab"
)

// The lab's agents masquerade into their default --masquerade-port-range.
const natPortMin, natPortMax = 61000, 65535

var echoFrom = regexp.MustCompile(`(tcp|udp) from (\S+)`)

// sourcesSeen returns the sources the outside host's echo responder logged
// for proto since mark lines of its log had been written.
func sourcesSeen(l *lab.Lab, proto string, mark int) []netip.AddrPort {
	return echoSources(l, l.Outside, proto, mark)
}

// echoSources returns the sources p's echo responder logged for proto
// since mark lines of its log had been written.
func echoSources(l *lab.Lab, p *lab.Pod, proto string, mark int) []netip.AddrPort {
	lines := strings.Split(strings.TrimSpace(l.EchoLog(p, 100000)), "\n")
	var out []netip.AddrPort
	for _, line := range lines[min(mark, len(lines)):] {
		m := echoFrom.FindStringSubmatch(line)
		if m == nil || m[1] != proto {
			continue
		}
		if ap, err := netip.ParseAddrPort(m[2]); err == nil {
			out = append(out, ap)
		}
	}
	return out
}

func outsideMark(l *lab.Lab) int { return echoMark(l, l.Outside) }

// echoMark is where p's echo log ends now, for echoSources.
func echoMark(l *lab.Lab, p *lab.Pod) int {
	return len(strings.Split(strings.TrimSpace(l.EchoLog(p, 100000)), "\n"))
}

// checkOutsideSees echoes over proto from pod to the outside host and
// checks the source the outside saw: the node's address with a port of
// the masquerade range when masqueraded, the pod's own otherwise.
func checkOutsideSees(ctx context.Context, t *testing.T, l *lab.Lab, pod *lab.Pod, proto string, masqueraded bool) {
	t.Helper()
	mark := outsideMark(l)
	if err := lab.Echo(ctx, pod, lab.OutsideIP, proto); err != nil {
		t.Errorf("%s from %s to the outside host: %v\n%s", proto, pod.Name, err, l.AgentLog(pod.Node, 20))
		return
	}
	seen := sourcesSeen(l, proto, mark)
	if len(seen) == 0 {
		t.Errorf("%s from %s: the outside host logged no source", proto, pod.Name)
		return
	}
	src := seen[len(seen)-1]
	switch {
	case masqueraded && (src.Addr() != pod.Node.IP || src.Port() < natPortMin || src.Port() > natPortMax):
		t.Errorf("%s from pod %s (%s): the outside saw %s, want %s with a port in %d-%d", proto, pod.Name, pod.IP, src, pod.Node.IP, natPortMin, natPortMax)
	case !masqueraded && src.Addr() != pod.IP:
		t.Errorf("%s from pod %s (%s): the outside saw %s, want the pod's own address", proto, pod.Name, pod.IP, src)
	}
}

type ipmasqEntry struct {
	Prefix  string   `json:"prefix"`
	Reasons []string `json:"reasons"`
}

func ipmasqList(ctx context.Context, l *lab.Lab, n *lab.Node) (map[string][]string, error) {
	out, err := l.Routectl(ctx, n, "ipmasq", "list", "-o", "json")
	if err != nil {
		return nil, err
	}
	var r struct {
		Entries []ipmasqEntry `json:"entries"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("routectl ipmasq list -o json: %w: %s", err, out)
	}
	m := map[string][]string{}
	for _, e := range r.Entries {
		m[e.Prefix] = e.Reasons
	}
	return m, nil
}

// waitIPMasq waits until every node's routable set holds prefix with a
// reason starting with why, or (why "") does not hold it.
func waitIPMasq(ctx context.Context, t *testing.T, l *lab.Lab, nodes []*lab.Node, prefix, why string) time.Duration {
	t.Helper()
	start := time.Now()
	for _, n := range nodes {
		err := lab.WaitFor(ctx, 30*time.Second, fmt.Sprintf("%s's ipmasq list (%s: %q)", n.Name, prefix, why), func() error {
			m, err := ipmasqList(ctx, l, n)
			if err != nil {
				return err
			}
			reasons, ok := m[prefix]
			switch {
			case why == "" && ok:
				return fmt.Errorf("%s still there: %v", prefix, reasons)
			case why != "" && !slices.ContainsFunc(reasons, func(r string) bool { return strings.HasPrefix(r, why) }):
				return fmt.Errorf("%s: %v", prefix, reasons)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return time.Since(start)
}

// Pods reach the outside host, which cannot route to pods, with their
// node's address (TCP, UDP, ping, traceroute); destinations in the
// routable set see the pod's address; routectl explains both.
func TestMasqueradeToTheOutside(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	waitAllRoutes(ctx, t, l)
	for _, n := range l.Nodes {
		pod := podOf(t, l, n)
		checkOutsideSees(ctx, t, l, pod, "tcp", true)
		checkOutsideSees(ctx, t, l, pod, "udp", true)
		if out, err := l.PodExec(ctx, pod, "ping", "-c", "2", "-W", "2", lab.OutsideIP.String()); err != nil {
			t.Errorf("ping from %s to the outside host: %v\n%s", pod.Name, err, out)
		}
		// Each hop's ICMP error comes back through the NAT to the pod.
		out, err := l.PodExec(ctx, pod, "traceroute", "-n", "-w", "2", "-q", "1", "-m", "8", lab.OutsideIP.String())
		if err != nil {
			t.Errorf("traceroute from %s: %v", pod.Name, err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if last := lines[len(lines)-1]; !strings.Contains(last, lab.OutsideIP.String()) || strings.Contains(hops(out), "*") {
			t.Errorf("traceroute from %s did not complete through the NAT:\n%s", pod.Name, out)
		}
		t.Logf("traceroute from %s (%s):\n%s", pod.Name, pod.IP, out)
	}
	// Across the racks, pods see each other's addresses: pod CIDRs are
	// routable.
	a, c := podOf(t, l, l.Nodes[0]), podOf(t, l, l.Nodes[2])
	if err := lab.Echo(ctx, a, c.IP, "tcp"); err != nil {
		t.Fatal(err)
	}
	if log := l.EchoLog(c, 20); !strings.Contains(log, "tcp from "+a.IP.String()+":") {
		t.Errorf("pod %s's echo log does not show pod %s's address:\n%s", c.Name, a.IP, log)
	}

	n := l.Nodes[0]
	m, err := ipmasqList(ctx, l, n)
	if err != nil {
		t.Fatal(err)
	}
	for prefix, why := range map[string]string{
		"10.0.0.0/8": "config", "169.254.0.0/16": "link-local", l.Nodes[2].PodCIDR.String(): "pod-cidr " + l.Nodes[2].Name,
		netip.PrefixFrom(l.Nodes[1].IP, 32).String(): "node " + l.Nodes[1].Name,
	} {
		if !slices.Contains(m[prefix], why) {
			t.Errorf("ipmasq list on %s: %s has reasons %v, want %q", n.Name, prefix, m[prefix], why)
		}
	}
	if _, ok := m[lab.OutsidePrefix.String()]; ok {
		t.Errorf("ipmasq list on %s holds the outside network", n.Name)
	}
	if out, err := l.Routectl(ctx, n, "ipmasq", "list"); err == nil {
		t.Logf("routectl ipmasq list on %s:\n%s", n.Name, out)
	}
	out, err := l.Routectl(ctx, n, "nat", "list")
	if err != nil || !strings.Contains(string(out), lab.OutsideIP.String()) || !strings.Contains(string(out), podOf(t, l, n).IP.String()) {
		t.Errorf("routectl nat list on %s: %v\n%s", n.Name, err, out)
	}
	t.Logf("routectl nat list on %s:\n%s", n.Name, out)
	st, err := l.Routectl(ctx, n, "status")
	if err != nil || !strings.Contains(string(st), "BPF (ip-masq-agent) [eth0]") {
		t.Errorf("routectl status on %s: %v\n%s", n.Name, err, st)
	}
	metrics, err := l.Metrics(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`route_agent_masquerade_packets_total{result="translated"} `, `route_agent_masquerade_packets_total{result="icmp_error_translated"} `,
		`route_agent_config_stale{configmap="kube-system/ip-masq-agent"} 0`, `route_agent_masquerade_routable_prefixes{reason="config"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("%s's metrics have no %q", n.Name, want)
		}
	}
	if strings.Contains(metrics, `route_agent_masquerade_packets_total{result="translated"} 0`) {
		t.Errorf("%s's metrics count no translated packet", n.Name)
	}
}

func hops(b []byte) string {
	// The first line is traceroute's banner; the hops follow.
	_, rest, _ := strings.Cut(string(b), "\n")
	return rest
}

// An edit of the ip-masq-agent ConfigMap and a prefix a ToR starts
// advertising both take effect within seconds, without a restart; a bad
// edit is refused with the field and value named, and the last good set
// stays.
func TestMasqueradeFollowsConfigAndBGP(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	waitAllRoutes(ctx, t, l)
	pod := podOf(t, l, l.Nodes[0])
	// The network starts routing pod addresses to and from the outside.
	if _, err := l.PodExec(ctx, l.Outside, "ip", "route", "add", "10.5.0.0/16", "via", "198.51.100.1"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = l.PodExec(ctx, l.Outside, "ip", "route", "del", "10.5.0.0/16")
		if _, err := l.ApplyIPMasqConfig(ctx, lab.IPMasqConfig); err != nil {
			t.Error(err)
		}
	})

	withOutside := "nonMasqueradeCIDRs:\n- 10.0.0.0/8\n- " + lab.OutsidePrefix.String() + "\nmasqLinkLocal: false\n"
	if _, err := l.ApplyIPMasqConfig(ctx, withOutside); err != nil {
		t.Fatal(err)
	}
	took := waitIPMasq(ctx, t, l, l.Nodes, lab.OutsidePrefix.String(), "config")
	t.Logf("ConfigMap edit in every node's set after %s", took.Round(time.Millisecond))
	checkOutsideSees(ctx, t, l, pod, "tcp", false)
	checkOutsideSees(ctx, t, l, pod, "udp", false)

	// A bad edit: refused, named, and the set above stays.
	rv, err := l.ApplyIPMasqConfig(ctx, "nonMasqueradeCIDRs:\n- 10.0.0.1/8\n")
	if err != nil {
		t.Fatal(err)
	}
	n := l.Nodes[0]
	err = lab.WaitFor(ctx, 30*time.Second, n.Name+" reports the rejection", func() error {
		st, err := l.Routectl(ctx, n, "status")
		if err != nil {
			return err
		}
		if !strings.Contains(string(st), "resourceVersion "+rv+" rejected") || !strings.Contains(string(st), `10.0.0.1/8`) {
			return fmt.Errorf("status:\n%s", st)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	if metrics, err := l.Metrics(ctx, n); err != nil || !strings.Contains(metrics, `route_agent_config_stale{configmap="kube-system/ip-masq-agent"} 1`) {
		t.Errorf("after the rejected edit, %s's metrics do not say the ip-masq-agent config is stale (%v)", n.Name, err)
	}
	if m, err := ipmasqList(ctx, l, n); err != nil || !slices.Contains(m[lab.OutsidePrefix.String()], "config") {
		t.Errorf("after the rejected edit, %s's set lost the last good config: %v %v", n.Name, m, err)
	}
	evs, err := l.Kube.EventsV1().Events("kube-system").List(ctx, metav1.ListOptions{FieldSelector: "regarding.name=ip-masq-agent"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(evs.Items, func(e eventsv1.Event) bool {
		return e.Reason == "InvalidConfig" && strings.Contains(e.Note, "10.0.0.1/8")
	}) {
		t.Errorf("no InvalidConfig Event naming 10.0.0.1/8 on the ip-masq-agent ConfigMap: %d events", len(evs.Items))
	}

	// Back to the lab's config: the outside is masqueraded again.
	if _, err := l.ApplyIPMasqConfig(ctx, lab.IPMasqConfig); err != nil {
		t.Fatal(err)
	}
	waitIPMasq(ctx, t, l, l.Nodes, lab.OutsidePrefix.String(), "")
	checkOutsideSees(ctx, t, l, pod, "tcp", true)

	// tor94 starts advertising the outside network: nobody edits a config,
	// and its traffic keeps the pod's address.
	tor94 := l.Nodes[0].Router
	if err := tor94.VTYArgs(ctx, "-c", "configure terminal", "-c", fmt.Sprintf("router bgp %d", tor94.ASN),
		"-c", "address-family ipv4 unicast", "-c", "network "+lab.OutsidePrefix.String()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = tor94.VTYArgs(context.Background(), "-c", "configure terminal", "-c", fmt.Sprintf("router bgp %d", tor94.ASN),
			"-c", "address-family ipv4 unicast", "-c", "no network "+lab.OutsidePrefix.String())
	})
	took = waitIPMasq(ctx, t, l, l.Nodes, lab.OutsidePrefix.String(), "bgp")
	t.Logf("prefix advertised by tor94 in every node's set after %s", took.Round(time.Millisecond))
	checkOutsideSees(ctx, t, l, pod, "tcp", false)
	if err := tor94.VTYArgs(ctx, "-c", "configure terminal", "-c", fmt.Sprintf("router bgp %d", tor94.ASN),
		"-c", "address-family ipv4 unicast", "-c", "no network "+lab.OutsidePrefix.String()); err != nil {
		t.Fatal(err)
	}
	waitIPMasq(ctx, t, l, l.Nodes, lab.OutsidePrefix.String(), "")
	checkOutsideSees(ctx, t, l, pod, "tcp", true)
}

// A long TCP transfer through the NAT survives a restart of the agent:
// the translations are pinned, and the programs stay attached.
func TestMasqueradeSurvivesAgentRestart(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	waitAllRoutes(ctx, t, l)
	n := l.Nodes[0]
	pod := podOf(t, l, n)
	mark := outsideMark(l)
	var wg sync.WaitGroup
	var moved int
	var terr error
	wg.Go(func() { moved, terr = lab.PacedTransfer(ctx, pod, lab.OutsideIP, 8*time.Second) })
	time.Sleep(2 * time.Second)
	if err := l.StopAgent(n, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := l.StartAgent(ctx, n); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if terr != nil {
		t.Fatalf("the transfer broke across the restart: %v\n%s", terr, l.AgentLog(n, 30))
	}
	seen := sourcesSeen(l, "tcp", mark)
	if len(seen) != 1 || seen[0].Addr() != n.IP {
		t.Errorf("the outside saw %v, want one connection from %s", seen, n.IP)
	}
	t.Logf("%d bytes each way across the restart, from %v", moved, seen)
}

// The same masquerade with --masquerade-implementation iptables
// (nftables rules), for kernels without BPF.
func TestMasqueradeIPTablesMode(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	waitAllRoutes(ctx, t, l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		restartAll(ctx, t, l)
	})
	restartAll(ctx, t, l, "--masquerade-implementation=iptables")
	waitAllRoutes(ctx, t, l)
	for _, n := range l.Nodes {
		pod := podOf(t, l, n)
		err := lab.WaitFor(ctx, 30*time.Second, n.Name+" masquerading with nftables", func() error {
			st, err := l.Routectl(ctx, n, "status")
			if err != nil || !strings.Contains(string(st), "iptables (ip-masq-agent) [eth0]") {
				return fmt.Errorf("status: %v\n%s", err, st)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		checkOutsideSees(ctx, t, l, pod, "tcp", true)
		checkOutsideSees(ctx, t, l, pod, "udp", true)
		if out, err := l.PodExec(ctx, pod, "ping", "-c", "2", "-W", "2", lab.OutsideIP.String()); err != nil {
			t.Errorf("ping from %s to the outside host: %v\n%s", pod.Name, err, out)
		}
		if out, err := l.PodExec(ctx, pod, "traceroute", "-n", "-w", "2", "-q", "1", "-m", "8", lab.OutsideIP.String()); err != nil || strings.Contains(hops(out), "*") {
			t.Errorf("traceroute from %s: %v\n%s", pod.Name, err, out)
		}
	}
	a, c := podOf(t, l, l.Nodes[0]), podOf(t, l, l.Nodes[2])
	if err := lab.Echo(ctx, a, c.IP, "tcp"); err != nil {
		t.Fatal(err)
	}
	if log := l.EchoLog(c, 20); !strings.Contains(log, "tcp from "+a.IP.String()+":") {
		t.Errorf("pod %s's echo log does not show pod %s's address:\n%s", c.Name, a.IP, log)
	}
	if out, err := l.Routectl(ctx, l.Nodes[0], "nat", "list"); err != nil || !strings.Contains(string(out), "conntrack") {
		t.Errorf("routectl nat list in iptables mode: %v\n%s", err, out)
	}
}
