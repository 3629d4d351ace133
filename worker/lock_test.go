package worker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
)

// The lease outlives its TTL while the handler runs, because it is renewed.
func TestLockLeaseIsRenewedWhileHeld(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client()
	l := callLock{rdb: rdb, ttl: 300 * time.Millisecond}
	held, release, err := l.acquire(ctx, "r", "d1")
	if err != nil {
		t.Fatal(err)
	}
	key := lockKey("r", "d1")
	// Three renewals seen (the TTL jumping back up) take longer than the lease itself.
	renewals, last := 0, rdb.PTTL(ctx, key).Val()
	start := time.Now()
	waitFor(t, "three renewals", func() bool {
		ttl := rdb.PTTL(ctx, key).Val()
		if ttl > last {
			renewals++
		}
		last = ttl
		return renewals >= 3
	})
	if time.Since(start) < l.ttl {
		t.Logf("three renewals within one lease (%v): fine, the lease was never at risk", time.Since(start))
	}
	if held.Err() != nil {
		t.Fatalf("handler context cancelled while the lease was held: %v", context.Cause(held))
	}
	release()
	if n := rdb.Exists(ctx, key).Val(); n != 0 {
		t.Error("release left the lease behind")
	}
	if held.Err() == nil {
		t.Error("the handler context outlives release")
	}
}

// A lease taken over by someone else (it lapsed while this holder stalled) cancels the
// handler, and this holder's release leaves the new holder's lease alone.
func TestLockLostLeaseCancelsTheHandler(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client()
	l := callLock{rdb: rdb, ttl: 150 * time.Millisecond}
	held, release, err := l.acquire(ctx, "r", "d1")
	if err != nil {
		t.Fatal(err)
	}
	key := lockKey("r", "d1")
	if err := rdb.Set(ctx, key, "another-worker", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the handler context was not cancelled after the lease was lost")
	}
	if !errors.Is(context.Cause(held), errLeaseLost) {
		t.Errorf("cause %v, want errLeaseLost", context.Cause(held))
	}
	release()
	if v := rdb.Get(ctx, key).Val(); v != "another-worker" {
		t.Errorf("release removed the new holder's lease (now %q)", v)
	}
}

// A dead holder (no renewals) blocks the call for at most one lease: busy until it lapses,
// then free.
func TestLockDeadHolderLapses(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client()
	key := lockKey("r", "d1")
	if err := rdb.Set(ctx, key, "dead-worker", 200*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	l := callLock{rdb: rdb}
	_, _, err := l.acquire(ctx, "r", "d1")
	var busy busyError
	if !errors.As(err, &busy) || isFailure(err) {
		t.Fatalf("acquire over a live lease: %v, want a throttled busy error", err)
	}
	waitFor(t, "the dead holder's lease to lapse", func() bool { return rdb.Exists(ctx, key).Val() == 0 })
	_, release, err := l.acquire(ctx, "r", "d1")
	if err != nil {
		t.Fatalf("acquire after the lease lapsed: %v", err)
	}
	release()
}

// blockingConnector holds Deliver until its context ends, like a CRM request in flight
// during a shutdown.
type blockingConnector struct{ started chan struct{} }

func (b blockingConnector) Deliver(ctx context.Context, _ *mappers.Record) (crm.Result, error) {
	close(b.started)
	<-ctx.Done()
	return crm.Result{}, &crm.Error{Class: crm.Transient, Op: "test", Err: ctx.Err()}
}

// Every way out of Process releases the lease: success, a failed delivery, and a delivery
// cut short by shutdown (the handler's context cancelled, as asynq does on SIGTERM).
func TestPipelineReleasesTheLeaseOnEveryExit(t *testing.T) {
	ctx := context.Background()
	ev := sampleEvent(t, sampleAnalysis, time.Now())
	key := lockKey(ev.Route, ev.Detail.ID)
	held := func(rdb redis.UniversalClient) bool { return rdb.Exists(ctx, key).Val() == 1 }

	t.Run("delivered", func(t *testing.T) {
		p, srv := newTestPipeline(t, hubspotMapping(t), &recorder{})
		if err := p.Process(ctx, ev); err != nil {
			t.Fatal(err)
		}
		if held(srv.Client()) {
			t.Error("lease left behind after delivery")
		}
	})
	t.Run("failed", func(t *testing.T) {
		p, srv := newTestPipeline(t, hubspotMapping(t), &recorder{err: &crm.Error{Class: crm.Transient, Op: "test"}})
		if err := p.Process(ctx, ev); err == nil {
			t.Fatal("want the connector's error")
		}
		if held(srv.Client()) {
			t.Error("lease left behind after a failed delivery")
		}
	})
	t.Run("shutdown", func(t *testing.T) {
		bc := blockingConnector{started: make(chan struct{})}
		p, srv := newTestPipeline(t, hubspotMapping(t), bc)
		tctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- p.Process(tctx, ev) }()
		<-bc.started
		if !held(srv.Client()) {
			t.Fatal("no lease while delivering")
		}
		cancel()
		if err := <-done; err == nil {
			t.Fatal("want an error from the cut-short delivery")
		}
		if held(srv.Client()) {
			t.Error("lease left behind after shutdown cut the delivery short")
		}
	})
}
