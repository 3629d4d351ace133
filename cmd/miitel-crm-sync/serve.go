package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"sync/atomic"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/receiver"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/callstatus"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/replay"
)

// processOptions are the flags of serve, receiver and worker.
type processOptions struct {
	env    *environment
	config string
	name   string
	role   config.Role
}

func newServeCmd(env *environment) *cobra.Command {
	return newProcessCmd(env, "serve", config.RoleAll,
		"Run the receiver and the worker in one process",
		"Runs the webhook receiver and the CRM worker in one process. With no --config it runs the\n"+
			"embedded default: port 8080, one open route /webhooks/miitel/default, an in-process Redis\n"+
			"(nothing is durable) and a dry-run CRM connector that prints the requests it would send.")
}

func newReceiverCmd(env *environment) *cobra.Command {
	return newProcessCmd(env, "receiver", config.Role{Receiver: true, Admin: true},
		"Run only the webhook receiver (HTTP)",
		"Runs only the webhook receiver: answers MiiTel's challenge and queues every call detail\n"+
			"in Redis. Scale it separately from the worker; both must name the same Redis.")
}

func newWorkerCmd(env *environment) *cobra.Command {
	return newProcessCmd(env, "worker", config.Role{Worker: true, Admin: true},
		"Run only the CRM delivery worker",
		"Runs only the CRM worker: takes queued call events from Redis, renders the route's mapping\n"+
			"and upserts the activity into the CRM. Like every process it serves /healthz, /readyz,\n"+
			"/metrics and the admin API on ops.listen (default :9090).")
}

func newProcessCmd(env *environment, name string, role config.Role, short, long string) *cobra.Command {
	o := &processOptions{env: env, name: name, role: role}
	cmd := &cobra.Command{
		Use:   name + " [--config FILE]",
		Short: short,
		Long:  long,
		Args:  usageArgs(cobra.NoArgs),
		RunE:  func(cmd *cobra.Command, _ []string) error { return runProcess(cmd.Context(), o) },
	}
	configFlag(env, cmd.Flags(), &o.config)
	return cmd
}

