package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/receiver"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker"
)

func runServe(ctx context.Context, env *environment, args []string) error {
	return runProcess(ctx, env, args, "serve", config.RoleAll,
		"Runs the webhook receiver and the CRM worker in one process. With no --config it runs the\n"+
			"embedded default: port 8080, one open route /webhooks/miitel/default, an in-process Redis\n"+
			"(nothing is durable) and a dry-run CRM connector that logs the requests it would send.")
}

func runReceiver(ctx context.Context, env *environment, args []string) error {
	return runProcess(ctx, env, args, "receiver", config.Role{Receiver: true},
		"Runs only the webhook receiver: answers MiiTel's challenge and queues every call detail\n"+
			"in Redis. Scale it separately from the worker; both must name the same Redis.")
}

func runWorker(ctx context.Context, env *environment, args []string) error {
	return runProcess(ctx, env, args, "worker", config.Role{Worker: true},
		"Runs only the CRM worker: takes queued call events from Redis, renders the route's mapping\n"+
			"and upserts the activity into the CRM. Serves /healthz, /readyz and /metrics on\n"+
			"worker.metrics_listen (default :9090).")
}

// configFlag registers --config, defaulting to $MCS_CONFIG.
func configFlag(env *environment, fs *flag.FlagSet) *string {
	return fs.String("config", env.getenv("MCS_CONFIG"), "config file (YAML); empty runs the embedded default (env MCS_CONFIG)")
}

// runProcess is main's run for the long-running subcommands: load config, build the logger,
// open Redis, build the role's parts, then run them under one context and wait for all of
// them to stop. Every part is built before any starts, so one that cannot be built leaves
// nothing running (a receiver listening while the process reports a failed start).
func runProcess(ctx context.Context, env *environment, args []string, name string, role config.Role, description string) error {
	fs := newFlagSet(env, name, "[--config FILE]", description)
	cfgPath := configFlag(env, fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := config.LoadFor(*cfgPath, env.getenv, role)
	if err != nil {
		return usageError{err}
	}
	log := newLogger(env, cfg.Log)
	log.Info("starting", "command", name, "version", version, "config", cfg.Dump())

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
	if role.Receiver {
		rcv, err := receiver.New(receiver.Options{
			Routes: cfg.Routes, Server: cfg.Server, Queue: cfg.Queue, Redis: rdb,
			Logger: log.With("component", "receiver"), Registerer: reg, Gatherer: reg,
		})
		if err != nil {
			return usageError{err}
		}
		parts = append(parts, func() error { return rcv.Run(ctx) })
	}
	if role.Worker {
		reg.MustRegister(worker.NewQueueCollector(rdb, cfg.Queue.Name))
		d, err := newDelivery(ctx, cfg, rdb, log, reg, env.stdout)
		if err != nil {
			return err
		}
		for _, s := range d.watchers {
			parts = append(parts, func() error { return s.Run(ctx) })
		}
		w, err := worker.New(worker.Options{
			Redis: rdb, Queue: cfg.Queue, Worker: cfg.Worker, Processor: d.proc,
			Logger: log.With("component", "worker"), Registerer: reg,
		})
		if err != nil {
			return err
		}
		parts = append(parts, func() error { return w.Run(ctx) })
		if !role.Receiver { // the receiver already serves health and metrics in `serve`
			ops := worker.NewOps(cfg.Worker.MetricsListen, rdb, reg, cfg.Worker.ShutdownTimeout, log)
			parts = append(parts, func() error { return ops.Run(ctx) })
		}
	}
	for _, run := range parts {
		g.Go(run)
	}
	err = g.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("stopped", "command", name)
	return nil
}

func newLogger(env *environment, c config.Log) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level)) // validated by config.Load
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(env.stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(env.stderr, opts))
}

// openRedis connects to the configured Redis, or starts the embedded in-process one.
func openRedis(c config.Redis, log *slog.Logger) (redis.UniversalClient, func(), error) {
	if c.Embedded() {
		mr := miniredis.NewMiniRedis()
		if err := mr.Start(); err != nil {
			return nil, nil, fmt.Errorf("embedded redis: %w", err)
		}
		log.Warn("NO REDIS CONFIGURED: using an in-process Redis. NOTHING IS DURABLE: queued calls are lost when this process stops. Set redis.url (or MCS_REDIS_URL) for anything but a trial.",
			"embedded_redis", mr.Addr())
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		return rdb, func() { _ = rdb.Close(); mr.Close() }, nil
	}
	rdb, err := dialRedis(c)
	if err != nil {
		return nil, nil, err
	}
	return rdb, func() { _ = rdb.Close() }, nil
}

// dialRedis is a client of the configured Redis. The admin commands (replay, oauth) call it
// directly: an embedded Redis would be a new, empty one, not the one a serve process uses.
func dialRedis(c config.Redis) (redis.UniversalClient, error) {
	if c.Embedded() {
		return nil, usagef("no Redis configured (redis.url, redis.sentinel or redis.cluster): the embedded in-process Redis belongs to a running serve process")
	}
	o, err := c.UniversalOptions()
	if err != nil {
		return nil, usageError{err}
	}
	return redis.NewUniversalClient(o), nil
}

func runConfig(_ context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "config", "[--config FILE] [--role serve|receiver|worker]",
		"Loads the config file exactly as the service would (defaults, file, MCS_* environment,\n"+
			"secrets) and prints it as JSON with secrets masked. Exit 2 lists every problem.\n"+
			"--role checks only the secrets that process resolves: a receiver needs the webhook\n"+
			"credentials, a worker the CRM credentials, serve both; all need Redis's.")
	cfgPath := configFlag(env, fs)
	roleName := fs.String("role", "serve", "which process's secrets to resolve: serve, receiver or worker")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	role, ok := map[string]config.Role{"serve": config.RoleAll, "receiver": {Receiver: true}, "worker": {Worker: true}}[*roleName]
	if !ok {
		return usagef("config: --role %q is not serve, receiver or worker", *roleName)
	}
	cfg, err := config.LoadFor(*cfgPath, env.getenv, role)
	if err != nil {
		return usageError{err}
	}
	fmt.Fprintln(env.stdout, cfg.Dump())
	return nil
}
