package receiver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
)

// ErrConfig marks every error New returns for a bad configuration, so the caller can exit
// with a usage/config status (errors.Is).
var ErrConfig = errors.New("receiver: invalid configuration")

// Options is what a Receiver needs. Routes must have their secrets resolved.
type Options struct {
	Routes []config.Route
	Server config.Server
	Queue  config.Queue
	// Redis is the one client the queue, the ledger and Ready use: a standalone, Sentinel
	// or Cluster client, or one on the embedded in-process Redis.
	Redis  redis.UniversalClient
	Logger *slog.Logger
	// Registerer receives the receiver's metrics; the process's ops listener serves them
	// (never the webhook port). Nil: a private registry, metrics count but are not exported.
	Registerer prometheus.Registerer
	// Now stamps Event.ReceivedAt; nil means time.Now.
	Now func() time.Time
	// AckReplicas and AckTimeout are redis.ack_replicas and redis.ack_timeout: 2xx only
	// once that many replicas hold the enqueue (WAIT). Zero: no wait; config.AckAuto: as
	// many as the master reports connected.
	AckReplicas config.AckReplicas
	AckTimeout  time.Duration
	// Status notes every event received in the enqueue script (callstatus.NoteLua and
	// a callstatus.Store); the zero Status notes nothing.
	Status Status
}

// Receiver is the webhook HTTP service.
type Receiver struct {
	server config.Server
	queue  config.Queue
	routes map[string]*authenticator

	enq      *Enqueuer
	inflight *inflight

	log     *slog.Logger
	m       *metrics
	now     func() time.Time
	handler http.Handler

	onAdmit func() // test hook: a request was charged against the in-flight budget
}

