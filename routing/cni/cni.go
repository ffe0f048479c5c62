// Package cni renders and writes the CNI configuration that route-agent
// owns on a node: a conflist that gives every pod a veth into the node
// (the reference `ptp` plugin), an address of each family from the node's
// pod CIDRs (`host-local`), and hostPort support (`portmap`). The agent
// routes the pod CIDRs; the container runtime runs these plugins.
//
// The package does not run plugins and links no CNI library: it only
// produces bytes and puts them on disk.
package cni

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
)

// FileName is the conflist the agent owns in the CNI config directory. The
// "10-" prefix sorts it before the usual defaults, since runtimes take the
// first file in lexical order.
const FileName = "10-route-agent.conflist"

// NetworkName is the conflist's network name. host-local keeps its
// reservations under <dataDir>/<NetworkName>.
const NetworkName = "route-agent"

// Version is the CNI spec version of the conflist: the newest that both
// libcni and Debian's containernetworking-plugins 1.1.1 support (their
// VERSION answer lists 0.1.0 to 1.0.0).
const Version = "1.0.0"

// Config is what the conflist is made of.
type Config struct {
	// PodCIDRs is every spec.podCIDRs entry of the node, both families, in
	// the Node's order.
	PodCIDRs []netip.Prefix
	// MTU of the pods' interfaces; 0 leaves it unset and the plugin uses
	// the node-side link's. Tunnels set it.
	MTU int
	// IPAMDataDir is where host-local keeps its reservations; empty means
	// the plugin's default, /var/lib/cni/networks. Tests and the lab point
	// it at a directory of their own.
	IPAMDataDir string
}

// The conflist's JSON. Structs, not maps, keep the key order fixed, so the
// same Config gives the same bytes.
type confList struct {
	CNIVersion string   `json:"cniVersion"`
	Name       string   `json:"name"`
	Plugins    []plugin `json:"plugins"`
}

type plugin struct {
	Type         string          `json:"type"`
	IPMasq       *bool           `json:"ipMasq,omitempty"`
	MTU          int             `json:"mtu,omitempty"`
	IPAM         *ipam           `json:"ipam,omitempty"`
	Capabilities map[string]bool `json:"capabilities,omitempty"`
}

type ipam struct {
	Type    string        `json:"type"`
	DataDir string        `json:"dataDir,omitempty"`
	Ranges  [][]ipamRange `json:"ranges"`
	Routes  []ipamRoute   `json:"routes"`
}

type ipamRange struct {
	Subnet string `json:"subnet"`
}

type ipamRoute struct {
	Dst string `json:"dst"`
}

// Conflist renders the CNI config list for c: `ptp` (no masquerade: the
// agent decides that; mtu when set) with `host-local` IPAM, then `portmap`
// with the portMappings capability.
//
// host-local gets one range set per address family, holding that family's
// pod CIDRs in order. Kubernetes allows one pod CIDR per family, so this is
// one range set per pod CIDR, and a dual-stack pod gets one address of
// each family; were a family to have two CIDRs, a pod would still get one
// address of it, from the first CIDR with room. Default routes are added for
// the families present. The output is indented JSON with a trailing newline
// and depends only on c.
func Conflist(c Config) ([]byte, error) {
	if len(c.PodCIDRs) == 0 {
		return nil, errors.New("cni: no pod CIDRs: the node has no spec.podCIDRs yet")
	}
	if c.MTU < 0 || c.MTU > 65535 || (c.MTU > 0 && c.MTU < 68) {
		return nil, fmt.Errorf("cni: MTU %d out of range (0 for the link's, or 68-65535)", c.MTU)
	}
	var (
		v4, v6 []ipamRange
		order  []bool // families in order of first appearance; true = IPv4
		seen   = map[netip.Prefix]bool{}
	)
	for _, p := range c.PodCIDRs {
		if !p.IsValid() {
			return nil, fmt.Errorf("cni: invalid pod CIDR %q", p)
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("cni: pod CIDR %s has host bits set (the network is %s)", p, p.Masked())
		}
		if p.Addr().Is4In6() {
			return nil, fmt.Errorf("cni: pod CIDR %s is an IPv4-mapped IPv6 prefix", p)
		}
		// host-local keeps the first address for the gateway (the node's
		// end of every pod's veth) and needs at least one more.
		if p.Bits() > p.Addr().BitLen()-2 {
			return nil, fmt.Errorf("cni: pod CIDR %s is too small for pods", p)
		}
		if seen[p] {
			return nil, fmt.Errorf("cni: pod CIDR %s listed twice", p)
		}
		seen[p] = true
		r := ipamRange{Subnet: p.String()}
		if p.Addr().Is4() {
			if v4 == nil {
				order = append(order, true)
			}
			v4 = append(v4, r)
		} else {
			if c.MTU > 0 && c.MTU < 1280 {
				return nil, fmt.Errorf("cni: MTU %d is below IPv6's minimum of 1280, and pod CIDR %s is IPv6", c.MTU, p)
			}
			if v6 == nil {
				order = append(order, false)
			}
			v6 = append(v6, r)
		}
	}
	im := &ipam{Type: "host-local", DataDir: c.IPAMDataDir}
	for _, is4 := range order {
		if is4 {
			im.Ranges = append(im.Ranges, v4)
			im.Routes = append(im.Routes, ipamRoute{Dst: "0.0.0.0/0"})
		} else {
			im.Ranges = append(im.Ranges, v6)
			im.Routes = append(im.Routes, ipamRoute{Dst: "::/0"})
		}
	}
	noMasq := false
	cl := confList{
		CNIVersion: Version,
		Name:       NetworkName,
		Plugins: []plugin{
			{Type: "ptp", IPMasq: &noMasq, MTU: c.MTU, IPAM: im},
			{Type: "portmap", Capabilities: map[string]bool{"portMappings": true}},
		},
	}
	b, err := json.MarshalIndent(cl, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Write makes dir/FileName hold exactly data. A new content goes to a
// temporary file in dir (a dot file without a CNI extension, so no runtime
// loads it), is fsynced, made mode 0644 and renamed over the old file, so
// a runtime reading the directory sees the old file or the new one, never a
// part. When the file already holds data, Write does nothing and reports
// changed=false. It touches no other file in dir. It creates dir (0755) if
// missing.
func Write(dir string, data []byte) (changed bool, err error) {
	path := filepath.Join(dir, FileName)
	old, err := os.ReadFile(path)
	switch {
	case err == nil && bytes.Equal(old, data):
		return false, nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return false, fmt.Errorf("cni: reading %s: %w", path, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("cni: creating the CNI config directory for %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, "."+FileName+".tmp")
	if err != nil {
		return false, fmt.Errorf("cni: writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o644); err != nil {
		return false, fmt.Errorf("cni: writing %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return false, fmt.Errorf("cni: writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return false, fmt.Errorf("cni: writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return false, fmt.Errorf("cni: writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return false, fmt.Errorf("cni: replacing %s: %w", path, err)
	}
	// The rename is durable once the directory is synced. The file is in
	// place either way, so a failure here is not worth reporting.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return true, nil
}

// Remove deletes dir/FileName if it is there (route-agent cleanup).
func Remove(dir string) error {
	path := filepath.Join(dir, FileName)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cni: removing %s: %w", path, err)
	}
	return nil
}
