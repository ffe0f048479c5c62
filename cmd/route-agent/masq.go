package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/types"

	"routeagent.io/route-agent/bpf/snat"
	"routeagent.io/route-agent/masq"
	"routeagent.io/route-agent/masq/nft"
)

// masqFlags are the masquerade flags, named after the seeds' Helm values
// (enableIPv4Masquerade, bpf.masquerade, devices, ipv4NativeRoutingCIDR,
// ipMasqAgent).
type masqFlags struct {
	ipv4, ipv6       bool
	implementation   string
	devices          []string
	nativeCIDRs      []string
	config           string
	learned          bool
	learnedCommunity string
	portRange        string
	pinDir           string
	natEntries       int
}

func (m *masqFlags) register(f *pflag.FlagSet) {
	f.BoolVar(&m.ipv4, "enable-ipv4-masquerade", true, "masquerade IPv4 pod traffic to destinations outside the routable set behind the node's address")
	f.BoolVar(&m.ipv6, "enable-ipv6-masquerade", false, "masquerade IPv6 pod traffic likewise (iptables implementation only)")
	f.StringVar(&m.implementation, "masquerade-implementation", "bpf", "bpf (eBPF programs on the masquerade devices) or iptables (the same set as nftables rules, for kernels without BPF)")
	f.StringSliceVar(&m.devices, "devices", nil, `masquerade devices, names or prefixes with "+" ("eth+"); empty: the devices of the default routes`)
	f.StringSliceVar(&m.nativeCIDRs, "ipv4-native-routing-cidr", nil, "CIDRs the network routes without NAT (pod addresses reach them as they are)")
	f.StringVar(&m.config, "ip-masq-agent-config", "kube-system/ip-masq-agent", "namespace/name of the ip-masq-agent ConfigMap (key config); empty uses the defaults")
	f.BoolVar(&m.learned, "masquerade-learned-routes", true, "never masquerade to prefixes learned over BGP (never a learned default route)")
	f.StringVar(&m.learnedCommunity, "masquerade-learned-community", "", `only learned prefixes carrying this community ("AA:NN") count as routable; empty: all`)
	f.StringVar(&m.portRange, "masquerade-port-range", "61000-65535", "source ports masqueraded flows get, reserved from the host's own use (net.ipv4.ip_local_reserved_ports)")
	f.StringVar(&m.pinDir, "bpf-pin-dir", "/sys/fs/bpf/route-agent", "where the eBPF maps and links are pinned, so that a restart keeps established flows")
	f.IntVar(&m.natEntries, "bpf-nat-entries", 65536, "flows the eBPF NAT tracks at once (each direction's LRU map)")
}

func (m *masqFlags) enabled() bool { return m.ipv4 || m.ipv6 }

// options checks the flags and returns the part's options and the
// ip-masq-agent ConfigMap to watch.
func (m *masqFlags) options() (masq.Options, types.NamespacedName, error) {
	o := masq.Options{IPv4: m.ipv4, IPv6: m.ipv6, UseLearned: m.learned, LearnedCommunity: m.learnedCommunity}
	var ref types.NamespacedName
	switch m.implementation {
	case "bpf":
		if m.ipv6 {
			return o, ref, errors.New("--enable-ipv6-masquerade: the bpf implementation masquerades IPv4 only; use --masquerade-implementation iptables")
		}
	case "iptables":
	default:
		return o, ref, fmt.Errorf("--masquerade-implementation %q: want bpf or iptables", m.implementation)
	}
	for _, c := range m.nativeCIDRs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return o, ref, fmt.Errorf("--ipv4-native-routing-cidr %q: %w", c, err)
		}
		if p != p.Masked() {
			return o, ref, fmt.Errorf("--ipv4-native-routing-cidr %q: host bits set; did you mean %s?", c, p.Masked())
		}
		o.NativeRoutingCIDRs = append(o.NativeRoutingCIDRs, p)
	}
	if c := m.learnedCommunity; c != "" {
		a, b, ok := strings.Cut(c, ":")
		x, errA := strconv.ParseUint(a, 10, 16)
		y, errB := strconv.ParseUint(b, 10, 16)
		if !ok || errA != nil || errB != nil {
			return o, ref, fmt.Errorf("--masquerade-learned-community %q: want AA:NN, two numbers 0-65535", c)
		}
		o.LearnedCommunity = fmt.Sprintf("%d:%d", x, y)
	}
	lo, hi, ok := strings.Cut(m.portRange, "-")
	pmin, errA := strconv.ParseUint(lo, 10, 16)
	pmax, errB := strconv.ParseUint(hi, 10, 16)
	if !ok || errA != nil || errB != nil || pmin < 1024 || pmin > pmax {
		return o, ref, fmt.Errorf("--masquerade-port-range %q: want MIN-MAX with 1024 <= MIN <= MAX <= 65535", m.portRange)
	}
	o.PortMin, o.PortMax = uint16(pmin), uint16(pmax)
	if m.config != "" {
		ns, name, ok := strings.Cut(m.config, "/")
		if !ok || ns == "" || name == "" {
			return o, ref, fmt.Errorf("--ip-masq-agent-config %q: want namespace/name", m.config)
		}
		ref = types.NamespacedName{Namespace: ns, Name: name}
	}
	if m.natEntries < 1024 {
		return o, ref, fmt.Errorf("--bpf-nat-entries %d: want at least 1024", m.natEntries)
	}
	return o, ref, nil
}

