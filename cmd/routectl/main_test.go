package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apiv1 "routeagent.io/route-agent/api/v1"
	"routeagent.io/route-agent/version"
)

// run executes routectl with args and returns stdout and the error.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	err := root.Execute()
	if errOut.Len() != 0 {
		// SilenceErrors and SilenceUsage: main prints the error, cobra
		// must not print it (or the usage) a second time.
		t.Errorf("routectl %s wrote to stderr: %q", strings.Join(args, " "), errOut.String())
	}
	return out.String(), err
}

func wantErr(t *testing.T, err error, substrs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil, want an error mentioning %q", substrs)
	}
	for _, s := range substrs {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("err = %q, want it to mention %q", err, s)
		}
	}
	if strings.Contains(err.Error(), "rpc error:") || strings.Contains(err.Error(), "code = ") {
		t.Errorf("err = %q, want no raw gRPC status dump", err)
	}
}

// fakeAgent is the gRPC API of route-agent with canned answers.
type fakeAgent struct {
	apiv1.UnimplementedAgentServer
	peers  []*apiv1.BGPPeerFamily
	status *apiv1.StatusResponse
	err    error
	block  bool // block until the client gives up
}

func (a *fakeAgent) ListBGPPeers(ctx context.Context, _ *apiv1.ListBGPPeersRequest) (*apiv1.ListBGPPeersResponse, error) {
	if a.block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if a.err != nil {
		return nil, a.err
	}
	return &apiv1.ListBGPPeersResponse{Peers: a.peers}, nil
}

func (a *fakeAgent) Status(context.Context, *apiv1.StatusRequest) (*apiv1.StatusResponse, error) {
	if a.err != nil {
		return nil, a.err
	}
	return a.status, nil
}

// serve starts impl on a unix socket at path and stops it at cleanup.
func serve(t *testing.T, path string, impl apiv1.AgentServer) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := grpc.NewServer()
	apiv1.RegisterAgentServer(s, impl)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("serve: %v", err)
		}
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
}

// socketPath returns a socket path in a fresh temporary directory.
func socketPath(t *testing.T) string {
	return filepath.Join(t.TempDir(), "agent.sock")
}

func TestCLINoSocket(t *testing.T) {
	for _, args := range [][]string{
		{"--socket", "/nonexistent/x.sock", "bgp", "peers"},
		{"--socket", "/nonexistent/x.sock", "status", "-o", "json"},
	} {
		_, err := run(t, args...)
		wantErr(t, err, "not running", "--socket", "/nonexistent/x.sock")
	}
}

func TestCLISocketFromEnvironment(t *testing.T) {
	t.Setenv("ROUTECTL_SOCKET", "/nonexistent/from-env.sock")
	_, err := run(t, "bgp", "peers")
	wantErr(t, err, "not running", "/nonexistent/from-env.sock")

	// --socket wins over the environment.
	p := socketPath(t)
	serve(t, p, &fakeAgent{})
	out, err := run(t, "--socket", p, "bgp", "peers")
	if err != nil {
		t.Fatalf("routectl --socket %s bgp peers: %v", p, err)
	}
	if !strings.HasPrefix(out, "No BGP peers") {
		t.Errorf("output = %q, want the empty-list message", out)
	}
}

func TestCLIBadOutputFormat(t *testing.T) {
	for _, args := range [][]string{
		{"--socket", "/nonexistent/x.sock", "bgp", "peers", "-o", "yaml"},
		{"-o", "yaml", "status"},
		{"--output=wide", "bgp", "peers"},
	} {
		_, err := run(t, args...)
		// The format is checked first, so no socket error hides it.
		val := args[len(args)-1]
		if strings.HasPrefix(args[0], "--output=") {
			val = strings.TrimPrefix(args[0], "--output=")
		} else {
			for i, a := range args {
				if a == "-o" {
					val = args[i+1]
				}
			}
		}
		wantErr(t, err, "--output", `"`+val+`"`, "table or json")
		if strings.Contains(err.Error(), "not running") {
			t.Errorf("err = %q, want only the format problem", err)
		}
	}
}

