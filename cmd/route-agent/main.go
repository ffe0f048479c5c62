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
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"

	"routeagent.io/route-agent/api/server"
	"routeagent.io/route-agent/bgp"
	"routeagent.io/route-agent/bgp/lbipam"
	"routeagent.io/route-agent/cluster"
	"routeagent.io/route-agent/cluster/snapshot"
	"routeagent.io/route-agent/engine"
	"routeagent.io/route-agent/masq"
	"routeagent.io/route-agent/routing"
	"routeagent.io/route-agent/routing/cni"
	"routeagent.io/route-agent/routing/tunnel"
	"routeagent.io/route-agent/version"
)

type options struct {
	nodeName     string
	kubeconfig   string
	socket       string
	bgpConfig    string
	resync       time.Duration
	logLevel     string
	metrics      string
	health       string
	pprof        string
	stateDir     string
	shutdownWait time.Duration

	autoDirect     bool
	installDefault bool
	routingMode    string
	tunnelProtocol string
	tunnelPort     int
	cniConfDir     string
	cniIPAMDir     string
	sysctlDir      string

	masq masqFlags

	lbIPAM bool
	// lbIPAMSet is true when --lb-ipam was given, on the command line or
	// in the environment, rather than left at its default.
	lbIPAMSet bool
	namespace string

	announcePodCIDR bool
	announceLBIP    bool
}

