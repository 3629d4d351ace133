package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
)

// Ops serves a worker-only process's /healthz (process up), /readyz (Redis reachable) and
// /metrics, for the kubelet's probes and Prometheus.
type Ops struct {
	srv     *http.Server
	timeout time.Duration
	log     *slog.Logger
}

// NewOps builds the ops server on addr.
func NewOps(addr string, rdb redis.UniversalClient, g prometheus.Gatherer, shutdownTimeout time.Duration, log *slog.Logger) *Ops {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := rdb.Ping(ctx).Err(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("redis unreachable\n"))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	return &Ops{
		srv:     &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		timeout: shutdownTimeout,
		log:     log,
	}
}

// Handler is the ops mux (tests serve it with httptest).
func (o *Ops) Handler() http.Handler { return o.srv.Handler }

// Run serves until ctx is done, then shuts down.
func (o *Ops) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", o.srv.Addr)
	if err != nil {
		return fmt.Errorf("worker: ops server: %w", err)
	}
	o.log.Info("ops server listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- o.srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	if err := o.srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