func TestCLIBadArgs(t *testing.T) {
	if _, err := run(t, "--socket", "/nonexistent/x.sock", "bgp", "peers", "extra"); err == nil {
		t.Error("bgp peers extra: err = nil, want an error about the argument")
	}
	if _, err := run(t, "--socket", "/nonexistent/x.sock", "status", "extra"); err == nil {
		t.Error("status extra: err = nil, want an error about the argument")
	}
	if _, err := run(t, "--no-such-flag", "status"); err == nil || !strings.Contains(err.Error(), "no-such-flag") {
		t.Errorf("unknown flag: err = %v, want it named", err)
	}
}

func TestCLISocketNotAnswering(t *testing.T) {
	t.Run("stale socket", func(t *testing.T) {
		p := socketPath(t)
		l, err := net.Listen("unix", p)
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		// Leave the socket file behind, as a crashed agent does.
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		l.Close()
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("socket file gone: %v", err)
		}
		_, err = run(t, "--socket", p, "bgp", "peers")
		wantErr(t, err, "not answering", p)
	})
	t.Run("plain file", func(t *testing.T) {
		p := socketPath(t)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := run(t, "--socket", p, "status")
		wantErr(t, err, "not answering", p)
	})
}

func TestCLIPeersJSON(t *testing.T) {
	p := socketPath(t)
	serve(t, p, &fakeAgent{peers: samplePeers()})
	out, err := run(t, "--socket", p, "bgp", "peers", "-o", "json")
	if err != nil {
		t.Fatalf("routectl bgp peers -o json: %v", err)
	}
	var got []peerRow
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("decoding %q: %v", out, err)
	}
	want := []peerRow{
		{LocalAS: 64513, PeerAS: 64512, PeerAddress: "10.0.0.1", PeerPort: 179, SessionState: "established", UptimeSeconds: 3723, Family: "ipv4/unicast", Received: 12, Advertised: 3},
		{LocalAS: 64513, PeerAS: 64512, PeerAddress: "fd00::1", PeerPort: 179, SessionState: "active", Family: "ipv6/unicast"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("peers (-want +got):\n%s", diff)
	}
}

func TestCLIPeersTableAndEmpty(t *testing.T) {
	p := socketPath(t)
	serve(t, p, &fakeAgent{peers: samplePeers()})
	out, err := run(t, "--socket", p, "bgp", "peers")
	if err != nil {
		t.Fatalf("routectl bgp peers: %v", err)
	}
	if !strings.HasPrefix(out, "Local AS   Peer AS   Peer Address") || !strings.Contains(out, "[fd00::1]:179") {
		t.Errorf("table output:\n%s", out)
	}

	p2 := socketPath(t)
	serve(t, p2, &fakeAgent{})
	out, err = run(t, "--socket", p2, "bgp", "peers", "-o", "json")
	if err != nil {
		t.Fatalf("routectl bgp peers -o json: %v", err)
	}
	if out != "[]\n" {
		t.Errorf("empty peers as JSON = %q, want %q", out, "[]\n")
	}
}

