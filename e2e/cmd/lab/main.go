// Command lab brings up the route-agent lab, shows every agent's BGP peers,
// each ToR's BGP table, every node's routes and a pod's traceroutes to the
// other pods, and tears it all down on Ctrl-C (or at once with --exit).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"routeagent.io/route-agent/e2e/lab"
)

func main() {
	lab.RunReaperIfAsked()
	exit := flag.Bool("exit", false, "tear down right after showing the lab instead of waiting for Ctrl-C")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *exit); err != nil {
		if ctx.Err() != nil {
			// Ctrl-C while coming up: Up tore down what it made.
			fmt.Fprintln(os.Stderr, "lab: interrupted; torn down")
			os.Exit(130)
		}
		fmt.Fprintln(os.Stderr, "lab:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, exit bool) error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	apiserver, err := lab.KubeAPIServer(ctx, root, os.Stdout)
	if err != nil {
		return err
	}
	kubeProxy, err := lab.KubeProxy(ctx, root, os.Stdout)
	if err != nil {
		return err
	}
	l, err := lab.Up(ctx, lab.Options{KubeAPIServer: apiserver, KubeProxy: kubeProxy, RepoRoot: root, Out: os.Stdout})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Printf("tearing down lab %s\n", l.ID)
		if err := l.Down(); err != nil {
			fmt.Fprintln(os.Stderr, "lab: teardown:", err)
		}
	}()
	for _, n := range l.Nodes {
		out, err := l.Routectl(ctx, n, "bgp", "peers")
		if err != nil {
			return err
		}
		fmt.Printf("\n$ routectl bgp peers   # on %s (%s)\n%s", n.Name, n.IP, out)
	}
	for _, r := range l.Routers {
		out, err := r.VTY(ctx, "show bgp ipv4 unicast")
		if err != nil {
			return err
		}
		fmt.Printf("\n$ vtysh -c 'show bgp ipv4 unicast'   # on %s (AS %d)\n%s", r.Name, r.ASN, out)
	}
	for _, n := range l.Nodes {
		out, err := l.Routectl(ctx, n, "routes")
		if err != nil {
			return err
		}
		fmt.Printf("\n$ routectl routes   # on %s\n%s", n.Name, out)
		if out, err = l.NodeExec(ctx, n, "ip", "route", "show", "proto", "201"); err != nil {
			return err
		}
		fmt.Printf("\n$ ip route show proto 201   # on %s\n%s", n.Name, out)
	}
	// A pod on the first node reaches a pod on every other node.
	from := l.Pods[0]
	for _, to := range l.Pods[1:] {
		out, err := l.PodExec(ctx, from, "traceroute", "-n", "-q", "1", "-w", "2", to.IP.String())
		if err != nil {
			return err
		}
		fmt.Printf("\n$ traceroute -n %s   # in pod %s (%s) on %s, to pod %s on %s\n%s", to.IP, from.Name, from.IP, from.Node.Name, to.Name, to.Node.Name, out)
	}
	// Masquerade: the pod reaches the outside host, which cannot route to
	// pods, with its node's address; routectl says why and how.
	out, err := l.PodExec(ctx, from, "traceroute", "-n", "-q", "1", "-w", "2", lab.OutsideIP.String())
	if err != nil {
		return err
	}
	fmt.Printf("\n$ traceroute -n %s   # in pod %s (%s), to the outside host beyond tor94 (masqueraded)\n%s", lab.OutsideIP, from.Name, from.IP, out)
	if err := lab.Echo(ctx, from, lab.OutsideIP, "tcp"); err != nil {
		return err
	}
	fmt.Printf("\n# the outside host's echo responder saw:\n%s\n", l.EchoLog(l.Outside, 1))
	for _, args := range [][]string{{"status"}, {"ipmasq", "list"}, {"nat", "list"}} {
		out, err := l.Routectl(ctx, from.Node, args...)
		if err != nil {
			return err
		}
		fmt.Printf("\n$ routectl %s   # on %s\n%s", strings.Join(args, " "), from.Node.Name, out)
	}
	if exit {
		return nil
	}
	fmt.Printf("\nThe lab is up. Each agent's socket is in %s/<node>/agent.sock, for example:\n", l.Dir)
	fmt.Printf("  routectl --socket %s bgp peers\n", l.Nodes[0].Socket)
	fmt.Printf("  vtysh --vty_socket %s -c 'show bgp summary'\n", l.Routers[0].VTYDir)
	fmt.Printf("  ip netns exec %s ping %s   # from pod %s to pod %s\n", l.Pods[0].NS, l.Pods[len(l.Pods)-1].IP, l.Pods[0].Name, l.Pods[len(l.Pods)-1].Name)
	fmt.Println("Press Ctrl-C to tear it down.")
	<-ctx.Done()
	return nil
}

// repoRoot finds the repository from the working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "e2e", "tools", "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run the lab from inside the route-agent repository")
		}
		dir = parent
	}
}
