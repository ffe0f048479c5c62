package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"
)

// PeerRow is one row of `routectl bgp peers -o json`.
type PeerRow struct {
	LocalAS       uint32 `json:"localAS"`
	PeerAS        uint32 `json:"peerAS"`
	PeerAddress   string `json:"peerAddress"`
	PeerPort      uint32 `json:"peerPort"`
	SessionState  string `json:"sessionState"`
	UptimeSeconds int64  `json:"uptimeSeconds"`
	Family        string `json:"family"`
	Received      uint64 `json:"received"`
	Advertised    uint64 `json:"advertised"`
}

// Peers returns n's `routectl bgp peers -o json`.
func (l *Lab) Peers(ctx context.Context, n *Node) ([]PeerRow, error) {
	out, err := l.Routectl(ctx, n, "bgp", "peers", "-o", "json")
	if err != nil {
		return nil, err
	}
	var rows []PeerRow
	if err := json.Unmarshal(out, &rows); err != nil {
		return nil, fmt.Errorf("decoding routectl output of %s: %w: %s", n.Name, err, out)
	}
	return rows, nil
}

// FRRNeighbor is the part of FRR's `show bgp neighbors json` the lab reads.
type FRRNeighbor struct {
	RemoteAS      uint32 `json:"remoteAs"`
	LocalAS       uint32 `json:"localAs"`
	BGPState      string `json:"bgpState"`
	AddressFamily map[string]struct {
		AcceptedPrefixCounter uint64 `json:"acceptedPrefixCounter"`
		SentPrefixCounter     uint64 `json:"sentPrefixCounter"`
	} `json:"addressFamilyInfo"`
}

// Neighbors returns r's `show bgp neighbors json`, keyed by address.
func (r *Router) Neighbors(ctx context.Context) (map[string]FRRNeighbor, error) {
	var m map[string]FRRNeighbor
	err := r.VTYJSON(ctx, "show bgp neighbors json", &m)
	return m, err
}

// WaitEstablished waits until n's agent and router r both report their
// session established.
func (l *Lab) WaitEstablished(ctx context.Context, n *Node, r *Router, timeout time.Duration) error {
	return WaitFor(ctx, timeout, fmt.Sprintf("%s's session to %s", n.Name, r.Name), func() error {
		if !l.AgentRunning(n) {
			return Permanent(fmt.Errorf("route-agent on %s exited:\n%s", n.Name, l.AgentLog(n, 30)))
		}
		rows, err := l.Peers(ctx, n)
		if err != nil {
			return err
		}
		found := false
		for _, row := range rows {
			if row.PeerAddress == r.Addr.String() {
				found = true
				if row.SessionState != "established" {
					return fmt.Errorf("routectl on %s: session %s", n.Name, row.SessionState)
				}
			}
		}
		if !found {
			return fmt.Errorf("routectl on %s shows no peer %s: %+v", n.Name, r.Addr, rows)
		}
		nb, err := r.Neighbors(ctx)
		if err != nil {
			return err
		}
		if s := nb[n.IP.String()].BGPState; s != "Established" {
			return fmt.Errorf("%s reports the session to %s as %q", r.Name, n.IP, s)
		}
		return nil
	})
}

// FRRPath is one path of FRR's `show bgp ipv4 unicast json`.
type FRRPath struct {
	Valid    bool `json:"valid"`
	BestPath bool `json:"bestpath"`
	NextHops []struct {
		IP string `json:"ip"`
	} `json:"nexthops"`
}

// Routes returns r's IPv4 unicast BGP table, keyed by prefix.
func (r *Router) Routes(ctx context.Context) (map[string][]FRRPath, error) {
	var t struct {
		Routes map[string][]FRRPath `json:"routes"`
	}
	err := r.VTYJSON(ctx, "show bgp ipv4 unicast json", &t)
	return t.Routes, err
}

// BestNextHop returns the next hop of r's best path to prefix, or "" when
// r has no valid path to it.
func (r *Router) BestNextHop(ctx context.Context, prefix string) (string, error) {
	routes, err := r.Routes(ctx)
	if err != nil {
		return "", err
	}
	for _, p := range routes[prefix] {
		if p.Valid && p.BestPath && len(p.NextHops) > 0 {
			return p.NextHops[0].IP, nil
		}
	}
	return "", nil
}

// WaitConverged waits until every router holds every node's pod CIDR.
func (l *Lab) WaitConverged(ctx context.Context, timeout time.Duration) error {
	return WaitFor(ctx, timeout, "every ToR to learn every pod CIDR", func() error {
		for _, r := range l.Routers {
			for _, n := range l.Nodes {
				nh, err := r.BestNextHop(ctx, n.PodCIDR.String())
				if err != nil {
					return err
				}
				if nh == "" {
					return fmt.Errorf("%s has no path to %s (%s)", r.Name, n.PodCIDR, n.Name)
				}
			}
		}
		return nil
	})
}

// RouteRow is one row of `routectl bgp routes ... -o json`.
type RouteRow struct {
	PeerAddress string   `json:"peerAddress"`
	Family      string   `json:"family"`
	Prefix      string   `json:"prefix"`
	NextHop     string   `json:"nextHop"`
	ASPath      []uint32 `json:"asPath"`
}

// Routes returns n's `routectl bgp routes advertised|received -o json`.
func (l *Lab) Routes(ctx context.Context, n *Node, direction string) ([]RouteRow, error) {
	out, err := l.Routectl(ctx, n, "bgp", "routes", direction, "-o", "json")
	if err != nil {
		return nil, err
	}
	var rows []RouteRow
	if err := json.Unmarshal(out, &rows); err != nil {
		return nil, fmt.Errorf("decoding routectl output of %s: %w: %s", n.Name, err, out)
	}
	return rows, nil
}

// NeighborPrefixes returns the prefixes r accepted from neighbor (received)
// or sends to it (advertised), sorted.
func (r *Router) NeighborPrefixes(ctx context.Context, neighbor string, advertised bool) ([]string, error) {
	var t struct {
		Routes     map[string]json.RawMessage `json:"routes"`
		Advertised map[string]json.RawMessage `json:"advertisedRoutes"`
	}
	cmd := "show bgp ipv4 unicast neighbors " + neighbor + " routes json"
	if advertised {
		cmd = "show bgp ipv4 unicast neighbors " + neighbor + " advertised-routes json"
	}
	if err := r.VTYJSON(ctx, cmd, &t); err != nil {
		return nil, err
	}
	m := t.Routes
	if advertised {
		m = t.Advertised
	}
	return slices.Sorted(maps.Keys(m)), nil
}