func TestCLIStatus(t *testing.T) {
	p := socketPath(t)
	serve(t, p, &fakeAgent{status: &apiv1.StatusResponse{
		NodeName: "node-a", NodeKnown: true, NodeIps: []string{"10.0.0.1"},
		BgpConfig: &apiv1.ConfigStatus{Source: "kube-system/bgp-config", Present: true, AppliedResourceVersion: "100",
			Error: "a\nb", ErrorResourceVersion: "101"},
	}})
	out, err := run(t, "--socket", p, "status")
	if err != nil {
		t.Fatalf("routectl status: %v", err)
	}
	for _, want := range []string{"node-a", "resourceVersion 100 in force", "resourceVersion 101 rejected", "  a\n", "  b\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	out, err = run(t, "--socket", p, "status", "-o", "json")
	if err != nil {
		t.Fatalf("routectl status -o json: %v", err)
	}
	var got statusOut
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("decoding %q: %v", out, err)
	}
	want := statusOut{
		NodeName: "node-a", NodeKnown: true, NodeIPs: []string{"10.0.0.1"}, PodCIDRs: []string{}, NotReadyReasons: []string{}, Parts: []partOut{},
		BGPEnabled: true,
		BGPConfig:  &configOut{Source: "kube-system/bgp-config", Present: true, AppliedResourceVersion: "100", Error: "a\nb", ErrorResourceVersion: "101"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
}

// An error status from the agent shows its message, not the gRPC dump.
func TestCLIServerError(t *testing.T) {
	p := socketPath(t)
	serve(t, p, &fakeAgent{err: status.Error(codes.FailedPrecondition, "speaker not started")})
	_, err := run(t, "--socket", p, "bgp", "peers")
	wantErr(t, err, "speaker not started")
	if err != nil && err.Error() != "speaker not started" {
		t.Errorf("err = %q, want exactly the agent's message", err)
	}

	p2 := socketPath(t)
	serve(t, p2, &struct{ apiv1.UnimplementedAgentServer }{})
	_, err = run(t, "--socket", p2, "status")
	wantErr(t, err, "not implemented")
}

func TestCLITimeout(t *testing.T) {
	p := socketPath(t)
	serve(t, p, &fakeAgent{block: true})
	_, err := run(t, "--socket", p, "--timeout", "200ms", "bgp", "peers")
	wantErr(t, err, "did not answer within 200ms", p)
}

// A relative --socket path, e.g. run from /run/route-agent.
func TestCLIRelativeSocket(t *testing.T) {
	dir := t.TempDir()
	serve(t, filepath.Join(dir, "agent.sock"), &fakeAgent{peers: samplePeers()})
	t.Chdir(dir)
	var failures []string
	for _, rel := range []string{"agent.sock", "./agent.sock"} {
		out, err := run(t, "--socket", rel, "bgp", "peers", "-o", "json")
		if err != nil {
			failures = append(failures, fmt.Sprintf("%q: %v", rel, err))
			continue
		}
		if !strings.Contains(out, `"peerAddress": "10.0.0.1"`) {
			t.Errorf("--socket %q: output %q", rel, out)
		}
	}
	if len(failures) > 0 {
		t.Errorf("a relative --socket fails although the socket answers: %s", strings.Join(failures, "; "))
	}
}

// A socket path with characters that mean something in a URL.
func TestCLISocketPathURLCharacters(t *testing.T) {
	for _, dirName := range []string{"a#b", "a?b", "a%b"} {
		t.Run(dirName, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), dirName)
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, "agent.sock")
			serve(t, p, &fakeAgent{})
			if _, err := run(t, "--socket", p, "bgp", "peers"); err != nil {
				t.Errorf("--socket %q fails although the socket answers: %v", p, err)
			}
		})
	}
}

// --help names the socket's default once, and the one in force.
func TestCLIHelpSocketDefault(t *testing.T) {
	for _, env := range []string{"", "/run/other/agent.sock"} {
		t.Setenv("ROUTECTL_SOCKET", env)
		out, err := run(t, "--help")
		if err != nil {
			t.Fatal(err)
		}
		want := defaultSocket
		if env != "" {
			want = env
		}
		var line string
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "--socket") {
				line = l
			}
		}
		if strings.Count(line, "(default") != 1 || !strings.Contains(line, `(default "`+want+`")`) || strings.Count(line, "agent.sock") != 1 {
			t.Errorf("with $ROUTECTL_SOCKET=%q the --socket help reads %q, want the default %q named once", env, line, want)
		}
	}
}

// setVersion makes routectl's own version v and commit c for one test.
func setVersion(t *testing.T, v, c string) {
	oldV, oldC := version.Version, version.Commit
	version.Version, version.Commit = v, c
	t.Cleanup(func() { version.Version, version.Commit = oldV, oldC })
}

