package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
)

// Ops is the ops listener: /healthz (process up), /readyz (Redis reachable) and /metrics for
// the kubelet's probes and Prometheus, and, when given, the admin API (/admin/...) and pprof
// (/debug/pprof/), apart from the webhook port.
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
	// results). It never changes the status code: a worker that cannot reach one CRM still
	// delivers to the others and retries.
	Checks func() any
	// Ready, when set, decides readiness instead of a Redis PING (the receiver's: can it
	// acknowledge calls right now?). It returns why not, or nil.
	Ready func(ctx context.Context) error
	// Admin serves /admin/ and checks the credentials MetricsAuth and Pprof ask for
	// (*admin.Handler); nil serves no admin API.
	Admin AdminAPI
	// MetricsAuth asks for an admin credential, either role, on /metrics (ops.metrics_auth).
	MetricsAuth bool
	// Pprof serves /debug/pprof/ to read_write admin credentials (ops.pprof).
	Pprof bool
}

// AdminAPI is the admin API as the ops listener uses it (worker/admin.Handler): its routes,
// and its credential checks for what the listener serves beside it.
type AdminAPI interface {
	http.Handler
	// RequireAny lets through a request with an admin credential of either role.
	RequireAny(next http.Handler) http.Handler
	// RequireReadWrite lets through a request with a read_write admin credential.
	RequireReadWrite(next http.Handler) http.Handler
}

// readyBody is the /readyz answer.
type readyBody struct {
	Status string `json:"status"`          // ready | unavailable
	Error  string `json:"error,omitempty"` // why not ready
	Checks any    `json:"checks,omitempty"`
}

// NewOps builds the ops server: probes, metrics, and what o adds.
func NewOps(o OpsOptions) (*Ops, error) {
	if (o.MetricsAuth || o.Pprof) && o.Admin == nil {
		return nil, errors.New("worker: ops: metrics_auth and pprof need the admin API (its credentials)")
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ready := o.Ready
	if ready == nil {
		ready = func(ctx context.Context) error {
			if err := o.Redis.Ping(ctx).Err(); err != nil {
				return errors.New("redis unreachable")
			}
			return nil
		}
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
		if err := ready(ctx); err != nil {
			body, status = readyBody{Status: "unavailable", Error: err.Error()}, http.StatusServiceUnavailable
		}
		if o.Checks != nil {
			body.Checks = o.Checks()
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	})
	var metrics http.Handler = promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{})
	if o.MetricsAuth {
		metrics = o.Admin.RequireAny(metrics)
	}
	mux.Handle("GET /metrics", metrics)
	if o.Admin != nil {
		mux.Handle("/admin/", o.Admin)
	} else {
		// No admin credential is configured: nobody may call the API. Say so with the 401
		// the docs promise, not a bare 404 that reads as a wrong path or a missing feature.
		mux.HandleFunc("/admin/", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="miitel-crm-sync admin"`)
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(map[string]map[string]string{"error": {
				"code":    "no_admin_credentials",
				"message": "the admin API has no credential configured, so nobody may call it: add admin.tokens or admin.basic",
			}})
		})
	}
	if o.Pprof {
		// Profiles expose memory contents and cost CPU: read_write admins only.
		pp := http.NewServeMux()
		pp.HandleFunc("/debug/pprof/", pprof.Index)
		pp.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		pp.HandleFunc("/debug/pprof/profile", pprof.Profile)
		pp.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		pp.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.Handle("/debug/pprof/", o.Admin.RequireReadWrite(pp))
	}
	return &Ops{
		srv:     &http.Server{Addr: o.Addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		timeout: o.ShutdownTimeout,
		log:     log,
	}, nil
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
