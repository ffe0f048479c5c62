// Command routectl shows what route-agent on this node knows and does.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	apiv1 "routeagent.io/route-agent/api/v1"
	"routeagent.io/route-agent/version"
)

const defaultSocket = "/run/route-agent/agent.sock"

type globals struct {
	socket  string
	timeout time.Duration
	output  string
}

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "routectl",
		Short:         "Inspect the route-agent running on this node",
		Version:       version.String(), // cobra adds --version
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.socket, "socket", envOr("ROUTECTL_SOCKET", defaultSocket), "route-agent API socket; $ROUTECTL_SOCKET, when set, replaces the default")
	pf.DurationVar(&g.timeout, "timeout", 10*time.Second, "how long to wait for the agent")
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table or json")

	bgpCmd := &cobra.Command{Use: "bgp", Short: "BGP sessions and paths"}
	bgpCmd.AddCommand(&cobra.Command{
		Use:   "peers",
		Short: "One row per BGP peer and address family",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.call(cmd, func(ctx context.Context, c apiv1.AgentClient) error {
				r, err := c.ListBGPPeers(ctx, &apiv1.ListBGPPeersRequest{})
				if err != nil {
					return err
				}
				return printPeers(cmd.OutOrStdout(), g.output, r.GetPeers())
			})
		},
	})
	var peer string
	routesCmd := &cobra.Command{
		Use:   "routes advertised|received",
		Short: "Paths sent to or received from the BGP peers",
		Long: `Paths sent to (advertised) or received from (received) each BGP peer.
Advertised paths are shown as the peer gets them: after the agent's export
policy, with the next hop and AS path on the wire. Received paths say what
became of them in the kernel: installed, refused (and why), or not best.`,
		ValidArgs: []string{"advertised", "received"},
		Args:      cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &apiv1.ListBGPRoutesRequest{PeerAddress: peer}
			if args[0] == "received" {
				req.Direction = apiv1.ListBGPRoutesRequest_RECEIVED
			}
			return g.call(cmd, func(ctx context.Context, c apiv1.AgentClient) error {
				r, err := c.ListBGPRoutes(ctx, req)
				if err != nil {
					return err
				}
				return printRoutes(cmd.OutOrStdout(), g.output, r.GetRoutes())
			})
		},
	}
	routesCmd.Flags().StringVar(&peer, "peer", "", "only this peer's paths")
	bgpCmd.AddCommand(routesCmd)
	root.AddCommand(bgpCmd, &cobra.Command{
		Use:   "routes",
		Short: "Every kernel route the agent manages: installed, pending or refused, and why",
		Long: `Every kernel route the agent manages, one line each: the prefix, its next
hop and device, its kind (direct: to a node on this L2 segment; bgp: learned
from a peer), what it is for (the node, or the peer it came from), its state
(installed, pending, refused or failed, with the reason) and since when.
Every installed route carries route protocol 201 (ip route show proto 201).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.call(cmd, func(ctx context.Context, c apiv1.AgentClient) error {
				r, err := c.ListRoutes(ctx, &apiv1.ListRoutesRequest{})
				if err != nil {
					return err
				}
				return printKernelRoutes(cmd.OutOrStdout(), g.output, r.GetRoutes())
			})
		},
	}, &cobra.Command{
		Use:   "status",
		Short: "This node, the configuration in force and its errors",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.call(cmd, func(ctx context.Context, c apiv1.AgentClient) error {
				r, err := c.Status(ctx, &apiv1.StatusRequest{})
				if err != nil {
					return err
				}
				return printStatus(cmd.OutOrStdout(), g.output, r)
			})
		},
	})
	ipmasqCmd := &cobra.Command{Use: "ipmasq", Short: "Pod masquerading: what is not masqueraded"}
	ipmasqCmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "Every destination pod traffic reaches with its own address, and why",
		Long: `Every prefix pod traffic reaches without masquerading, with why it is in the
set: config (the ip-masq-agent ConfigMap's nonMasqueradeCIDRs), default (the
defaults, when the config lists none), link-local, native-routing (the
--ipv4-native-routing-cidr), pod-cidr and node (with the node), bgp (with the
peer that advertised it). Traffic to any other destination leaves with the
node's address.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.call(cmd, func(ctx context.Context, c apiv1.AgentClient) error {
				r, err := c.ListIPMasq(ctx, &apiv1.ListIPMasqRequest{})
				if err != nil {
					return err
				}
				return printIPMasq(cmd.OutOrStdout(), g.output, r)
			})
		},
	})
	natCmd := &cobra.Command{Use: "nat", Short: "Masqueraded flows"}
	natCmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "The translations the eBPF masquerade keeps: pod, node address and port, remote",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.call(cmd, func(ctx context.Context, c apiv1.AgentClient) error {
				r, err := c.ListNAT(ctx, &apiv1.ListNATRequest{})
				if err != nil {
					return err
				}
				return printNAT(cmd.OutOrStdout(), g.output, r)
			})
		},
	})
	root.AddCommand(ipmasqCmd, natCmd, &cobra.Command{
		Use:   "services",
		Short: "LoadBalancer Services: their addresses and pool, and whether this node advertises them, and why not",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.call(cmd, func(ctx context.Context, c apiv1.AgentClient) error {
				r, err := c.ListServices(ctx, &apiv1.ListServicesRequest{})
				if err != nil {
					return err
				}
				return printServices(cmd.OutOrStdout(), g.output, r.GetServices())
			})
		},
	})
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "The version of routectl and of the route-agent it talks to",
		Long: `The version of routectl, then that of the route-agent on this node. When the
agent cannot be reached, routectl still prints its own version, then fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.checkOutput(); err != nil {
				return err
			}
			client := versionOut{Version: version.Version, Commit: version.Commit}
			w := cmd.OutOrStdout()
			if g.output == "table" {
				// Before the call, which may take until --timeout.
				fmt.Fprintf(w, "Client Version: %s\n", version.Format(client.Version, client.Commit))
			}
			var server *versionOut
			err := g.call(cmd, func(ctx context.Context, c apiv1.AgentClient) error {
				r, err := c.Status(ctx, &apiv1.StatusRequest{})
				if err != nil {
					return err
				}
				server = &versionOut{Version: r.GetVersion(), Commit: r.GetCommit()}
				return nil
			})
			if perr := printVersion(w, g.output, client, server); perr != nil {
				return perr
			}
			if err != nil {
				return fmt.Errorf("asking route-agent for its version: %w", err)
			}
			return nil
		},
	})
	return root
}

// checkOutput rejects an --output routectl cannot print.
func (g *globals) checkOutput() error {
	if g.output != "table" && g.output != "json" {
		return fmt.Errorf("--output %q: want table or json", g.output)
	}
	return nil
}

// call connects to the agent and runs f, turning "nobody listens" into a
// message that says what to check.
func (g *globals) call(cmd *cobra.Command, f func(context.Context, apiv1.AgentClient) error) error {
	if err := g.checkOutput(); err != nil {
		return err
	}
	if _, err := os.Stat(g.socket); err != nil {
		return fmt.Errorf("route-agent is not running on this node or uses another socket: %w (set --socket)", err)
	}
	// Dial the path as given: a "unix://" target would be parsed as a URL,
	// mangling relative paths and names with '#', '?' or '%'.
	socket := g.socket
	conn, err := grpc.NewClient("passthrough:///route-agent",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}))
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", g.socket, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
	defer cancel()
	err = f(ctx, apiv1.NewAgentClient(conn))
	if s, ok := status.FromError(err); ok && err != nil {
		switch s.Code() {
		case codes.Unavailable:
			return fmt.Errorf("route-agent is not answering on %s: %s", g.socket, s.Message())
		case codes.DeadlineExceeded:
			return fmt.Errorf("route-agent did not answer within %s on %s", g.timeout, g.socket)
		}
		return errors.New(s.Message())
	}
	return err
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