func TestCLIVersion(t *testing.T) {
	setVersion(t, "v1.3.0", "9f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c")
	p := socketPath(t)
	serve(t, p, &fakeAgent{status: &apiv1.StatusResponse{Version: "v1.2.0-4-g0356817-dirty", Commit: "0356817c1a2b3c4d5e6f708192a3b4c5d6e7f809-dirty"}})
	out, err := run(t, "--socket", p, "version")
	if err != nil {
		t.Fatalf("routectl version: %v", err)
	}
	want := "Client Version: v1.3.0 (commit 9f1c2d3e4f5a)\n" +
		"Server Version: v1.2.0-4-g0356817-dirty (commit 0356817c1a2b-dirty)\n"
	if diff := cmp.Diff(want, out); diff != "" {
		t.Errorf("routectl version (-want +got):\n%s", diff)
	}

	out, err = run(t, "--socket", p, "version", "-o", "json")
	if err != nil {
		t.Fatalf("routectl version -o json: %v", err)
	}
	var got map[string]map[string]string
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("decoding %q: %v", out, err)
	}
	wantJSON := map[string]map[string]string{
		"client": {"version": "v1.3.0", "commit": "9f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c"},
		"server": {"version": "v1.2.0-4-g0356817-dirty", "commit": "0356817c1a2b3c4d5e6f708192a3b4c5d6e7f809-dirty"},
	}
	if diff := cmp.Diff(wantJSON, got); diff != "" {
		t.Errorf("routectl version -o json (-want +got):\n%s", diff)
	}

	// An agent from before version reporting.
	p2 := socketPath(t)
	serve(t, p2, &fakeAgent{status: &apiv1.StatusResponse{}})
	out, err = run(t, "--socket", p2, "version")
	if err != nil || !strings.Contains(out, "Server Version: unknown") {
		t.Errorf("routectl version against an agent reporting none = %q, %v; want the server's version unknown", out, err)
	}
}

// Without an agent, routectl version still prints its own, then fails.
func TestCLIVersionWithoutAgent(t *testing.T) {
	setVersion(t, "v1.3.0", "")
	out, err := run(t, "--socket", "/nonexistent/x.sock", "version")
	wantErr(t, err, "not running", "/nonexistent/x.sock")
	if out != "Client Version: v1.3.0\n" {
		t.Errorf("output = %q, want the client's version alone", out)
	}

	out, err = run(t, "--socket", "/nonexistent/x.sock", "version", "-o", "json")
	wantErr(t, err, "not running")
	var got map[string]any
	if jerr := json.Unmarshal([]byte(out), &got); jerr != nil {
		t.Fatalf("decoding %q: %v", out, jerr)
	}
	if diff := cmp.Diff(map[string]any{"client": map[string]any{"version": "v1.3.0"}}, got); diff != "" {
		t.Errorf("routectl version -o json without an agent (-want +got):\n%s", diff)
	}

	// An agent that does not answer in time: the client's version first.
	p := socketPath(t)
	serve(t, p, &blockingStatus{})
	out, err = run(t, "--socket", p, "--timeout", "200ms", "version")
	wantErr(t, err, "did not answer within 200ms")
	if out != "Client Version: v1.3.0\n" {
		t.Errorf("output = %q, want the client's version alone", out)
	}

	// A bad format is refused before anything is printed.
	out, err = run(t, "--socket", "/nonexistent/x.sock", "version", "-o", "yaml")
	wantErr(t, err, "--output", `"yaml"`)
	if out != "" {
		t.Errorf("output with a bad --output = %q, want none", out)
	}
}

// blockingStatus answers Status only when the client gives up.
type blockingStatus struct{ apiv1.UnimplementedAgentServer }

func (blockingStatus) Status(ctx context.Context, _ *apiv1.StatusRequest) (*apiv1.StatusResponse, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestRootVersionFlag(t *testing.T) {
	// The root command reads the version when it is built.
	setVersion(t, "v1.3.0", "")
	out, err := run(t, "--version")
	if err != nil || out != "routectl version v1.3.0\n" {
		t.Errorf("routectl --version = %q, %v", out, err)
	}
}
