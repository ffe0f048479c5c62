package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"time"

	"routeagent.io/route-agent/bpf/snat"
	"routeagent.io/route-agent/e2e/lab"
	"routeagent.io/route-agent/masq/nft"
)

// masqFig measures the masquerade:
//
//   - M1/M2: the egress program's cost per packet (BPF_PROG_TEST_RUN) for
//     an established flow and a new one, with 10, 1,000 and 16,000
//     routable prefixes; the peer figure is the same program passing a
//     packet of the host's own;
//   - M3/M4: TCP throughput (iperf3) and new connections per second from
//     a pod to the outside host through the eBPF NAT, through an iptables
//     chain like ip-masq-agent's (one RETURN per CIDR, then MASQUERADE),
//     and with no NAT at all (the outside routes to the pods), with 11,
//     1,000 and 16,000 CIDRs, all in this run on the same topology.
func masqFig(ctx context.Context, e *env) (rows []row, err error) {
	res, err := snat.Bench(snat.BenchOptions{})
	if err != nil {
		return nil, fmt.Errorf("BPF_PROG_TEST_RUN: %w", err)
	}
	logf("M1/M2: eBPF masquerade per packet:\n%s", res)
	var est, nw, host []string
	var estMin, estMax, new16k time.Duration
	for i, r := range res.Rows {
		est = append(est, fmt.Sprintf("%d: %d ns", r.Routable, r.Established.Nanoseconds()))
		nw = append(nw, fmt.Sprintf("%d: %d ns (in a loop %d ns)", r.Routable, r.NewFlow.Nanoseconds(), r.NewFlowChained.Nanoseconds()))
		host = append(host, fmt.Sprintf("%d ns", r.Host.Nanoseconds()))
		if i == 0 || r.Established < estMin {
			estMin = r.Established
		}
		estMax = max(estMax, r.Established)
		if r.Routable == 16000 {
			new16k = r.NewFlow
		}
	}
	flat := estMin > 0 && float64(estMax-estMin)/float64(estMin) <= 0.2
	rows = append(rows,
		row{id: "M1", what: "eBPF SNAT per packet, established flow, by routable prefixes (peer: a host packet the program passes)",
			agent: strings.Join(est, ", "), peer: strings.Join(host, ", "), ratio: "—",
			goal: "≤ 100 ns, flat ±10%", met: yesNo(estMax <= 100*time.Nanosecond && flat)},
		row{id: "M2", what: "eBPF SNAT per packet, new flow (one timed run each; in the kernel's loop in brackets)",
			agent: strings.Join(nw, ", "), peer: "—", ratio: "—",
			goal: "≤ 200 ns at 16,000", met: yesNo(new16k > 0 && new16k <= 200*time.Nanosecond)})

	more, err := masqTraffic(ctx, e)
	return append(rows, more...), err
}

type natResult struct {
	bps  float64
	rate float64 // connections per second
}

const (
	connCount   = 2000
	connWorkers = 4
)

