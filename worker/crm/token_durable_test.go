package crm

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/durable"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
)

// TestRotatedRefreshTokenWaitsForReplicas: the endpoint invalidates the previous refresh
// token when it rotates, so the new one must be on the replicas before its access token is
// used. A rotation the replica does not confirm hands out no token and retries as
// Throttled (no attempt used); the new refresh token is kept and used next, and once
// Token returns the replica holds it.
func TestRotatedRefreshTokenWaitsForReplicas(t *testing.T) {
	nodes := redistest.StartReplicated(t, 1)
	master, replica := nodes[0], nodes[1]
	rdb := master.Client()
	ctx := context.Background()
	te := newTokenEndpoint(t, "rt-0")
	te.rotate = true
	if err := NewTokenStore(rdb, "c1").SaveRefreshToken(ctx, "rt-0"); err != nil {
		t.Fatal(err)
	}
	s := newShared(t, rdb, te, func(o *TokenOptions) {
		o.Acks = durable.New(rdb, config.AckAuto, time.Second) // room for a loaded 2-core machine under -race
	})

	replica.Pause()
	_, err := s.Token(ctx)
	var ce *Error
	if !errors.As(err, &ce) || ce.Class != Throttled || ce.Code != "NOT_REPLICATED" || ce.After <= 0 {
		replica.Resume()
		t.Fatalf("Token with the replica paused during rotation = %v, want a Throttled NOT_REPLICATED error", err)
	}
	replica.Resume()

	tok, err := s.Token(ctx)
	if err != nil {
		t.Fatalf("Token once the replica is back: %v", err)
	}
	// rt-1 came with the first fetch and was not confirmed; the second fetch presented it
	// (the only valid one), got rt-2 and stored it on the replica before answering.
	te.mu.Lock()
	got := te.seen
	te.mu.Unlock()
	if len(got) != 2 || got[0] != "rt-0" || got[1] != "rt-1" {
		t.Fatalf("refresh tokens presented %q, want rt-0 then the unconfirmed rt-1", got)
	}
	if tok.AccessToken != "at-2" {
		t.Fatalf("access token %q, want at-2", tok.AccessToken)
	}
	if rt, err := NewTokenStore(replica.Client(), "c1").RefreshToken(ctx); err != nil || rt != "rt-2" {
		t.Fatalf("the replica holds refresh token %q (%v) right after Token returned, want rt-2", rt, err)
	}
}