func main() {
	o := options{}
	cmd := &cobra.Command{
		Use:   "route-agent",
		Short: "Routes this node's pod network through the data-centre fabric",
		Long: `route-agent runs on every node. It reads the bgp-config ConfigMap
(MetalLB's schema), peers with the routers whose node-selectors match this
node, and advertises the node's pod CIDRs with the node's InternalIP as next
hop. routectl talks to it over --api-socket.

Every flag can also be set from the environment: --tunnel-protocol is
ROUTE_AGENT_TUNNEL_PROTOCOL; the command line wins.`,
		SilenceUsage: true,
		Args:         cobra.NoArgs,
		Version:      version.String(), // cobra adds --version
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := flagsFromEnv(cmd.Flags()); err != nil {
				return err
			}
			o.lbIPAMSet = given(cmd.Flags(), "lb-ipam")
			return run(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "name of the Node object of this node (default: $NODE_NAME)")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; empty means the in-cluster service account")
	f.StringVar(&o.socket, "api-socket", "/run/route-agent/agent.sock", "unix socket serving the API that routectl uses (created with mode 0600)")
	f.StringVar(&o.bgpConfig, "bgp-config", "kube-system/bgp-config", "namespace/name of the ConfigMap holding the BGP configuration under key "+cluster.BGPConfigKey+`; empty: no BGP on this node (no sessions, no advertised paths, no learned routes, and --lb-ipam defaults to false)`)
	f.DurationVar(&o.resync, "resync-period", 5*time.Minute, "how often every part plans and applies again without a change, repairing drift no event reported")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&o.stateDir, "state-dir", "/run/route-agent", "directory keeping the last good bgp-config, so a restart while the ConfigMap holds a rejected edit keeps it running; empty disables")
	f.StringVar(&o.metrics, "metrics-listen", ":9955", "address serving Prometheus metrics on /metrics (and /healthz, /readyz); empty disables them")
	f.StringVar(&o.pprof, "pprof-listen", "", "address serving Go's profiles on /debug/pprof/ (e.g. 127.0.0.1:6060), for debugging; empty (the default) disables them")
	f.StringVar(&o.health, "health-listen", "127.0.0.1:9956", "address serving the probes /healthz (liveness) and /readyz (readiness); empty disables them")
	f.DurationVar(&o.shutdownWait, "shutdown-timeout", 10*time.Second, "on SIGTERM, how long to wait for API calls in flight and for the BGP speaker's Cease notifications")
	f.BoolVar(&o.autoDirect, "auto-direct-node-routes", true, "route other nodes' pod CIDRs directly to nodes whose address is on-link (same L2 segment)")
	f.StringVar(&o.routingMode, "routing-mode", "native", "native: pod traffic is routed as is (direct routes and the fabric's BGP routes); tunnel: other nodes' pods that no direct route reaches go through a VXLAN/Geneve overlay")
	f.StringVar(&o.tunnelProtocol, "tunnel-protocol", "vxlan", "the overlay of --routing-mode tunnel: vxlan or geneve")
	f.IntVar(&o.tunnelPort, "tunnel-port", 0, "the overlay's UDP port; 0 is the protocol's default (VXLAN 8472, Geneve 6081)")
	f.BoolVar(&o.installDefault, "install-default-route", false, "install a default route learned over BGP (off: the host's own default route is never replaced)")
	f.StringVar(&o.cniConfDir, "cni-conf-dir", "/etc/cni/net.d", "directory to write "+cni.FileName+" into, from this node's pod CIDRs; empty for clusters that bring their own CNI")
	f.StringVar(&o.cniIPAMDir, "cni-ipam-data-dir", "", "host-local IPAM state directory written into the CNI config; empty is the plugin's default (/var/lib/cni/networks)")
	f.StringVar(&o.sysctlDir, "sysctl-dir", "/proc/sys", "the sysctl tree to set forwarding and rp_filter in (a container's /proc/sys is read-only: mount the host's /proc/sys/net elsewhere)")
	o.masq.register(f)
	f.BoolVar(&o.lbIPAM, "lb-ipam", true, "assign LoadBalancer Services addresses from the bgp-config's address-pools (one agent at a time, by leader election on a Lease); off without a --bgp-config, which refuses an explicit --lb-ipam=true")
	f.StringVar(&o.namespace, "namespace", envOr("POD_NAMESPACE", "kube-system"), "the agent's namespace, holding the allocator's Lease and the Secrets a bgp-config peer's password-secret names (default: $POD_NAMESPACE, else kube-system)")
	f.BoolVar(&o.announcePodCIDR, "bgp-announce-pod-cidr", true, "advertise this node's pod CIDRs over BGP (Helm: bgp.announce.podCIDR)")
	f.BoolVar(&o.announceLBIP, "bgp-announce-lb-ip", true, "advertise the LoadBalancer IPs of Services in bgp pools over BGP (Helm: bgp.announce.loadbalancerIP)")
	cmd.AddCommand(cleanupCommand())

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
	// client-go's own messages (a reflector's "forbidden", a watch
	// closing) read like every other line.
	klog.SetSlogLogger(log.With("component", "client-go"))
	if o.nodeName == "" {
		return errors.New("--node-name is empty and $NODE_NAME is not set")
	}
	plan, err := o.planOptions()
	if err != nil {
		return err
	}
	if plan.Tunnel != nil {
		// Fail now, not at the first reconcile: a kernel without the
		// module cannot run this mode at all.
		if err := tunnel.CheckSupport(plan.Tunnel.Protocol); err != nil {
			return err
		}
	}
	masqOpts, masqConfig, err := o.masq.options()
	if err != nil {
		return err
	}
	if !o.masq.enabled() {
		masqConfig = types.NamespacedName{}
	}
	bgpConfigRef, lbIPAM, err := o.bgpOptions()
	if err != nil {
		return err
	}
	restCfg, err := kubeConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	restCfg.UserAgent = "route-agent/" + o.nodeName
	// Every object the agent reads is a built-in type, which the API
	// server also serves as protobuf: listing 10,000 Services and their
	// EndpointSlices decodes several times faster, with less garbage,
	// than as JSON.
	restCfg.ContentType = runtime.ContentTypeProtobuf
	restCfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
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
	defer os.Remove(o.socket)
	log.Info("route-agent starting", "node", o.nodeName, "apiSocket", o.socket, "bgpConfig", o.bgpConfig)
	bgpOn := bgpConfigRef.Name != ""
	if !bgpOn {
		log.Info("BGP is disabled (--bgp-config is empty): no sessions, no advertised paths, no learned routes, and no LoadBalancer address allocation (--lb-ipam), whose pools are the bgp-config's")
	}

	broadcaster := events.NewBroadcaster(&events.EventSinkImpl{Interface: client.EventsV1()})
	if err := broadcaster.StartRecordingToSinkWithContext(ctx); err != nil {
		return fmt.Errorf("starting the event recorder: %w", err)
	}
	defer broadcaster.Shutdown()

	// Every goroutine ends when ctx does; the first error ends them all.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 8)
	fail := func(err error) {
		select {
		case errc <- err:
		default:
		}
	}

	// Without BGP there is no speaker at all: nothing that could open a
	// session or listen.
	var speaker *bgp.Speaker
	if bgpOn {
		// GoBGP's own API socket, private to root, beside routectl's.
		speaker, err = bgp.NewSpeaker(log, filepath.Join(filepath.Dir(o.socket), "gobgp"), fail)
		if err != nil {
			return fmt.Errorf("starting the bgp speaker: %w", err)
		}
	}
	// A marker in --state-dir (a tmpfs: a reboot clears it) says an agent
	// runs; found at start, the last run crashed with its routes in place,
	// so the first sessions announce a graceful restart.
	marker := filepath.Join(o.stateDir, "running")
	switch {
	case o.stateDir == "":
	case !bgpOn:
		// A crashed BGP run's routes go at the first reconcile: none for a
		// later BGP run to announce a graceful restart for.
		if err := os.Remove(marker); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("--state-dir: %w", err)
		}
	default:
		if _, err := os.Stat(marker); err == nil {
			log.Info("the last run did not stop cleanly: announcing a graceful restart to the peers")
			speaker.SetRestarting(true)
		}
		if err := os.WriteFile(marker, nil, 0o600); err != nil {
			return fmt.Errorf("--state-dir: %w", err)
		}
	}
	kernel, err := routing.NewKernel(routing.Options{Logger: log})
	if err != nil {
		return err
	}
	defer kernel.Close()
	tun, err := tunnel.New(tunnel.Options{Logger: log})
	if err != nil {
		return err
	}
	defer tun.Close()
	routes := routing.NewPart(kernel, tun, plan, &routing.Sysctls{Dir: o.sysctlDir, Log: log}, log)

	eng := engine.New(engine.Options{Logger: log, Resync: o.resync})
	eng.Update(func(s *snapshot.Snapshot) {
		s.Announce = snapshot.Announce{PodCIDRsOff: !o.announcePodCIDR, LBIPsOff: !o.announceLBIP}
		s.Secrets.Namespace = o.namespace
		// No peer will ever send a table: the routes an earlier run
		// learned need not wait for one.
		s.LearnedSettled = !bgpOn
	})
	if bgpOn {
		eng.Add(engine.Func("bgp", func(s *snapshot.Snapshot) (bgp.Desired, []string) {
			return bgp.Plan(s, speaker.Global())
		}, speaker.Set))
	}
	eng.Add(routes)
	if o.cniConfDir != "" {
		eng.Add(cni.NewPart(o.cniConfDir, o.cniIPAMDir, routes.MTU, log))
		// New pods must get a new tunnel MTU at once.
		routes.OnMTUChange(func() { eng.Kick("cni") })
	}
	recorder := broadcaster.NewRecorder(scheme.Scheme, "route-agent")
	if bgpOn {
		eng.AddCheck(bgp.ConfigCheck)
		eng.Add(cluster.SecretEventsPart(recorder, bgpConfigRef, o.nodeName))
	}
	var ipam *lbipam.Controller
	if lbIPAM {
		if ipam, err = newLBIPAM(client, o.namespace, o.nodeName, log); err != nil {
			return err
		}
		eng.Add(lbIPAMPart(ipam))
	}
	var masqPart *masq.Part
	if o.masq.enabled() {
		if err := reservePorts(o.sysctlDir, masqOpts.PortMin, masqOpts.PortMax); err != nil {
			return fmt.Errorf("--masquerade-port-range: %w", err)
		}
		dp, closeDP, err := o.masq.datapath(log)
		if err != nil {
			return err
		}
		defer closeDP()
		masqPart = masq.NewPart(dp, masqOpts, o.masq.devices, log)
		eng.Add(masqPart)
	} else if err := o.masq.removeDatapaths(log); err != nil {
		return fmt.Errorf("--enable-ipv4-masquerade=false: %w", err)
	}

	var wg sync.WaitGroup
	goRun := func(f func() error) {
		wg.Go(func() {
			if err := f(); err != nil {
				fail(err)
			}
		})
	}
	goRun(func() error {
		h := &server.Handlers{Engine: eng, Routing: routes}
		if speaker != nil {
			h.Speaker = speaker
		}
		if masqPart != nil {
			h.Masquerade = masqPart
		}
		return server.Serve(ctx, lis, h, o.shutdownWait/2)
	})
	if speaker != nil {
		goRun(func() error { return speaker.WatchSessions(ctx) })
		goRun(func() error {
			return speaker.WatchLearned(ctx, func(l []snapshot.LearnedRoute, settled bool) {
				eng.Update(func(s *snapshot.Snapshot) { s.Learned, s.LearnedSettled = l, settled })
			})
		})
	}
	goRun(func() error { eng.Run(ctx); return nil })
	if ipam != nil {
		goRun(func() error { return ipam.Run(ctx) })
	}
	goRun(func() error {
		return cluster.Watch(ctx, cluster.WatchOptions{
			Client:       client,
			NodeName:     o.nodeName,
			BGPConfig:    bgpConfigRef,
			IPMasqConfig: masqConfig,
			Logger:       log,
			StateDir:     o.stateDir,
			Events:       recorder,
		}, func(c *snapshot.Cluster) {
			eng.Update(func(s *snapshot.Snapshot) { s.Cluster = *c })
		})
	})
	if bgpOn {
		// Only a bgp-config peer's password-secret names a Secret.
		goRun(func() error {
			return cluster.WatchSecrets(ctx, cluster.SecretsOptions{Client: client, Namespace: o.namespace, Logger: log},
				func(sec *snapshot.Secrets) { eng.Update(func(s *snapshot.Snapshot) { s.Secrets = *sec }) })
		})
	}
	if o.metrics != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
			eng.Collector(), routes.Collector(), speaker.Collector(eng.Snapshot))
		if masqPart != nil {
			reg.MustRegister(masqPart.Collector())
		}
		goRun(func() error {
			return server.ServeHTTP(ctx, "--metrics-listen", o.metrics, server.HTTPHandler(reg, eng.Ready))
		})
	}
	if o.pprof != "" {
		goRun(func() error { return server.ServeHTTP(ctx, "--pprof-listen", o.pprof, server.PprofHandler()) })
	}
	if o.health != "" {
		goRun(func() error {
			return server.ServeHTTP(ctx, "--health-listen", o.health, server.HTTPHandler(nil, eng.Ready))
		})
	}

	select {
	case <-ctx.Done():
	case err = <-errc:
		log.Error("route-agent failing", "err", err)
	}
	log.Info("route-agent stopping")
	cancel()
	// Only once nothing can call the speaker any more may it stop, or a
	// late reconcile would start it again. Everything above heeds ctx and
	// the API server's grace is bounded, but a GoBGP call does not heed ctx
	// (after a Fatal it never returns), so the wait is bounded too.
	stopped := make(chan struct{})
	go func() { wg.Wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(o.shutdownWait):
		log.Error("some parts did not stop within --shutdown-timeout; exiting anyway", "timeout", o.shutdownWait)
		if err == nil {
			err = errors.New("shutdown timed out")
		}
	}
	if speaker == nil {
		return err
	}
	stopCtx, stopCancel := context.WithTimeout(context.Background(), o.shutdownWait)
	defer stopCancel()
	if serr := speaker.Stop(stopCtx); serr != nil {
		log.Error("stopping", "err", serr)
	} else if o.stateDir != "" {
		// Cease sent: the peers dropped the routes; the next start is
		// not a restart.
		os.Remove(marker)
	}
	return err
}

