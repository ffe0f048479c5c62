package bgp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"
)

// GoBGP's Go API takes one path per call, each a round trip through
// GoBGP's main loop: handing it 10,000 LoadBalancer addresses one by one
// took most of P1's half second. Only its gRPC API has AddPathStream,
// which takes thousands of paths (withdrawals too) per turn of the loop.
// So the speaker serves GoBGP's gRPC API on a unix socket in a directory
// only root may enter, answering nothing but AddPathStream, and streams
// its path changes through it. (GoBGP still sends each path of a change
// in an UPDATE of its own; only a new session's first table is packed.)

const (
	addPathStreamMethod = "/apipb.GobgpApi/AddPathStream"
	pathSocketName      = "gobgp.sock"
	// pathChunk is how many paths go in one AddPathStreamRequest: one turn
	// of GoBGP's loop each, well inside gRPC's 4 MiB message limit.
	pathChunk = 2000
	// maxUnixPath is the room in sockaddr_un for a path and its NUL.
	maxUnixPath = 107
)

// pathStream is the speaker's client of GoBGP's AddPathStream.
type pathStream struct {
	socket string
	conn   *grpc.ClientConn
	client api.GobgpApiClient
}

// pathStreamServer prepares dir for GoBGP's API socket and returns the
// options that make GoBGP serve it, answering only AddPathStream.
func pathStreamServer(dir string) (socket string, opts []server.ServerOption, err error) {
	if dir == "" {
		return "", nil, errors.New("no directory for GoBGP's API socket")
	}
	socket = filepath.Join(dir, pathSocketName)
	if len(socket) > maxUnixPath {
		return "", nil, fmt.Errorf("GoBGP's API socket %s: path longer than %d bytes", socket, maxUnixPath)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", nil, fmt.Errorf("creating GoBGP's API socket directory: %w", err)
	}
	// MkdirAll leaves an existing directory's mode alone.
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", nil, fmt.Errorf("GoBGP's API socket directory: %w", err)
	}
	// A socket left by an agent that died; GoBGP's listen would fail on it.
	if fi, err := os.Lstat(socket); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return "", nil, fmt.Errorf("%s exists and is not a socket", socket)
		}
		if err := os.Remove(socket); err != nil {
			return "", nil, fmt.Errorf("removing stale GoBGP API socket: %w", err)
		}
	}
	deny := grpcstatus.Error(codes.PermissionDenied, "route-agent's GoBGP answers only AddPathStream")
	opts = []server.ServerOption{
		server.GrpcListenAddress("unix://" + socket),
		server.GrpcOption([]grpc.ServerOption{
			grpc.UnaryInterceptor(func(context.Context, any, *grpc.UnaryServerInfo, grpc.UnaryHandler) (any, error) {
				return nil, deny
			}),
			grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
				if info.FullMethod != addPathStreamMethod {
					return deny
				}
				return h(srv, ss)
			}),
		}),
	}
	return socket, opts, nil
}

// dialPathStream makes the client of GoBGP's socket. It connects when
// first used (waiting for GoBGP, which listens in a goroutine of its own;
// a failed listen reaches fatal through GoBGP's logger).
func dialPathStream(socket string) (*pathStream, error) {
	conn, err := grpc.NewClient("unix://"+socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// The socket is local: a lost connection is worth retrying at once,
		// not after gRPC's default second.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
			BaseDelay: 10 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second,
		}}))
	if err != nil {
		return nil, fmt.Errorf("connecting to GoBGP's API socket: %w", err)
	}
	return &pathStream{socket: socket, conn: conn, client: api.NewGobgpApiClient(conn)}, nil
}

// send hands adds and withdrawals of dels to GoBGP in one stream. On an
// error GoBGP may hold any part of them; announcing or withdrawing a path
// again is harmless, so the caller retries the whole set.
func (p *pathStream) send(ctx context.Context, adds, dels []Path) error {
	paths := append(apiPaths(adds, false), apiPaths(dels, true)...)
	stream, err := p.client.AddPathStream(ctx, grpc.WaitForReady(true))
	if err != nil {
		return fmt.Errorf("opening GoBGP's path stream: %w", err)
	}
	for len(paths) > 0 {
		n := min(len(paths), pathChunk)
		if err := stream.Send(&api.AddPathStreamRequest{TableType: api.TableType_GLOBAL, Paths: paths[:n]}); err != nil {
			if errors.Is(err, io.EOF) { // the server ended the stream: its reason
				_, err = stream.CloseAndRecv()
			}
			return fmt.Errorf("streaming paths to GoBGP: %w", err)
		}
		paths = paths[n:]
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return fmt.Errorf("streaming paths to GoBGP: %w", err)
	}
	return nil
}

func (p *pathStream) close() {
	p.conn.Close()
	os.Remove(p.socket)
}
