package crm

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/durable"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
)

// TestIDMapWaitsForReplicas: the pending marker must be on the replica before the create is
// sent, and the stored id before the task is done; a write the replica did not confirm
// retries as Throttled and never leads to a second create.
func TestIDMapWaitsForReplicas(t *testing.T) {
	nodes := redistest.StartReplicated(t, 1)
	master, replica := nodes[0], nodes[1]
	rdb := master.Client()
	ctx := context.Background()
	m := NewIDMap(rdb, "hs", time.Hour, time.Minute).WithAcks(durable.New(rdb, config.AckAuto, time.Second)) // room for a loaded 2-core machine under -race
	notReplicated := func(t *testing.T, err error) {
		t.Helper()
		var ce *Error
		if !errors.As(err, &ce) || ce.Class != Throttled || ce.Code != "NOT_REPLICATED" || ce.After <= 0 {
			t.Fatalf("Upsert = %v, want a Throttled NOT_REPLICATED error with a retry delay", err)
		}
	}

	t.Run("marker not replicated: no create, no marker left", func(t *testing.T) {
		crm := &fakeCRM{}
		replica.Pause()
		_, _, err := m.Upsert(ctx, "calls", "d1", "c9", crm.ops())
		notReplicated(t, err)
		if len(crm.calls) != 0 {
			t.Errorf("CRM requests %v sent under a marker no replica holds", crm.calls)
		}
		if _, ok, err := m.Get(ctx, "calls", "d1"); err != nil || ok {
			t.Errorf("marker left on the master (%v, %v): the retry would wait for the search index", ok, err)
		}
		replica.Resume()
		if id, created, err := m.Upsert(ctx, "calls", "d1", "c9", crm.ops()); err != nil || !created || id != "new-1" {
			t.Errorf("retry = %q created %v, %v; want new-1 created", id, created, err)
		}
	})

	t.Run("id not replicated: retried, updated, not created twice", func(t *testing.T) {
		crm := &fakeCRM{}
		ops := crm.ops()
		create := ops.Create
		ops.Create = func(ctx context.Context) (string, error) {
			replica.Pause() // after the marker was confirmed
			return create(ctx)
		}
		_, _, err := m.Upsert(ctx, "calls", "d2", "c9", ops)
		notReplicated(t, err)
		replica.Resume()
		if _, _, err := m.Upsert(ctx, "calls", "d2", "c9", crm.ops()); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"create", "update new-1"}, crm.calls); diff != "" {
			t.Errorf("CRM requests (-want +got):\n%s", diff)
		}
	})

	t.Run("confirmed entries are on the replica", func(t *testing.T) {
		if _, _, err := m.Upsert(ctx, "calls", "d3", "c9", (&fakeCRM{}).ops()); err != nil {
			t.Fatal(err)
		}
		replicaMap := NewIDMap(replica.Client(), "hs", time.Hour, time.Minute)
		if e, ok, err := replicaMap.Get(ctx, "calls", "d3"); err != nil || !ok || e.ID != "new-1" {
			t.Errorf("replica holds %+v (%v, %v) right after Upsert returned, want id new-1", e, ok, err)
		}
	})
}
