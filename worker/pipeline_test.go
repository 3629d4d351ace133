package worker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
)

// recorder is a connector that keeps every record it was given.
type recorder struct {
	mu   sync.Mutex
	recs []*mappers.Record
	err  error
}

func (r *recorder) Deliver(_ context.Context, rec *mappers.Record) (crm.Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return crm.Result{}, r.err
	}
	r.recs = append(r.recs, rec)
	return crm.Result{ID: "crm-1", Created: len(r.recs) == 1}, nil
}

func (r *recorder) last(t *testing.T) *mappers.Record {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.recs) == 0 {
		t.Fatal("nothing delivered")
	}
	return r.recs[len(r.recs)-1]
}

func field(rec *mappers.Record, name string) (any, bool) {
	for _, f := range rec.Fields {
		if f.Name == name {
			return f.Value, true
		}
	}
	return nil, false
}

type renderFunc func(ev *miitel.Event) (*mappers.Record, *mappers.Skip, error)

func (f renderFunc) Render(ev *miitel.Event) (*mappers.Record, *mappers.Skip, error) { return f(ev) }

func newTestPipeline(t *testing.T, r Renderer, conn crm.Connector) (*Pipeline, *redistest.Server) {
	t.Helper()
	srv := redistest.Start(t)
	p := NewPipeline(PipelineOptions{
		Redis:    srv.Client(),
		Routes:   map[string]Route{"default": {Mapping: func() Renderer { return r }, Connector: conn}},
		StateTTL: time.Hour, WrittenTTL: 24 * time.Hour, LockTTL: time.Minute,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	return p, srv
}

func hubspotMapping(t *testing.T) Renderer {
	t.Helper()
	m, err := mappers.Builtin("hubspot")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// With the shipped HubSpot mapping: the minutes event after the analysis event renders a
// body that has both; with the state expired in between, the minutes-only body is shorter
// than the written one and is held back, while the other fields still go out.
func TestPipelineMergesAndGuardsLongFieldsAfterStateExpiry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	analysis := sampleEvent(t, sampleAnalysis, t0)
	minutes := minutesFor(t, analysis, t0.Add(time.Hour))

	t.Run("state kept", func(t *testing.T) {
		conn := &recorder{}
		p, _ := newTestPipeline(t, hubspotMapping(t), conn)
		if err := p.Process(ctx, analysis); err != nil {
			t.Fatal(err)
		}
		if err := p.Process(ctx, minutes); err != nil {
			t.Fatal(err)
		}
		body, _ := field(conn.last(t), "hs_call_body")
		s, _ := body.(string)
		if !strings.Contains(s, "議題") || !strings.Contains(s, "大項目") {
			t.Errorf("merged body lacks the minutes or the memo:\n%s", s)
		}
	})

	t.Run("state expired", func(t *testing.T) {
		conn := &recorder{}
		p, srv := newTestPipeline(t, hubspotMapping(t), conn)
		if err := p.Process(ctx, analysis); err != nil {
			t.Fatal(err)
		}
		written, _ := field(conn.last(t), "hs_call_body")
		if err := srv.Client().Del(ctx, stateKey("default", analysis.Detail.ID)).Err(); err != nil {
			t.Fatal(err)
		}
		if err := p.Process(ctx, minutes); err != nil {
			t.Fatal(err)
		}
		rec := conn.last(t)
		// The minutes-only body is far shorter than the transcript body written before.
		if body, ok := field(rec, "hs_call_body"); ok {
			t.Errorf("a minutes-only event replaced the body after the state expired:\nwritten %d bytes, sent %d", len(written.(string)), len(body.(string)))
		}
		if _, ok := field(rec, "hs_timestamp"); !ok {
			t.Error("the other fields must still be sent")
		}
	})
}

func TestPipelineErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ev := sampleEvent(t, sampleSeed, time.Now())

	t.Run("unknown route is permanent", func(t *testing.T) {
		p, _ := newTestPipeline(t, hubspotMapping(t), &recorder{})
		other := *ev
		other.Route = "gone"
		if err := p.Process(ctx, &other); !errors.Is(err, asynq.SkipRetry) {
			t.Errorf("err = %v, want SkipRetry", err)
		}
	})
	t.Run("mapping error is permanent", func(t *testing.T) {
		p, _ := newTestPipeline(t, renderFunc(func(*miitel.Event) (*mappers.Record, *mappers.Skip, error) {
			return nil, nil, errors.New("fields[2].value: division by zero")
		}), &recorder{})
		err := p.Process(ctx, ev)
		if !errors.Is(err, asynq.SkipRetry) || !strings.Contains(err.Error(), "division by zero") {
			t.Errorf("err = %v, want SkipRetry with the mapping's message", err)
		}
	})
	t.Run("skip delivers nothing", func(t *testing.T) {
		conn := &recorder{}
		p, _ := newTestPipeline(t, renderFunc(func(*miitel.Event) (*mappers.Record, *mappers.Skip, error) {
			return nil, &mappers.Skip{Reason: "internal call"}, nil
		}), conn)
		if err := p.Process(ctx, ev); err != nil {
			t.Fatal(err)
		}
		if len(conn.recs) != 0 {
			t.Error("a skipped call was delivered")
		}
	})
	t.Run("connector error passes through classified", func(t *testing.T) {
		want := &crm.Error{Class: crm.Throttled, Op: "hubspot", Status: 429, After: 3 * time.Second}
		p, _ := newTestPipeline(t, hubspotMapping(t), &recorder{err: want})
		err := p.Process(ctx, ev)
		var ce *crm.Error
		if !errors.As(err, &ce) || ce != want || isFailure(err) {
			t.Errorf("err = %v: the connector's classified error must reach the retry policy", err)
		}
	})
	t.Run("locked call retries soon without failing", func(t *testing.T) {
		p, srv := newTestPipeline(t, hubspotMapping(t), &recorder{})
		_, release, err := callLock{rdb: srv.Client(), ttl: time.Minute}.acquire(ctx, ev.Route, ev.Detail.ID)
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		err = p.Process(ctx, ev)
		if isFailure(err) {
			t.Errorf("err = %v, want a throttled (not counted) error", err)
		}
		if d := (retryPolicy{base: time.Minute, max: time.Hour}).delay(0, err, nil); d != 2*time.Second {
			t.Errorf("retry after %v, want 2s", d)
		}
	})
}

// TestCallStateFootprint measures what one call leaves in Redis after its analysis and
// minutes events: the compressed merged state and the written-lengths hash. Run with -v to
// see the figures.
func TestCallStateFootprint(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t0 := time.Now()
	analysis := sampleEvent(t, sampleSeed, t0)
	minutes := minutesFor(t, analysis, t0.Add(time.Hour))
	p, srv := newTestPipeline(t, hubspotMapping(t), &recorder{})
	for _, ev := range []*miitel.Event{analysis, minutes} {
		if err := p.Process(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	rdb := srv.Client()
	state := rdb.MemoryUsage(ctx, stateKey("default", analysis.Detail.ID)).Val()
	written := rdb.MemoryUsage(ctx, writtenKey("default", analysis.Detail.ID)).Val()
	t.Logf("seed_sample call (analysis + minutes): state %d bytes, written lengths %d bytes in Redis (MEMORY USAGE)", state, written)
	// The seed call's payload is 11 KB of JSON; its state must stay a fraction of it.
	if state == 0 || state > 4096 {
		t.Errorf("state uses %d bytes, want 1..4096", state)
	}
}
