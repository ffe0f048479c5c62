package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

var (
	sessionUpDesc = prometheus.NewDesc("route_agent_bgp_session_up",
		"1 when the BGP session to the peer is established, else 0.", []string{"peer"}, nil)
	receivedDesc = prometheus.NewDesc("route_agent_bgp_received_paths",
		"Paths the peer sent, per address family.", []string{"peer", "family"}, nil)
	advertisedDesc = prometheus.NewDesc("route_agent_bgp_advertised_paths",
		"Paths the agent sends the peer, per address family.", []string{"peer", "family"}, nil)
	configLoadedDesc = prometheus.NewDesc("route_agent_config_loaded",
		"1 when a valid bgp-config is in force.", []string{"configmap"}, nil)
	configStaleDesc = prometheus.NewDesc("route_agent_config_stale",
		"1 when the current bgp-config content was rejected, so an older one (or none) is in force: alert on this.",
		[]string{"configmap"}, nil)
	warningsDesc = prometheus.NewDesc("route_agent_bgp_plan_warnings",
		"Problems the last BGP plan reported (routectl status lists them).", nil, nil)
)

// agentCollector reads the agent's state at scrape time, so the metrics can
// never disagree with routectl.
type agentCollector struct{ a *agent }

func (c agentCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{sessionUpDesc, receivedDesc, advertisedDesc, configLoadedDesc, configStaleDesc, warningsDesc} {
		ch <- d
	}
}

func (c agentCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	peers, err := c.a.speaker.Peers(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(sessionUpDesc, err)
	}
	seen := map[string]bool{}
	for _, p := range peers {
		if !seen[p.PeerAddress] {
			seen[p.PeerAddress] = true
			ch <- prometheus.MustNewConstMetric(sessionUpDesc, prometheus.GaugeValue, boolValue(p.SessionState == "established"), p.PeerAddress)
		}
		ch <- prometheus.MustNewConstMetric(receivedDesc, prometheus.GaugeValue, float64(p.Received), p.PeerAddress, p.Family)
		ch <- prometheus.MustNewConstMetric(advertisedDesc, prometheus.GaugeValue, float64(p.Advertised), p.PeerAddress, p.Family)
	}

	c.a.mu.Lock()
	defer c.a.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(warningsDesc, prometheus.GaugeValue, float64(len(c.a.warnings)))
	if s := c.a.snap; s != nil {
		ch <- prometheus.MustNewConstMetric(configLoadedDesc, prometheus.GaugeValue, boolValue(s.BGP.Config != nil), s.BGP.Source)
		ch <- prometheus.MustNewConstMetric(configStaleDesc, prometheus.GaugeValue, boolValue(s.BGP.Err != nil), s.BGP.Source)
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// serveMetrics serves /metrics on addr until ctx ends.
func serveMetrics(ctx context.Context, addr string, a *agent) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), agentCollector{a})
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--metrics-listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving metrics: %w", err)
	}
	return nil
}
