package worker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/durable"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// TestPipelineWaitsForReplicas: with a replica that cannot confirm, the call's lease is not
// taken (so nothing is delivered) and the failure does not use up an attempt; once the
// replica is back the call goes out once, and its lease, state and written lengths are on
// the replica when Process returns.
func TestPipelineWaitsForReplicas(t *testing.T) {
	nodes := redistest.StartReplicated(t, 1)
	master, replica := nodes[0], nodes[1]
	rdb := master.Client()
	conn := &recorder{}
	p := NewPipeline(PipelineOptions{
		Redis:    rdb,
		Routes:   map[string]Route{"default": {Mapping: func() Renderer { return hubspotMapping(t) }, Connector: conn}},
		StateTTL: time.Hour, WrittenTTL: 24 * time.Hour, LockTTL: time.Minute,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Acks:   durable.New(rdb, config.AckAuto, testAckTimeout),
	})
	ctx := context.Background()
	ev := sampleEvent(t, sampleAnalysis, time.Now())

	replica.Pause()
	err := p.Process(ctx, ev)
	var de *durable.Error
	if !errors.As(err, &de) || isFailure(err) {
		t.Fatalf("Process with the replica paused = %v; want a *durable.Error that does not count as a failure", err)
	}
	if len(conn.recs) != 0 {
		t.Errorf("delivered %d record(s) under a lease no replica held", len(conn.recs))
	}
	if n := rdb.Exists(ctx, lockKey(ev.Route, ev.Detail.ID)).Val(); n != 0 {
		t.Error("the unconfirmed lease was kept: the retry would find its own call busy")
	}
	replica.Resume()

	if err := p.Process(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if len(conn.recs) != 1 {
		t.Fatalf("delivered %d records, want 1", len(conn.recs))
	}
	rr := replica.Client()
	if rr.Exists(ctx, stateKey(ev.Route, ev.Detail.ID)).Val() != 1 || rr.Exists(ctx, writtenKey(ev.Route, ev.Detail.ID)).Val() != 1 {
		t.Error("state or written lengths not on the replica when Process returned")
	}
}

// TestLedgerWaitsForReplicas: a ledger entry the replica did not confirm fails the task as
// throttled (retried, not counted), after the delivery itself succeeded.
func TestLedgerWaitsForReplicas(t *testing.T) {
	nodes := redistest.StartReplicated(t, 1)
	master, replica := nodes[0], nodes[1]
	rdb := master.Client()
	cfg := config.Default()
	w, err := New(Options{Redis: rdb, Queue: cfg.Queue, Worker: cfg.Worker,
		Processor: procFunc(func(context.Context, *miitel.Event) error {
			replica.Pause() // the delivery happened; the ledger comes next
			return nil
		}),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Acks:   durable.New(rdb, config.AckAuto, testAckTimeout)})
	if err != nil {
		t.Fatal(err)
	}
	ev := &miitel.Event{Route: "r", CallID: "c", Detail: miitel.Detail{ID: "d1"}, Kind: miitel.KindAnalysis, DedupeKey: "k-d1"}
	task, err := tasks.NewCallEvent(ev, asynq.Queue(cfg.Queue.Name))
	if err != nil {
		t.Fatal(err)
	}
	err = w.handle(context.Background(), task)
	var de *durable.Error
	if !errors.As(err, &de) || isFailure(err) {
		t.Fatalf("handle with the replica paused at the ledger = %v; want a *durable.Error that does not count as a failure", err)
	}
	replica.Resume()
}

// pausingConnector delivers, then pauses the replica: what the pipeline writes after the
// CRM write (the written lengths) cannot be confirmed.
type pausingConnector struct {
	recorder
	replica *redistest.Server
}

func (c *pausingConnector) Deliver(ctx context.Context, rec *mappers.Record) (crm.Result, error) {
	res, err := c.recorder.Deliver(ctx, rec)
	c.replica.Pause()
	return res, err
}

// TestWrittenLengthsWaitForReplicas: written lengths the replica did not confirm fail the
// attempt as throttled, so the task is not done while a failover could lose them.
func TestWrittenLengthsWaitForReplicas(t *testing.T) {
	nodes := redistest.StartReplicated(t, 1)
	rdb := nodes[0].Client()
	conn := &pausingConnector{replica: nodes[1]}
	p := NewPipeline(PipelineOptions{
		Redis:    rdb,
		Routes:   map[string]Route{"default": {Mapping: func() Renderer { return hubspotMapping(t) }, Connector: conn}},
		StateTTL: time.Hour, WrittenTTL: 24 * time.Hour, LockTTL: time.Minute,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Acks:   durable.New(rdb, config.AckAuto, testAckTimeout),
	})
	err := p.Process(context.Background(), sampleEvent(t, sampleAnalysis, time.Now()))
	var de *durable.Error
	if !errors.As(err, &de) || isFailure(err) || de.Op != "worker: save written fields" {
		t.Fatalf("Process = %v; want the written lengths' *durable.Error, not counted as a failure", err)
	}
	nodes[1].Resume()
}

// testAckTimeout leaves a loaded 2-core machine under -race time to replicate what should
// succeed; the waits meant to fail (a paused replica) take this long each.
const testAckTimeout = time.Second
