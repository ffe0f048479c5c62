package lab

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// HealthAddr is where the lab's agents serve /healthz and /readyz: the
// agent's default, loopback inside each node's namespace, as the
// DaemonSet's httpGet probes reach it with hostNetwork.
const HealthAddr = "127.0.0.1:9956"

// Probe fetches path (/healthz or /readyz) from n's agent from inside n's
// namespace, as the kubelet's probe would, and returns the status code and
// body.
func (l *Lab) Probe(ctx context.Context, n *Node, path string) (int, string, error) {
	c := &http.Client{Transport: &http.Transport{DialContext: nsDialer(n.NS)}, Timeout: 10 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+HealthAddr+path, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("%s of %s: %w", path, n.Name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// CPUProfile takes a CPU profile of d from n's agent, which must run with
// --pprof-listen addr, from inside n's namespace.
func (l *Lab) CPUProfile(ctx context.Context, n *Node, addr string, d time.Duration) ([]byte, error) {
	c := &http.Client{Transport: &http.Transport{DialContext: nsDialer(n.NS)}, Timeout: d + 30*time.Second}
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, int(d.Seconds()))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("profiling %s: %w", n.Name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("profiling %s: %s: %s", n.Name, resp.Status, b)
	}
	return b, err
}
