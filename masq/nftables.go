package masq

import (
	"context"
	"time"

	"routeagent.io/route-agent/masq/nft"
)

// NFTables is the nftables datapath (package masq/nft), for kernels
// without BPF: the same routable set as interval sets, and the kernel's
// own masquerade target, whose state is conntrack's.
type NFTables struct{ m *nft.Masq }

// NewNFTables wraps an nftables masquerade.
func NewNFTables(m *nft.Masq) *NFTables { return &NFTables{m: m} }

// Name implements Datapath: the implementation as the flag names it.
func (n *NFTables) Name() string { return "iptables" }

// Apply implements Datapath.
func (n *NFTables) Apply(_ context.Context, d Desired) error {
	c := nft.Config{
		Routable4: d.Set.Prefixes4(), Routable6: d.Set.Prefixes6(), NonMasqSources: d.Set.NonMasqSources,
		LocalPods: d.LocalPods, PortMin: d.PortMin, PortMax: d.PortMax, IPv4: d.IPv4, IPv6: d.IPv6,
	}
	for _, dev := range d.Devices {
		c.Devices = append(c.Devices, dev.Name)
	}
	return n.m.Set(c)
}

// Translations implements Datapath: nil, conntrack holds the state.
func (n *NFTables) Translations() ([]Translation, error) { return nil, nil }

// Collect implements Datapath: conntrack expires its own entries.
func (n *NFTables) Collect(time.Time) (int, error) { return 0, nil }

// Counters implements Datapath: the masquerade rule sees a connection's
// first packet only, so it counts connections.
func (n *NFTables) Counters() (map[string]uint64, error) {
	c, err := n.m.Counters()
	if err != nil {
		return nil, err
	}
	return map[string]uint64{"new_flow": c.IPv4.Packets + c.IPv6.Packets}, nil
}