// given reports whether a flag was set, on the command line or from its
// environment variable, rather than left at its default.
func given(fs *pflag.FlagSet, name string) bool {
	_, inEnv := os.LookupEnv(envName(name))
	return fs.Changed(name) || inEnv
}

// bgpOptions reads --bgp-config: the ConfigMap to watch, or a zero name
// when it is empty and the node runs without BGP. It also settles
// --lb-ipam, whose pools are the bgp-config's address-pools: without BGP
// its default turns off, while an explicit --lb-ipam=true, which could
// never assign an address, is refused.
func (o options) bgpOptions() (ref types.NamespacedName, lbIPAM bool, err error) {
	if o.bgpConfig == "" {
		if o.lbIPAM && o.lbIPAMSet {
			return ref, false, errors.New(`--lb-ipam=true needs a bgp-config, whose address-pools it assigns from: with --bgp-config "" (no BGP) set --lb-ipam=false`)
		}
		return ref, false, nil
	}
	ns, name, ok := strings.Cut(o.bgpConfig, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return ref, false, fmt.Errorf("--bgp-config %q: want namespace/name, or empty for no BGP", o.bgpConfig)
	}
	return types.NamespacedName{Namespace: ns, Name: name}, o.lbIPAM, nil
}

// planOptions checks the routing flags.
func (o options) planOptions() (routing.PlanOptions, error) {
	p := routing.PlanOptions{AutoDirectNodeRoutes: o.autoDirect, InstallDefaultRoute: o.installDefault}
	switch o.routingMode {
	case "native":
		return p, nil
	case "tunnel":
	default:
		return p, fmt.Errorf("--routing-mode %q: want native or tunnel", o.routingMode)
	}
	proto := tunnel.Protocol(o.tunnelProtocol)
	if proto.DeviceName() == "" {
		return p, fmt.Errorf("--tunnel-protocol %q: want vxlan or geneve", o.tunnelProtocol)
	}
	if o.tunnelPort < 0 || o.tunnelPort > 65535 {
		return p, fmt.Errorf("--tunnel-port %d: want 1-65535, or 0 for the protocol's default", o.tunnelPort)
	}
	p.Tunnel = &routing.TunnelOptions{Protocol: proto, Port: o.tunnelPort, VNI: tunnel.DefaultVNI}
	return p, nil
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

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
