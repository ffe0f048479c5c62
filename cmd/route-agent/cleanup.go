package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"routeagent.io/route-agent/routing"
	"routeagent.io/route-agent/routing/cni"
	"routeagent.io/route-agent/routing/tunnel"
)

// cleanupCommand removes what the agent leaves on a node on purpose: its
// routes stay in the kernel while it is down, so that pods keep talking
// through a rolling update; uninstalling needs them gone.
func cleanupCommand() *cobra.Command {
	var cniConfDir string
	var masqFlags masqFlags
	c := &cobra.Command{
		Use:   "cleanup",
		Short: "Remove everything route-agent installed on this node (for uninstalling)",
		Long: `cleanup removes every kernel route of protocol 201 (the agent's) in every
table, the tunnel devices ra_vxlan and ra_geneve with their FDB and neighbour
entries, the masquerade (the eBPF programs and maps pinned under
--bpf-pin-dir, the nftables table route-agent), and the agent's CNI config
file. Run it on each node after removing
the DaemonSet, for example from a one-off privileged pod on the host
network. It touches nothing else.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			k, err := routing.NewKernel(routing.Options{Logger: log})
			if err != nil {
				return err
			}
			defer k.Close()
			n, err := k.Cleanup(cmd.Context())
			if err != nil {
				return fmt.Errorf("removing routes: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %d routes of protocol %d\n", n, routing.Protocol)
			tun, err := tunnel.New(tunnel.Options{Logger: log})
			if err != nil {
				return err
			}
			defer tun.Close()
			if err := tun.Cleanup(cmd.Context()); err != nil {
				return fmt.Errorf("removing the tunnel devices: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed the tunnel devices %s and %s if present\n", tunnel.VXLANDevice, tunnel.GeneveDevice)
			if err := masqFlags.removeDatapaths(log); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed the masquerade (eBPF pinned in %s, nftables table route-agent) if present\n", masqFlags.pinDir)
			if cniConfDir != "" {
				if err := cni.Remove(cniConfDir); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s/%s\n", cniConfDir, cni.FileName)
			}
			return nil
		},
	}
	c.Flags().StringVar(&cniConfDir, "cni-conf-dir", "/etc/cni/net.d", "the CNI config directory the agent wrote into; empty leaves it alone")
	c.Flags().StringVar(&masqFlags.pinDir, "bpf-pin-dir", "/sys/fs/bpf/route-agent", "where the agent pinned its eBPF masquerade")
	return c
}
