package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/dryrun"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/hubspot"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/durable"
)

// delivery is the worker's processor with what must run beside it (mapping watchers), and
// what it was built from: the connector of each connection and the mapping of each route
// (the connection check and the start-up log read them).
type delivery struct {
	proc     worker.Processor
	watchers []*mappers.Store
	conns    map[string]crm.Connector
	mappings map[string]func() *mappers.Mapping
	// acks holds the worker's exactly-once writes to redis.ack_replicas.
	acks *durable.Acks
}

// newAcks is redis.ack_replicas for the worker's writes (worker/durable). The in-process
// Redis has no replicas to wait for.
func newAcks(cfg *config.Config, rdb redis.UniversalClient) *durable.Acks {
	if cfg.Redis.Embedded() {
		return durable.Off(rdb)
	}
	return durable.New(rdb, cfg.Redis.AckReplicas, cfg.Redis.AckTimeout)
}

// connectorBuilder builds the connector of one connection. newConnector is the real one;
// tests pass others (environment.connectors) to run the worker's wiring against fakes.
type connectorBuilder func(ctx context.Context, cfg *config.Config, cn config.Connection, rdb redis.UniversalClient, log *slog.Logger, reg prometheus.Registerer, out io.Writer) (crm.Connector, error)

// buildConnectors builds the connector of every connection, exactly as the worker uses them.
func buildConnectors(ctx context.Context, cfg *config.Config, build connectorBuilder, rdb redis.UniversalClient, log *slog.Logger, reg prometheus.Registerer, out io.Writer) (map[string]crm.Connector, error) {
	conns := map[string]crm.Connector{}
	for _, cn := range cfg.Connections {
		if capped := capBatch(cn.Batch, cfg.Worker.Concurrency); capped != cn.Batch {
			log.Info("batch max_size capped at worker.concurrency: a batch cannot hold more calls than run at once, and waiting for more would only wait out the linger",
				"connection", cn.Name, "max_size", cn.Batch.MaxSize, "worker_concurrency", cfg.Worker.Concurrency)
			cn.Batch = capped
		}
		c, err := build(ctx, cfg, cn, rdb, log, reg, out)
		if err != nil {
			return nil, err
		}
		conns[cn.Name] = c
	}
	return conns, nil
}

// capBatch caps a connection's batch size at the process's worker.concurrency. Each call
// of a batch is a task blocked in Deliver, so no batch can ever hold more calls than the
// worker runs at once: a batch of that size is full, and with a larger max_size every
// batch would wait out its whole linger for calls that cannot come.
func capBatch(b config.Batch, concurrency int) config.Batch {
	if concurrency > 0 && b.MaxSize > concurrency {
		b.MaxSize = concurrency
	}
	return b
}

// newDelivery builds, per route, the mapping and the CRM connector, and the pipeline that
// uses them. ctx is the process's long-lived context: connectors fetch OAuth tokens on it.
func newDelivery(ctx context.Context, cfg *config.Config, build connectorBuilder, rdb redis.UniversalClient, log *slog.Logger, reg prometheus.Registerer, out io.Writer) (*delivery, error) {
	conns, err := buildConnectors(ctx, cfg, build, rdb, log, reg, out)
	if err != nil {
		return nil, err
	}
	kinds := map[string]string{}
	for _, cn := range cfg.Connections {
		kinds[cn.Name] = cn.Type
	}
	var dry crm.Connector // the route without a connection: print what would be sent
	d := &delivery{conns: conns, mappings: map[string]func() *mappers.Mapping{}}
	routes := map[string]worker.Route{}
	for _, r := range cfg.Routes {
		conn, kind := conns[r.Connection], kinds[r.Connection]
		if r.Connection == "" {
			if dry == nil {
				dry = dryrun.New(dryrun.Options{Out: out})
			}
			conn, kind = dry, "dryrun"
		}
		get, store, err := routeMapping(r, kind, log, reg)
		if err != nil {
			return nil, err
		}
		if crmOf := get().CRM(); kind != "dryrun" && crmOf != kind {
			return nil, configError(fmt.Errorf("routes %s: mapping %s is written for %s but connection %q is %s", r.Name, get().File(), crmOf, r.Connection, kind))
		}
		if store != nil && cfg.Worker.HotReload {
			d.watchers = append(d.watchers, store)
		}
		d.mappings[r.Name] = get
		routes[r.Name] = worker.Route{Mapping: func() worker.Renderer { return get() }, Connector: conn, Connection: cmp.Or(r.Connection, "dryrun")}
	}
	d.acks = newAcks(cfg, rdb)
	d.proc = worker.NewPipeline(worker.PipelineOptions{
		Redis: rdb, Routes: routes, Acks: d.acks,
		StateTTL: cfg.Worker.StateTTL, WrittenTTL: cfg.Worker.IDMapTTL,
		Logger: log.With("component", "pipeline"), Registerer: reg,
	})
	return d, nil
}

// routeMapping loads a route's mapping file into a (watchable) store, or takes the shipped
// mapping of the route's CRM when it names none.
func routeMapping(r config.Route, kind string, log *slog.Logger, reg prometheus.Registerer) (func() *mappers.Mapping, *mappers.Store, error) {
	if r.Mapping == "" {
		name := kind
		if name == "dryrun" {
			name = "hubspot"
		}
		m, err := mappers.Builtin(name)
		if err != nil {
			return nil, nil, fmt.Errorf("routes %s: %w", r.Name, err)
		}
		return func() *mappers.Mapping { return m }, nil, nil
	}
	s, err := mappers.NewStore(r.Mapping, mappers.StoreOptions{Logger: log.With("component", "mapping", "route", r.Name), Registerer: reg})
	if err != nil {
		return nil, nil, configError(fmt.Errorf("routes %s: %w", r.Name, err))
	}
	return s.Current, s, nil
}

// loadRouteMapping is a route's mapping, loaded once (no watcher): its file, or the
// shipped mapping of the route's CRM.
func loadRouteMapping(r config.Route, kind string) (*mappers.Mapping, error) {
	if r.Mapping == "" {
		if kind == "dryrun" || kind == "" {
			kind = "hubspot"
		}
		m, err := mappers.Builtin(kind)
		if err != nil {
			return nil, fmt.Errorf("routes %s: %w", r.Name, err)
		}
		return m, nil
	}
	m, err := mappers.Load(r.Mapping)
	if err != nil {
		return nil, configError(fmt.Errorf("routes %s: %w", r.Name, err))
	}
	return m, nil
}

// newConnector is the one place that knows every CRM: a new CRM is a package under
// worker/crm and a case here.
func newConnector(ctx context.Context, cfg *config.Config, cn config.Connection, rdb redis.UniversalClient, log *slog.Logger, reg prometheus.Registerer, out io.Writer) (crm.Connector, error) {
	l := log.With("component", "crm") // connectors add their connection name
	o := crm.Options{Connection: cn, IDMapTTL: cfg.Worker.IDMapTTL, Redis: rdb, Acks: newAcks(cfg, rdb), Logger: l, Registerer: reg, Context: ctx}
	switch cn.Type {
	case "hubspot":
		return hubspot.New(hubspot.Options{Options: o})
	case "salesforce":
		return salesforce.New(o)
	case "dryrun":
		return dryrun.New(dryrun.Options{Out: out}), nil
	}
	return nil, configError(fmt.Errorf("connections %s: unknown type %q", cn.Name, cn.Type))
}
