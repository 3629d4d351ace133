package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/receiver"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/admin"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/callstatus"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/deadletter"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/replay"
)

// operations is what a process keeps for the people who run it: the status of every call,
// our own dead letter, the replayer, and the admin API that serves them on the ops listener.
// The CLI commands (status, replay) build the same pieces, so the API and the CLI answer
// from one implementation.
type operations struct {
	status   *callstatus.Store
	dead     *deadletter.Store
	replayer *replay.Replayer
	// admin is nil when no admin credential is configured: an API nobody may call is not
	// served at all.
	admin *admin.Handler
	loc   *time.Location
}

// opsDeps are what newOperations takes from the process.
type opsDeps struct {
	cfg *config.Config
	rdb redis.UniversalClient
	log *slog.Logger
	// reg receives the dead letter's metrics; nil registers none (a receiver-only process,
	// so that one queue's figures are not exported twice by every replica kind).
	reg prometheus.Registerer
	// mappings are the routes' mappings when this process has loaded them (a worker); a
	// replay dry run renders with them. Nil: dry runs say the mapping is not loaded here.
	mappings map[string]func() *mappers.Mapping
	// backfill queues backfilled events through the receiver's path: the process's own
	// receiver's enqueue; nil builds one (newBackfillEnqueuer).
	backfill replay.Enqueuer
	// serveAdmin builds the admin API (a long-running process with its admin secrets
	// resolved); the CLI commands use the same pieces without it.
	serveAdmin bool
}

func newOperations(d opsDeps) (*operations, error) {
	cfg := d.cfg
	loc, err := time.LoadLocation(cfg.Status.TimeZone)
	if err != nil {
		return nil, configError(fmt.Errorf("status.time_zone: %w", err))
	}
	st, err := newStatusStore(cfg, d.rdb, d.log)
	if err != nil {
		return nil, err
	}
	dl, err := deadletter.New(d.rdb, deadletter.Options{
		Queue: cfg.Queue.Name, Config: cfg.DeadLetter, Routes: cfg.Routes,
		Logger: d.log.With("component", "deadletter"), Registerer: d.reg,
	})
	if err != nil {
		return nil, configError(err)
	}
	rp, err := replay.New(replay.Options{
		Redis: d.rdb, Queue: cfg.Queue, DeadLetter: dl, Status: st,
		Mapping: func(route string) (replay.Renderer, bool) {
			get, ok := d.mappings[route]
			if !ok {
				return nil, false
			}
			return get(), true
		},
		Logger: d.log.With("component", "replay"),
	})
	if err != nil {
		return nil, err
	}
	o := &operations{status: st, dead: dl, replayer: rp, loc: loc}
	if !d.serveAdmin || len(cfg.Admin.Tokens)+len(cfg.Admin.Basic) == 0 {
		return o, nil
	}
	backfill := d.backfill
	if backfill == nil {
		if backfill, err = newBackfillEnqueuer(cfg, d.rdb, st); err != nil {
			return nil, err
		}
	}
	o.admin, err = admin.New(admin.Options{
		Auth: cfg.Admin, Status: st, DeadLetter: dl, Replayer: rp, Backfill: backfill,
		Routes: cfg.Routes, MaxLineBytes: cfg.Server.MaxBodyBytes, Redis: d.rdb,
		Logger: d.log.With("component", "admin"), Location: loc,
	})
	if err != nil {
		return nil, configError(err)
	}
	return o, nil
}

// newStatusStore is the call status of the configured queue: the receiver records what it
// received with it, the worker each attempt, the CLI and the admin API read it.
func newStatusStore(cfg *config.Config, rdb redis.UniversalClient, log *slog.Logger) (*callstatus.Store, error) {
	st, err := callstatus.New(rdb, callstatus.Options{
		Queue: cfg.Queue.Name, Config: cfg.Status, Routes: cfg.Routes, Connections: cfg.Connections,
		Logger: log.With("component", "status"),
	})
	if err != nil {
		return nil, configError(err)
	}
	return st, nil
}

// ackReplicas is redis.ack_replicas as the receiver applies it: none on the embedded
// in-process Redis, which has no replicas and no WAIT.
func ackReplicas(c config.Redis) config.AckReplicas {
	if c.Embedded() {
		return 0
	}
	return c.AckReplicas
}

// newBackfillEnqueuer is the receiver's enqueue for a backfill outside a receiver process
// (the replay command, a worker's admin API): the same script, dedupe, call status and wait
// for replicas as a webhook call.
func newBackfillEnqueuer(cfg *config.Config, rdb redis.UniversalClient, st *callstatus.Store) (replay.Enqueuer, error) {
	e, err := receiver.NewEnqueuer(receiver.EnqueueOptions{
		Redis: rdb, Queue: cfg.Queue, AckReplicas: ackReplicas(cfg.Redis), AckTimeout: cfg.Redis.AckTimeout,
		Timeout: cfg.Server.EnqueueTimeout, Status: receiver.Status{Lua: callstatus.NoteLua, Args: st},
	})
	if err != nil {
		return nil, configError(err)
	}
	return replay.ReceiverEnqueuer(e), nil
}

// opsServer is the process's ops listener (ops.listen): probes, metrics, the admin API and
// pprof, apart from the webhook port.
func (o *operations) opsServer(cfg *config.Config, rdb redis.UniversalClient, g prometheus.Gatherer, log *slog.Logger, checks func() any, ready func(context.Context) error) (*worker.Ops, error) {
	oo := worker.OpsOptions{
		Addr: cfg.Ops.Listen, Redis: rdb, Gatherer: g, Ready: ready,
		ShutdownTimeout: max(cfg.Server.ShutdownTimeout, cfg.Worker.ShutdownTimeout), Logger: log.With("component", "ops"),
		Checks: checks, MetricsAuth: cfg.Ops.MetricsAuth, Pprof: cfg.Ops.Pprof,
	}
	if o.admin != nil {
		oo.Admin = o.admin
	} else if cfg.Ops.MetricsAuth || cfg.Ops.Pprof {
		return nil, configError(fmt.Errorf("ops: metrics_auth and pprof need admin credentials (admin.tokens or admin.basic)"))
	}
	ops, err := worker.NewOps(oo)
	if err != nil {
		return nil, configError(err)
	}
	if o.admin == nil {
		log.Info("admin API not served: no admin credentials configured (admin.tokens, admin.basic)")
	}
	return ops, nil
}
