package routing

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
)

// Sysctls keeps the kernel settings native routing needs:
//
//   - net.ipv4.ip_forward = 1 when the node's pods have IPv4 addresses, and
//     net.ipv6.conf.all.forwarding = 1 when they have IPv6 ones (only then:
//     IPv6 forwarding turns off router advertisements the host may rely on);
//   - net.ipv4.conf.<dev>.rp_filter = 2 (loose) where it is 1 (strict), on
//     every device the agent's routes use, so that a packet from a pod on
//     another node that arrives over a path other than the reverse route is
//     not dropped.
type Sysctls struct {
	// Dir is the sysctl tree, /proc/sys; a DaemonSet mounts the host's
	// /proc/sys/net elsewhere because a container's /proc/sys is read-only.
	Dir string
	Log *slog.Logger
}

// Ensure sets what is not set yet, writing nothing that is already right.
func (s *Sysctls) Ensure(v4, v6 bool, devices []string) error {
	var errs []error
	if v4 {
		errs = append(errs, s.set("net/ipv4/ip_forward", "1", nil))
	}
	if v6 {
		errs = append(errs, s.set("net/ipv6/conf/all/forwarding", "1", nil))
	}
	for _, dev := range devices {
		errs = append(errs, s.set("net/ipv4/conf/"+dev+"/rp_filter", "2", []string{"1"}))
	}
	return errors.Join(errs...)
}

// set writes value to key when the current value differs; with only, only
// when the current value is one of those.
func (s *Sysctls) set(key, value string, only []string) error {
	path := filepath.Join(s.Dir, key)
	cur, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading sysctl %s: %w", key, err)
	}
	cur = bytes.TrimSpace(cur)
	if string(cur) == value {
		return nil
	}
	if only != nil && !slices.Contains(only, string(cur)) {
		return nil
	}
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("setting sysctl %s=%s: %w", key, value, err)
	}
	s.Log.Info("sysctl set", "key", key, "from", string(cur), "to", value)
	return nil
}