// runProcess is main's run for the long-running subcommands: load config, build the logger,
// open Redis, build the role's parts, then run them under one context and wait for all of
// them to stop. Every part is built before any starts, so one that cannot be built leaves
// nothing running (a receiver listening while the process reports a failed start).
func runProcess(ctx context.Context, o *processOptions) error {
	env, role := o.env, o.role
	cfg, err := config.LoadFor(o.config, env.getenv, role)
	if err != nil {
		return configError(err)
	}
	log, text := newLogger(env, cfg.Log)
	env.redisLog.use(log)
	logStart(ctx, log, text, o.name, cfg)
	if limit, ok := receiverMemoryLimit(env.getenv, role, cfg.Server); ok {
		prev := debug.SetMemoryLimit(limit)
		defer debug.SetMemoryLimit(prev) // in-process runs (tests) get the runtime's back
		log.Info("memory limit set: server.max_inflight_bytes + 32 MiB (GOMEMLIMIT overrides)", "memory_limit_bytes", limit)
	}
	if pct, ok := receiverGCPercent(env.getenv, role, cfg.Server); ok {
		prev := debug.SetGCPercent(pct)
		defer debug.SetGCPercent(prev)
		log.Info("GC target set under the memory limit (GOGC overrides)", "gc_percent", pct)
	}

	rdb, closeRedis, err := openRedis(cfg.Redis, log)
	if err != nil {
		return err
	}
	defer closeRedis()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// Connectors fetch OAuth tokens on ctx while they are built; cancelled on return, it
	// also stops them when a later part fails to build.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	var parts []func() error
	// The connection check's results go into /readyz: the receiver's in serve, the ops
	// server's in a worker-only process. Built first, filled once the connectors exist.
	var checks *connChecks
	// ready is the receiver's readiness (can it acknowledge calls?) where there is one; a
	// worker-only process is ready while Redis answers.
	var ready func(context.Context) error
	if role.Worker {
		if checks, err = newConnChecks(cfg.Worker.CheckInterval, log.With("component", "check"), reg); err != nil {
			return err
		}
	}
	deps := opsDeps{cfg: cfg, rdb: rdb, log: log, serveAdmin: true}
	if role.Receiver {
		// The receiver notes each call it receives in the call status, inside its enqueue
		// script, so a call waiting for a worker reads as received, not as never sent.
		st, err := newStatusStore(cfg, rdb, log)
		if err != nil {
			return err
		}
		ro := receiver.Options{
			Routes: cfg.Routes, Server: cfg.Server, Queue: cfg.Queue, Redis: rdb,
			Logger: log.With("component", "receiver"), Registerer: reg,
			AckReplicas: ackReplicas(cfg.Redis), AckTimeout: cfg.Redis.AckTimeout,
			Status: receiver.Status{Lua: callstatus.NoteLua, Args: st},
		}
		if !cfg.Redis.Embedded() { // the in-process Redis has no replicas to wait for
			ro.AckReplicas, ro.AckTimeout = cfg.Redis.AckReplicas, cfg.Redis.AckTimeout
		}
		rcv, err := receiver.New(ro)
		if err != nil {
			return configError(err)
		}
		ready = rcv.Ready
		deps.backfill = replay.ReceiverEnqueuer(rcv.Enqueuer())
		parts = append(parts, func() error { return rcv.Run(ctx) })
	}
	var ops *operations
	if role.Worker {
		reg.MustRegister(worker.NewQueueCollector(rdb, cfg.Queue.Name))
		d, err := newDelivery(ctx, cfg, env.connectorBuilder(), rdb, log, reg, env.stdout)
		if err != nil {
			return err
		}
		deps.reg, deps.mappings = reg, d.mappings
		if ops, err = newOperations(deps); err != nil {
			return err
		}
		parts = append(parts, func() error { return ops.dead.Run(ctx) })
		// The receivers only note each receipt; workers fold the notes into the records.
		reg.MustRegister(ops.status.Collector())
		parts = append(parts, func() error { return ops.status.RunFolder(ctx, callstatus.FoldInterval) })
		logRecordKeys(log, cfg, d.mappings)
		checks.targets = checkTargets(cfg, d.conns, d.mappings)
		for _, s := range d.watchers {
			parts = append(parts, func() error { return s.Run(ctx) })
		}
		w, err := worker.New(worker.Options{
			Redis: rdb, Queue: cfg.Queue, Worker: cfg.Worker, Processor: d.proc,
			Logger: log.With("component", "worker"), Registerer: reg,
			DeadLetter: ops.dead, Status: ops.status, Acks: d.acks,
		})
		if err != nil {
			return err
		}
		parts = append(parts, func() error { return w.Run(ctx) })
		// In the background: a CRM that is unreachable or misconfigured never keeps a
		// worker from starting (its calls retry); the check only says so.
		parts = append(parts, func() error { checks.Run(ctx); return nil })
	}
	if ops == nil { // a receiver-only process: status and the admin API, no mappings
		if ops, err = newOperations(deps); err != nil {
			return err
		}
	}
	var checkResults func() any
	if checks != nil {
		checkResults = checks.results
	}
	srv, err := ops.opsServer(cfg, rdb, reg, log, checkResults, ready)
	if err != nil {
		return err
	}
	parts = append(parts, func() error { return srv.Run(ctx) })
	for _, run := range parts {
		g.Go(run)
	}
	err = g.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("stopped", "command", o.name)
	return nil
}

// newLogger builds the process's logger: text when log.format is text, or auto and stderr
// is a terminal (a person is reading); JSON otherwise (a log collector is). It reports
// whether it chose text.
func newLogger(env *environment, c config.Log) (*slog.Logger, bool) {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level)) // validated by config.Load
	opts := &slog.HandlerOptions{Level: lvl}
	text := c.Format == "text" || (c.Format == "auto" && env.terminal(env.stderr))
	if text {
		return slog.New(slog.NewTextHandler(env.stderr, opts)), true
	}
	return slog.New(slog.NewJSONHandler(env.stderr, opts)), false
}

// logStart logs the start and the configuration the process runs with: in JSON one nested
// object a log query can reach into, in text one line per section a person can read.
func logStart(ctx context.Context, log *slog.Logger, text bool, name string, cfg *config.Config) {
	if !text {
		log.Info("starting", "command", name, "version", version, "config", cfg)
		return
	}
	log.Info("starting", "command", name, "version", version, "config_file", cfg.Source)
	for _, s := range cfg.Sections() {
		log.LogAttrs(ctx, slog.LevelInfo, "configuration", append([]slog.Attr{slog.String("section", s.Name)}, s.Attrs...)...)
	}
}