// datapath loads the chosen implementation; close releases it without
// undoing it (pinned eBPF state and nftables rules stay, so a restart
// keeps flows).
func (m *masqFlags) datapath(log *slog.Logger) (dp masq.Datapath, closeFn func(), err error) {
	if m.implementation == "iptables" {
		n, err := nft.New(nft.Options{Logger: log})
		if err != nil {
			return nil, nil, fmt.Errorf("--masquerade-implementation iptables: %w", err)
		}
		// The eBPF datapath of an earlier run would masquerade too.
		if err := snat.Remove(m.pinDir); err != nil {
			log.Warn("removing the eBPF masquerade of an earlier run", "err", err)
		}
		return masq.NewNFTables(n), func() {}, nil
	}
	if err := snat.EnsureBPFFS(filepath.Dir(m.pinDir)); err != nil {
		return nil, nil, fmt.Errorf("--bpf-pin-dir %s: %w", m.pinDir, err)
	}
	d, err := snat.Load(snat.Options{PinDir: m.pinDir, NATEntries: m.natEntries, Logger: log})
	if err != nil {
		return nil, nil, fmt.Errorf("loading the eBPF masquerade: %w", err)
	}
	// The nftables rules of an earlier run would masquerade too.
	if n, err := nft.New(nft.Options{Logger: log}); err == nil {
		if err := n.Remove(); err != nil {
			log.Warn("removing the nftables masquerade of an earlier run", "err", err)
		}
	}
	return masq.NewBPF(d, snat.DefaultIdleTimeouts), func() { d.Close() }, nil
}

// reservePorts adds min-max to net.ipv4.ip_local_reserved_ports under
// sysctlDir, keeping what is there, so that no host socket takes a port
// the masquerade hands out.
func reservePorts(sysctlDir string, min, max uint16) error {
	path := filepath.Join(sysctlDir, "net/ipv4/ip_local_reserved_ports")
	cur, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	want := fmt.Sprintf("%d-%d", min, max)
	have := strings.TrimSpace(string(cur))
	for _, r := range strings.Split(have, ",") {
		if r == want {
			return nil
		}
	}
	if have != "" {
		want = have + "," + want
	}
	if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// removeDatapaths undoes both implementations: masquerading switched off
// must not leave an earlier run's programs or rules translating.
func (m *masqFlags) removeDatapaths(log *slog.Logger) error {
	var errs []error
	if err := snat.Remove(m.pinDir); err != nil {
		errs = append(errs, fmt.Errorf("removing the eBPF masquerade pinned in %s: %w", m.pinDir, err))
	}
	n, err := nft.New(nft.Options{Logger: log})
	if err == nil {
		err = n.Remove()
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("removing the nftables masquerade: %w", err))
	}
	return errors.Join(errs...)
}
