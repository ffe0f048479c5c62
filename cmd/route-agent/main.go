// Command route-agent is the node agent: it peers with the top-of-rack
// routers and advertises this node's pod CIDRs.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/events"

	"routeagent.io/route-agent/api/server"
	"routeagent.io/route-agent/bgp"
	"routeagent.io/route-agent/cluster"
)

type options struct {
	nodeName   string
	kubeconfig string
	socket     string
	bgpConfig  string
	resync     time.Duration
	logLevel   string
	metrics    string
	stateDir   string
}

func main() {
	o := options{}
	cmd := &cobra.Command{
		Use:   "route-agent",
		Short: "Routes this node's pod network through the data-centre fabric",
		Long: `route-agent runs on every node. It reads the bgp-config ConfigMap
(MetalLB's schema), peers with the routers whose node-selectors match this
node, and advertises the node's pod CIDRs with the node's InternalIP as next
hop. routectl talks to it over --api-socket.`,
		SilenceUsage: true,
		Args:         cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "name of the Node object of this node (default: $NODE_NAME)")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; empty means the in-cluster service account")
	f.StringVar(&o.socket, "api-socket", "/run/route-agent/agent.sock", "unix socket serving the API that routectl uses (created with mode 0600)")
	f.StringVar(&o.bgpConfig, "bgp-config", "kube-system/bgp-config", "namespace/name of the ConfigMap holding the BGP configuration under key "+cluster.BGPConfigKey)
	f.DurationVar(&o.resync, "resync-period", 5*time.Minute, "how often to plan again from the current state without a change, which also retries anything that failed to apply")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&o.stateDir, "state-dir", "/run/route-agent", "directory keeping the last good bgp-config, so a restart while the ConfigMap holds a rejected edit keeps it running; empty disables")
	f.StringVar(&o.metrics, "metrics-listen", ":9955", "address serving Prometheus metrics on /metrics; empty disables them")

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := cmd.ExecuteContext(ctx); err != nil {
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if o.nodeName == "" {
		return errors.New("--node-name is empty and $NODE_NAME is not set")
	}
	ns, name, ok := strings.Cut(o.bgpConfig, "/")
	if !ok || ns == "" || name == "" {
		return fmt.Errorf("--bgp-config %q: want namespace/name", o.bgpConfig)
	}
	restCfg, err := kubeConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	restCfg.UserAgent = "route-agent/" + o.nodeName
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("creating kubernetes client: %w", err)
	}

	if o.stateDir != "" {
		if err := os.MkdirAll(o.stateDir, 0o700); err != nil {
			return fmt.Errorf("--state-dir: %w", err)
		}
	}
	lis, err := server.Listen(o.socket)
	if err != nil {
		return err
	}
	log.Info("route-agent starting", "node", o.nodeName, "apiSocket", o.socket, "bgpConfig", o.bgpConfig)

	broadcaster := events.NewBroadcaster(&events.EventSinkImpl{Interface: client.EventsV1()})
	if err := broadcaster.StartRecordingToSinkWithContext(ctx); err != nil {
		return fmt.Errorf("starting the event recorder: %w", err)
	}
	defer broadcaster.Shutdown()

	speaker := bgp.NewSpeaker(log)
	a := newAgent(log, speaker)

	// Every goroutine ends when ctx does; the first error ends them all.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 5)
	goRun := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				errc <- err
			}
		}()
	}
	goRun(func() error { return server.Serve(ctx, lis, a) })
	goRun(func() error { return speaker.WatchSessions(ctx) })
	goRun(func() error { return a.reconcileLoop(ctx, o.resync) })
	goRun(func() error {
		return cluster.Watch(ctx, cluster.WatchOptions{
			Client:    client,
			NodeName:  o.nodeName,
			BGPConfig: types.NamespacedName{Namespace: ns, Name: name},
			Logger:    log,
			StateDir:  o.stateDir,
			Events:    broadcaster.NewRecorder(scheme.Scheme, "route-agent"),
		}, a.publish)
	})
	if o.metrics != "" {
		goRun(func() error { return serveMetrics(ctx, o.metrics, a) })
	}

	select {
	case <-ctx.Done():
	case err = <-errc:
		log.Error("route-agent failing", "err", err)
	}
	log.Info("route-agent stopping")
	cancel()
	// Only once nothing can call the speaker any more may it stop, or a
	// late reconcile would start it again.
	wg.Wait()
	stopCtx, stopCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer stopCancel()
	if serr := speaker.Stop(stopCtx); serr != nil {
		log.Error("stopping", "err", serr)
	}
	os.Remove(o.socket)
	return err
}

func kubeConfig(path string) (*rest.Config, error) {
	if path == "" {
		c, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster config (pass --kubeconfig outside a pod): %w", err)
		}
		return c, nil
	}
	c, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig %s: %w", path, err)
	}
	return c, nil
}
