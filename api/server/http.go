package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// HTTPHandler serves
//   - /metrics: the registry, when reg is not nil;
//   - /healthz: liveness. It answers as long as the process serves HTTP,
//     which is all a liveness probe should ask: restarting the agent fixes
//     nothing that a failing part reports, and its routes stay in the
//     kernel anyway;
//   - /readyz: readiness, 200 "ok" or 503 with one reason per line (see
//     engine.Engine.Ready).
func HTTPHandler(reg *prometheus.Registry, ready func() (bool, []string)) http.Handler {
	mux := http.NewServeMux()
	if reg != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, reasons := ready()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready:\n"+strings.Join(reasons, "\n"))
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// PprofHandler serves Go's profiles under /debug/pprof/ (net/http/pprof),
// for --pprof-listen: on a separate, opt-in listener, since a profile
// shows the agent's internals and costs CPU while it is taken.
func PprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// ServeHTTP serves h on addr until ctx ends. what names the listener in
// errors ("--metrics-listen").
func ServeHTTP(ctx context.Context, what, addr string, h http.Handler) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s %s: %w", what, addr, err)
	}
	return nil
}