// New checks the options and builds the receiver. Every configuration problem is reported
// at once, wrapped with ErrConfig.
func New(opts Options) (*Receiver, error) {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if opts.Redis == nil {
		bad("a redis client is required")
	}
	if opts.Server.MaxBodyBytes <= 0 {
		bad("server.max_body_bytes must be positive")
	}
	// Zero means unset (a caller that builds config.Server by hand): config.Default's values.
	if opts.Server.MaxInflightRequests == 0 {
		opts.Server.MaxInflightRequests = 256
	}
	if opts.Server.MaxInflightBytes == 0 {
		opts.Server.MaxInflightBytes = max(64<<20, bodyCostFactor*opts.Server.MaxBodyBytes)
	}
	if opts.Server.MaxInflightRequests < 0 {
		bad("server.max_inflight_requests must be positive")
	}
	if opts.Server.MaxInflightBytes < bodyCostFactor*opts.Server.MaxBodyBytes {
		bad("server.max_inflight_bytes must be at least %d x server.max_body_bytes: the largest body must fit", bodyCostFactor)
	}
	if opts.Server.EnqueueTimeout <= 0 {
		bad("server.enqueue_timeout must be positive")
	}
	if opts.Server.ShutdownTimeout <= 0 {
		bad("server.shutdown_timeout must be positive")
	}
	if opts.AckReplicas != 0 && opts.AckTimeout >= opts.Server.EnqueueTimeout {
		bad("redis.ack_timeout (%s) must be below server.enqueue_timeout (%s)", opts.AckTimeout, opts.Server.EnqueueTimeout)
	}
	if opts.Queue.Name == "" {
		bad("queue.name must not be empty")
	}
	if len(opts.Routes) == 0 {
		bad("at least one route is required")
	}
	routes := make(map[string]*authenticator, len(opts.Routes))
	for _, rt := range opts.Routes {
		if rt.Name == "" {
			bad("a route has no name")
			continue
		}
		if _, dup := routes[rt.Name]; dup {
			bad("route %q is configured twice", rt.Name)
			continue
		}
		au, aerrs := compileAuth(rt.Name, rt.Auth)
		errs = append(errs, aerrs...)
		routes[rt.Name] = au
	}

	gin.SetMode(gin.ReleaseMode) // gin's mode is process-wide; release mode drops its debug printing
	engine := gin.New()
	engine.RedirectTrailingSlash = false
	engine.RedirectFixedPath = false
	engine.HandleMethodNotAllowed = true
	// Only X-Forwarded-For, and only from the configured proxies; gin.New trusts every proxy
	// by default, which would let any sender choose its IP for the allowlist.
	engine.ForwardedByClientIP = true
	engine.RemoteIPHeaders = []string{"X-Forwarded-For"}
	proxies := opts.Server.TrustedProxies
	if proxies == nil {
		proxies = []string{}
	}
	if err := engine.SetTrustedProxies(proxies); err != nil {
		bad("server.trusted_proxies: %v", err)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
	}

	reg := opts.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry() // metrics still count, just unexported
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("receiver: register metrics: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	r := &Receiver{
		server: opts.Server,
		queue:  opts.Queue,
		routes: routes,
		enq: newEnqueuer(EnqueueOptions{
			Redis: opts.Redis, Queue: opts.Queue, AckReplicas: opts.AckReplicas, AckTimeout: opts.AckTimeout,
			Timeout: opts.Server.EnqueueTimeout, Status: opts.Status, Logger: log, Now: now,
		}, m),
		inflight: newInflight(opts.Server.MaxInflightRequests, opts.Server.MaxInflightBytes),
		log:      log,
		m:        m,
		now:      now,
	}

	engine.Use(r.logRequests(), r.recoverPanics())
	engine.POST("/webhooks/miitel/:route", r.webhook)
	// The public port answers liveness only: readiness, metrics and the admin API are on
	// the ops listener (ops.listen), which need not be reachable from the internet.
	engine.GET("/healthz", r.healthz)
	engine.NoRoute(func(c *gin.Context) { writeError(c, http.StatusNotFound, "not_found", "no such path") })
	engine.NoMethod(func(c *gin.Context) {
		writeError(c, http.StatusMethodNotAllowed, "method_not_allowed", "method "+c.Request.Method+" not allowed")
	})
	r.handler = engine
	if err := pretouch(); err != nil {
		log.Debug("receiver: could not compile the JSON codec ahead of the first request", slog.Any("error", err))
	}
	return r, nil
}

// Enqueuer is the receiver's enqueue path, for backfills in the same process.
func (r *Receiver) Enqueuer() *Enqueuer { return r.enq }

// Handler is the receiver's HTTP handler: the webhook routes and /healthz.
func (r *Receiver) Handler() http.Handler { return r.handler }

// Run listens on Server.Listen and serves until ctx is done, then shuts down gracefully.
func (r *Receiver) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", r.server.Listen)
	if err != nil {
		return fmt.Errorf("receiver: listen: %w", err)
	}
	return r.Serve(ctx, ln)
}

// Serve serves on ln until ctx is done, then stops accepting, lets in-flight requests finish
// within Server.ShutdownTimeout and returns nil; requests still running after that are cut
// and the timeout is returned. ln is closed on return.
func (r *Receiver) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           r.handler,
		ReadHeaderTimeout: r.server.ReadHeaderTimeout,
		ReadTimeout:       r.server.ReadTimeout,
		WriteTimeout:      r.server.WriteTimeout,
		IdleTimeout:       r.server.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(r.log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	r.log.Info("receiver: listening", "addr", ln.Addr().String(), "routes", len(r.routes))

	select {
	case err := <-served:
		return fmt.Errorf("receiver: serve: %w", err)
	case <-ctx.Done():
	}
	r.log.Info("receiver: shutting down", "timeout", r.server.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.server.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) && serr != nil {
		return fmt.Errorf("receiver: serve: %w", serr)
	}
	if err != nil {
		_ = srv.Close()
		return fmt.Errorf("receiver: shutdown: %w", err)
	}
	r.log.Info("receiver: stopped")
	return nil
}
