package bgp

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"routeagent.io/route-agent/cluster/snapshot"
)

var (
	sessionUpDesc = prometheus.NewDesc("route_agent_bgp_session_up",
		"1 when the BGP session to the peer is established, else 0.", []string{"peer"}, nil)
	receivedDesc = prometheus.NewDesc("route_agent_bgp_received_paths",
		"Paths the peer sent, per address family.", []string{"peer", "family"}, nil)
	advertisedDesc = prometheus.NewDesc("route_agent_bgp_advertised_paths",
		"Paths the agent sends the peer, per address family.", []string{"peer", "family"}, nil)
	configLoadedDesc = prometheus.NewDesc("route_agent_config_loaded",
		"1 when a valid configuration (bgp-config, ip-masq-agent) is in force.", []string{"configmap"}, nil)
	configStaleDesc = prometheus.NewDesc("route_agent_config_stale",
		"1 when the current content of the configuration ConfigMap (bgp-config, ip-masq-agent) was rejected, so an older one (or none) is in force: alert on this.",
		[]string{"configmap"}, nil)
)

// Collector exports the sessions and the state of the bgp-config at scrape
// time, read from the same state routectl shows.
func (s *Speaker) Collector(snap func() *snapshot.Snapshot) prometheus.Collector {
	return collector{s: s, snap: snap}
}

type collector struct {
	s    *Speaker
	snap func() *snapshot.Snapshot
}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{sessionUpDesc, receivedDesc, advertisedDesc, configLoadedDesc, configStaleDesc} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	// A node without BGP (--bgp-config "") has no speaker, but still the
	// ip-masq-agent config metrics below.
	var peers []PeerStatus
	if c.s != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		if peers, err = c.s.Peers(ctx); err != nil {
			ch <- prometheus.NewInvalidMetric(sessionUpDesc, err)
		}
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
	if s := c.snap(); s.Synced {
		if s.BGP.Source != "" {
			ch <- prometheus.MustNewConstMetric(configLoadedDesc, prometheus.GaugeValue, boolValue(s.BGP.Config != nil), s.BGP.Source)
			ch <- prometheus.MustNewConstMetric(configStaleDesc, prometheus.GaugeValue, boolValue(s.BGP.Err != nil), s.BGP.Source)
		}
		// The ip-masq-agent ConfigMap is rejected and kept the same way;
		// one family of metrics serves both.
		if m := s.IPMasq; m.Source != "" {
			ch <- prometheus.MustNewConstMetric(configLoadedDesc, prometheus.GaugeValue, boolValue(m.Config != nil), m.Source)
			ch <- prometheus.MustNewConstMetric(configStaleDesc, prometheus.GaugeValue, boolValue(m.Err != nil), m.Source)
		}
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
