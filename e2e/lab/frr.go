package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// frrConfig renders the bgpd configuration of a ToR: dynamic neighbours
// for its nodes (it never needs to know them in advance), a session to the
// other ToR, and its connected networks redistributed so that sessions
// across racks find their way.
func frrConfig(r *Router, peer *Router) string {
	var b strings.Builder
	fmt.Fprintf(&b, "frr defaults datacenter\nhostname %s\n", r.Name)
	fmt.Fprintf(&b, "router bgp %d\n", r.ASN)
	fmt.Fprintf(&b, " bgp router-id %s\n", r.Addr)
	b.WriteString(" no bgp ebgp-requires-policy\n no bgp network import-check\n")
	// Helper for the nodes' graceful restart: a crashed agent's routes stay,
	// marked stale, until it is back (its kernel routes stay too).
	b.WriteString(" bgp graceful-restart\n")
	fmt.Fprintf(&b, " neighbor NODES peer-group\n neighbor NODES remote-as %d\n", r.NodeASN)
	if r.NodePassword != "" {
		fmt.Fprintf(&b, " neighbor NODES password %s\n", r.NodePassword)
	}
	for _, p := range r.ListenRanges {
		fmt.Fprintf(&b, " bgp listen range %s peer-group NODES\n", p)
	}
	fmt.Fprintf(&b, " neighbor %s remote-as %d\n", peer.LinkAddr.Addr(), peer.ASN)
	b.WriteString(" address-family ipv4 unicast\n  redistribute connected route-map RA-CONNECTED\n exit-address-family\n")
	// The outside network is connected to tor94 but not advertised: the
	// fabric does not route it to the pods until a test says so.
	fmt.Fprintf(&b, "ip prefix-list RA-OUTSIDE seq 5 permit %s\n", OutsidePrefix)
	b.WriteString("route-map RA-CONNECTED deny 10\n match ip address prefix-list RA-OUTSIDE\nroute-map RA-CONNECTED permit 20\n")
	return b.String()
}

// startFRR runs zebra and bgpd for r inside its namespace. They run as the
// frr user, which is in the frrvty group their vty sockets need.
func (l *Lab) startFRR(ctx context.Context, r, peer *Router) error {
	dir := filepath.Join(l.Dir, r.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	r.VTYDir = dir
	// Routes zebra installs from BGP take the router's segment address as
	// source, as a ToR with a loopback would: its ICMP errors (traceroute's
	// hops) then come from 10.4.83.1, as in seed 004, not from the link
	// between the routers.
	zebraConf := fmt.Sprintf("hostname %s\nroute-map ra-src permit 10\n set src %s\nip protocol bgp route-map ra-src\n", r.Name, r.Addr)
	if err := os.WriteFile(filepath.Join(dir, "zebra.conf"), []byte(zebraConf), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "bgpd.conf"), []byte(frrConfig(r, peer)), 0o644); err != nil {
		return err
	}
	if _, err := run(ctx, "chown", "-R", "frr:frr", dir); err != nil {
		return err
	}
	common := func(daemon string) []string {
		return []string{
			"-f", filepath.Join(dir, daemon+".conf"), "-i", filepath.Join(dir, daemon+".pid"),
			"-z", filepath.Join(dir, "zserv.api"), "--vty_socket", dir, "-u", "frr", "-g", "frr",
			"--log", "file:" + filepath.Join(dir, daemon+".frrlog"),
		}
	}
	zebra, err := l.start(r.NS, "zebra", dir, "/usr/lib/frr/zebra", common("zebra")...)
	if err != nil {
		return err
	}
	// bgpd must find zebra's socket, or it runs without installing routes.
	if err := WaitFor(ctx, 30*time.Second, r.Name+" zebra", func() error {
		if zebra.exited() {
			return Permanent(fmt.Errorf("zebra exited:\n%s", zebra.tail(20)))
		}
		_, err := os.Stat(filepath.Join(dir, "zserv.api"))
		return err
	}); err != nil {
		return err
	}
	bgpd, err := l.start(r.NS, "bgpd", dir, "/usr/lib/frr/bgpd", common("bgpd")...)
	if err != nil {
		return err
	}
	return WaitFor(ctx, 30*time.Second, r.Name+" bgpd", func() error {
		if bgpd.exited() {
			return Permanent(fmt.Errorf("bgpd exited:\n%s", bgpd.tail(20)))
		}
		_, err := r.VTY(ctx, "show bgp summary json")
		return err
	})
}

// VTY runs one vtysh command against r and returns its output.
func (r *Router) VTY(ctx context.Context, command string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, "vtysh", "--vty_socket", r.VTYDir, "-c", command).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("vtysh on %s %q: %w: %s", r.Name, command, err, out)
	}
	return out, nil
}

// VTYJSON runs a vtysh command ending in "json" and decodes its output.
func (r *Router) VTYJSON(ctx context.Context, command string, v any) error {
	out, err := r.VTY(ctx, command)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("decoding %q on %s: %w: %s", command, r.Name, err, out)
	}
	return nil
}

// BGPLog returns bgpd's log of r.
func (r *Router) BGPLog() (string, error) {
	b, err := os.ReadFile(filepath.Join(r.VTYDir, "bgpd.frrlog"))
	return string(b), err
}
