package worker

import (
	"context"
	"encoding/json"
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

// OpsOptions is what NewOps needs.
type OpsOptions struct {
	Addr     string
	Redis    redis.UniversalClient
	Gatherer prometheus.Gatherer
	// ShutdownTimeout bounds draining in-flight requests when the context ends.
	ShutdownTimeout time.Duration
	Logger          *slog.Logger
	// Checks, when set, is the detail /readyz shows as "checks" (the connection check's last
	// results). It never changes the status code: readiness is Redis's alone, since a worker
	// that cannot reach one CRM still delivers to the others and retries.
	Checks func() any
}

// readyBody is the /readyz answer.
type readyBody struct {
	Status string `json:"status"`          // ready | unavailable
	Error  string `json:"error,omitempty"` // why not ready
	Checks any    `json:"checks,omitempty"`
}

// NewOps builds the ops server.
func NewOps(o OpsOptions) *Ops {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		body, status := readyBody{Status: "ready"}, http.StatusOK
		if err := o.Redis.Ping(ctx).Err(); err != nil {
			body, status = readyBody{Status: "unavailable", Error: "redis unreachable"}, http.StatusServiceUnavailable
		}
		if o.Checks != nil {
			body.Checks = o.Checks()
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{}))
	return &Ops{
		srv:     &http.Server{Addr: o.Addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		timeout: o.ShutdownTimeout,
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