// openRedis connects to the configured Redis, or starts the embedded in-process one.
func openRedis(c config.Redis, log *slog.Logger) (redis.UniversalClient, func(), error) {
	if c.Embedded() {
		rdb, stop, err := embeddedRedis()
		if err != nil {
			return nil, nil, err
		}
		log.Warn("NO REDIS CONFIGURED: using an in-process Redis. NOTHING IS DURABLE: queued calls are lost when this process stops. Set redis.url (or MCS_REDIS_URL) for anything but a trial.",
			"embedded_redis", rdb.Options().Addr)
		return rdb, stop, nil
	}
	rdb, err := dialRedis(c)
	if err != nil {
		return nil, nil, err
	}
	return rdb, func() { _ = rdb.Close() }, nil
}

// embeddedRedis starts an in-process Redis and a client of it.
func embeddedRedis() (*redis.Client, func(), error) {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		return nil, nil, fmt.Errorf("embedded redis: %w", err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true}) // as config.Redis.UniversalOptions
	return rdb, func() { _ = rdb.Close(); mr.Close() }, nil
}

// dialRedis is a client of the configured Redis. The admin commands (replay, oauth) call it
// directly: an embedded Redis would be a new, empty one, not the one a serve process uses.
func dialRedis(c config.Redis) (redis.UniversalClient, error) {
	if c.Embedded() {
		return nil, usagef("no Redis configured (redis.url, redis.sentinel or redis.cluster): the embedded in-process Redis belongs to a running serve process")
	}
	o, err := c.UniversalOptions()
	if err != nil {
		return nil, configError(err)
	}
	return redis.NewUniversalClient(o), nil
}

// configOptions are the flags of `config`.
type configOptions struct {
	env    *environment
	config string
	role   string
}

func newConfigCmd(env *environment, runF func(*configOptions) error) *cobra.Command {
	o := &configOptions{env: env}
	cmd := &cobra.Command{
		Use:   "config [--config FILE] [--role serve|receiver|worker]",
		Short: "Check a config file and print it resolved, secrets masked",
		Long: "Loads the config file exactly as the service would (defaults, file, MCS_* environment,\n" +
			"vendor defaults, secrets) and prints the effective configuration as JSON with secrets\n" +
			"masked: every value the service runs with, the CRMs' default rate limits and cache TTLs\n" +
			"included. Exit 2 lists every problem, each with file:line:col.\n" +
			"--role checks only the secrets that process resolves: a receiver needs the webhook\n" +
			"credentials, a worker the CRM credentials, serve both; all need Redis's.",
		Args: usageArgs(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			if runF != nil {
				return runF(o)
			}
			return runConfig(o)
		},
	}
	configFlag(env, cmd.Flags(), &o.config)
	cmd.Flags().StringVar(&o.role, "role", "serve", "which process's secrets to resolve: serve, receiver or worker")
	_ = cmd.RegisterFlagCompletionFunc("role", cobra.FixedCompletions([]string{"serve", "receiver", "worker"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func runConfig(o *configOptions) error {
	role, ok := map[string]config.Role{"serve": config.RoleAll, "receiver": {Receiver: true}, "worker": {Worker: true}}[o.role]
	if !ok {
		return usagef("--role %q is not serve, receiver or worker", o.role)
	}
	cfg, err := config.LoadFor(o.config, o.env.getenv, role)
	if err != nil {
		return configError(err)
	}
	_, err = io.WriteString(o.env.stdout, cfg.DumpIndented()+"\n")
	return err
}

// redisLogSink is go-redis's process-wide logger (redis.SetLogger, set once in main): its
// lines (a failed dial, a Sentinel's new master) go through the running command's slog
// logger (config.RedisLogger), as JSON records at a level, never as plain text into a JSON
// log. Before a command has its logger, and in commands that build none, a text logger
// on stderr takes the warnings.
type redisLogSink struct {
	log      atomic.Pointer[slog.Logger]
	fallback *slog.Logger
}

func newRedisLogSink(stderr io.Writer) *redisLogSink {
	return &redisLogSink{fallback: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
}

// use makes log the one go-redis writes to. A nil sink (tests running commands
// in-process, where main set no logger) ignores it.
func (s *redisLogSink) use(log *slog.Logger) {
	if s != nil {
		s.log.Store(log)
	}
}

// Printf implements go-redis's logger interface.
func (s *redisLogSink) Printf(ctx context.Context, format string, v ...any) {
	log := s.log.Load()
	if log == nil {
		log = s.fallback
	}
	config.RedisLogger{Log: log}.Printf(ctx, format, v...)
}