func masqTraffic(ctx context.Context, e *env) (rows []row, err error) {
	var n *lab.Node
	for _, x := range e.l.Nodes {
		if x.Router != nil && x.Router.Name == "tor94" {
			n = x
			break
		}
	}
	var pod *lab.Pod
	for _, p := range e.l.Pods {
		if p.Node == n {
			pod = p
		}
	}
	if n == nil || pod == nil || e.l.Outside == nil {
		return nil, fmt.Errorf("no rack-94 node with a pod, or no outside host")
	}
	// Tens of thousands of connections to one server within a minute: the
	// pod reuses its own TIME_WAIT ports, as a busy client is set up to,
	// so that its port range is not what the figure measures.
	if out, err := e.l.PodExec(ctx, pod, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"); err != nil {
		return nil, fmt.Errorf("%w: %s", err, out)
	}
	server, err := e.l.StartBackground(e.l.Outside.NS, "iperf3", "--server", "--bind", lab.OutsideIP.String())
	if err != nil {
		return nil, err
	}
	defer server.Stop()
	defer func() {
		// The lab as it was: masquerading on, its config, no chain.
		_ = clearChain(context.WithoutCancel(ctx), n)
		_, _ = e.l.PodExec(context.WithoutCancel(ctx), e.l.Outside, "ip", "route", "del", "10.5.0.0/16")
		_, cerr := e.l.ApplyIPMasqConfig(context.WithoutCancel(ctx), lab.IPMasqConfig)
		if rerr := restartAgents(context.WithoutCancel(ctx), e.l, []*lab.Node{n}, nil); err == nil {
			err = cerr
			if err == nil {
				err = rerr
			}
		}
	}()
	measure := func(what string) (natResult, error) {
		var r natResult
		var bps []float64
		for i := range 3 {
			v, err := iperf(ctx, pod, lab.OutsideIP, 3)
			if err != nil {
				return r, fmt.Errorf("%s: iperf3 run %d: %w", what, i+1, err)
			}
			bps = append(bps, v)
		}
		slices.Sort(bps)
		r.bps = bps[1]
		var rates []float64
		for i := range 3 {
			d, err := lab.ConnRate(ctx, pod, lab.OutsideIP, connCount, connWorkers)
			if err != nil {
				return r, fmt.Errorf("%s: connections, run %d: %w", what, i+1, err)
			}
			rates = append(rates, float64(connCount)/d.Seconds())
		}
		slices.Sort(rates)
		r.rate = rates[1]
		logf("M3/M4 %s: %s, %.0f connections/s", what, gbps(r.bps), r.rate)
		return r, nil
	}

	// No NAT: the agent does not masquerade and the outside routes back.
	if err := restartAgents(ctx, e.l, []*lab.Node{n}, []string{"--enable-ipv4-masquerade=false"}); err != nil {
		return nil, err
	}
	if _, err := e.l.PodExec(ctx, e.l.Outside, "ip", "route", "add", "10.5.0.0/16", "via", "198.51.100.1"); err != nil {
		return nil, err
	}
	none, err := measure("no NAT")
	if err != nil {
		return nil, err
	}
	if _, err := e.l.PodExec(ctx, e.l.Outside, "ip", "route", "del", "10.5.0.0/16"); err != nil {
		return nil, err
	}

	sizes := []int{11, 1000, 16000}
	ipt := map[int]natResult{}
	for _, size := range sizes {
		if err := loadChain(ctx, n, benchCIDRs(size)); err != nil {
			return nil, err
		}
		if ipt[size], err = measure(fmt.Sprintf("iptables chain, %d CIDRs", size)); err != nil {
			return nil, err
		}
	}
	if err := clearChain(ctx, n); err != nil {
		return nil, err
	}

	if err := restartAgents(ctx, e.l, []*lab.Node{n}, nil); err != nil {
		return nil, err
	}
	bpf := map[int]natResult{}
	for _, size := range sizes {
		if err := applyBenchConfig(ctx, e.l, n, size); err != nil {
			return nil, err
		}
		if bpf[size], err = measure(fmt.Sprintf("eBPF, %d CIDRs", size)); err != nil {
			return nil, err
		}
	}

	for _, size := range sizes {
		b, i := bpf[size], ipt[size]
		rows = append(rows, row{
			id: "M3", what: fmt.Sprintf("pod → outside TCP throughput, %d CIDRs: eBPF NAT (peers: iptables ip-masq-agent chain; no NAT)", size),
			agent: gbps(b.bps), peer: "iptables " + gbps(i.bps) + "; no NAT " + gbps(none.bps),
			ratio: fmt.Sprintf("%.2f× no NAT, %.2f× iptables", b.bps/none.bps, b.bps/i.bps),
			goal:  "≥ 0.95× no NAT", met: yesNo(b.bps >= 0.95*none.bps),
		})
	}
	for _, size := range sizes {
		b, i := bpf[size], ipt[size]
		goal, met := "—", "—"
		if size == 16000 {
			goal, met = "≥ 0.9× no NAT", yesNo(b.rate >= 0.9*none.rate)
		}
		rows = append(rows, row{
			id: "M4", what: fmt.Sprintf("pod → outside new TCP connections/s (%d, %d at a time), %d CIDRs: eBPF NAT (peers: iptables chain; no NAT)", connCount, connWorkers, size),
			agent: fmt.Sprintf("%.0f/s", b.rate), peer: fmt.Sprintf("iptables %.0f/s; no NAT %.0f/s", i.rate, none.rate),
			ratio: fmt.Sprintf("%.2f× no NAT, %.2f× iptables", b.rate/none.rate, b.rate/i.rate),
			goal:  goal, met: met,
		})
	}
	return rows, nil
}

