// Package server serves the agent's gRPC API on a unix socket.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/grpc"

	apiv1 "routeagent.io/route-agent/api/v1"
)

// Listen creates the unix socket at path with mode 0600: the API shows
// peers' addresses and, later, lets operators change state, so only root
// (and whoever root lets into the directory) may use it. A socket file left
// by an agent that died is replaced; one that still answers is an error.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("creating socket directory: %w", err)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("socket %s is in use: is another route-agent running?", path)
	}
	if fi, err := os.Lstat(path); err == nil {
		// Never delete something that is not a socket: a mistyped
		// --api-socket must not cost the user a file.
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing stale socket: %w", err)
		}
	}
	// The umask closes the window between bind and chmod.
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("setting mode of %s: %w", path, err)
	}
	return l, nil
}

// Serve serves impl on l until ctx ends, then stops gracefully, waiting at
// most grace for calls in flight: a routectl call that hangs (a stuck
// reader on the socket, a slow RIB walk) must not keep the agent from
// sending its Cease notifications and exiting.
func Serve(ctx context.Context, l net.Listener, impl apiv1.AgentServer, grace time.Duration) error {
	s := grpc.NewServer()
	apiv1.RegisterAgentServer(s, impl)
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-done:
			return
		}
		stopped := make(chan struct{})
		go func() { s.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(grace):
			s.Stop()
		}
	}()
	err := s.Serve(l)
	close(done)
	if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serving api: %w", err)
	}
	return nil
}