// benchCIDRs are n non-masquerade CIDRs that leave the outside network
// out: the cluster's 10/8, then /24s of 100.64.0.0/10.
func benchCIDRs(n int) []netip.Prefix {
	out := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	base := netip.MustParseAddr("100.64.0.0").As4()
	for i := 0; len(out) < n; i++ {
		a := base
		a[1] += byte(i >> 8)
		a[2] = byte(i)
		out = append(out, netip.PrefixFrom(netip.AddrFrom4(a), 24))
	}
	return out
}

func applyBenchConfig(ctx context.Context, l *lab.Lab, n *lab.Node, size int) error {
	var b strings.Builder
	b.WriteString("nonMasqueradeCIDRs:\n")
	for _, p := range benchCIDRs(size) {
		fmt.Fprintf(&b, "- %s\n", p)
	}
	b.WriteString("masqLinkLocal: false\n")
	if _, err := l.ApplyIPMasqConfig(ctx, b.String()); err != nil {
		return err
	}
	return lab.WaitFor(ctx, time.Minute, fmt.Sprintf("%s's routable set with %d CIDRs", n.Name, size), func() error {
		out, err := l.Routectl(ctx, n, "ipmasq", "list", "-o", "json")
		if err != nil {
			return err
		}
		var r struct {
			Entries []struct {
				Reasons []string `json:"reasons"`
			} `json:"entries"`
		}
		if err := json.Unmarshal(out, &r); err != nil {
			return err
		}
		got := 0
		for _, e := range r.Entries {
			if slices.Contains(e.Reasons, "config") {
				got++
			}
		}
		if got != size {
			return fmt.Errorf("%d config prefixes", got)
		}
		return nil
	})
}

// loadChain replaces the node's ip-masq-agent chain with one for cidrs.
func loadChain(ctx context.Context, n *lab.Node, cidrs []netip.Prefix) error {
	if err := clearChain(ctx, n); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", n.NS, "iptables-restore", "--noflush")
	cmd.Stdin = strings.NewReader(nft.IPMasqAgentRules(cidrs, ""))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("iptables-restore in %s: %w: %s", n.Name, err, out)
	}
	return nil
}

// clearChain empties the node's iptables nat table of the chain and its
// jump; nothing else in a lab node uses the iptables nat table.
func clearChain(ctx context.Context, n *lab.Node) error {
	run := func(args ...string) ([]byte, error) {
		return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.NS, "iptables", "-t", "nat"}, args...)...).CombinedOutput()
	}
	if out, err := run("-F", "POSTROUTING"); err != nil {
		return fmt.Errorf("iptables -t nat -F POSTROUTING in %s: %w: %s", n.Name, err, out)
	}
	if _, err := run("-n", "-L", nft.IPMasqAgentChain); err != nil {
		return nil // no chain
	}
	for _, args := range [][]string{{"-F", nft.IPMasqAgentChain}, {"-X", nft.IPMasqAgentChain}} {
		if out, err := run(args...); err != nil {
			return fmt.Errorf("iptables -t nat %v in %s: %w: %s", args, n.Name, err, out)
		}
	}
	return nil
}

// iperf runs one iperf3 stream of secs seconds from pod to addr and
// returns the bits per second received.
func iperf(ctx context.Context, pod *lab.Pod, addr netip.Addr, secs int) (float64, error) {
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	err := lab.WaitFor(ctx, 30*time.Second, "iperf3 from "+pod.Name+" to "+addr.String(), func() error {
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", pod.NS,
			"iperf3", "--client", addr.String(), "--time", fmt.Sprint(secs), "--json").Output()
		if jerr := json.Unmarshal(out, &res); jerr != nil {
			return fmt.Errorf("%v: no result in %.300q: %w", err, out, jerr)
		}
		if res.Error != "" || res.End.SumReceived.BitsPerSecond == 0 {
			return fmt.Errorf("iperf3: %q", res.Error)
		}
		return nil
	})
	return res.End.SumReceived.BitsPerSecond, err
}
