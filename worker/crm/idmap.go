package crm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/durable"
)

// ErrNotFound is returned by an IDMapOps.Update whose CRM record no longer exists (deleted
// in the CRM); the map entry is dropped and the record created again.
var ErrNotFound = errors.New("crm: record not found")

// IDMap remembers, per connection, which CRM record was created for a MiiTel external id
// (the detail id), for CRMs whose activity object has no usable upsert (HubSpot calls
// without a unique property). Entries live for the TTL (config worker.id_map_ttl).
//
// The protocol, run by Upsert, makes "exactly one CRM record per external id" survive a
// crash between the CRM's create and the map write:
//
//  1. Entry with an id: update that record.
//  2. No entry: write a pending marker (with its time) BEFORE the create request, create,
//     then store the id. A crash before the create leaves a marker for a record that does
//     not exist; a crash after it leaves one for a record that does.
//  3. Pending marker found (an earlier attempt's outcome is unknown): the CRM's search
//     index lags writes (HubSpot: seconds), so while the marker is younger than SearchLag
//     the attempt fails Transient with After set to the remaining lag. Afterwards search by
//     the external id (HubSpot: hs_call_external_id, which every create sets): adopt the
//     record when found, otherwise renew the marker and create.
//
// It relies on one delivery per external id at a time, which the worker's per-call lock
// guarantees; the marker is not a lock. The residual risk is a search index lagging more
// than SearchLag after a crash, so keep SearchLag comfortably above the CRM's usual lag.
//
// With Acks (redis.ack_replicas) the marker and the stored id wait for replicas: the marker
// before the create is sent (a marker lost in a failover makes the retry create a second
// record instead of searching), the id before the task is done (without it the next event
// of the call has to find the record by search, within SearchLag's risk). A marker that is
// not replicated is dropped and no create is sent; either failure retries the task as
// Throttled, since it is Redis's problem, not the call's.
type IDMap struct {
	rdb       redis.UniversalClient
	acks      *durable.Acks
	conn      string
	ttl       time.Duration
	searchLag time.Duration
}

// NewIDMap returns the id map of a connection; ttl defaults to 90 days and searchLag (see
// the protocol) to 30s.
func NewIDMap(rdb redis.UniversalClient, connection string, ttl, searchLag time.Duration) *IDMap {
	if ttl <= 0 {
		ttl = 90 * 24 * time.Hour
	}
	if searchLag <= 0 {
		searchLag = 30 * time.Second
	}
	return &IDMap{rdb: rdb, acks: durable.Off(rdb), conn: connection, ttl: ttl, searchLag: searchLag}
}

// WithAcks makes the marker and the stored id wait for replicas (see IDMap); nil waits for
// none.
func (m *IDMap) WithAcks(a *durable.Acks) *IDMap {
	if a != nil {
		m.acks = a
	}
	return m
}

// IDEntry is what the map holds for one external id.
type IDEntry struct {
	ID string `json:"id,omitempty"` // the CRM record id; "" while pending
	// PendingSince is set while a create is in flight or its outcome unknown.
	PendingSince time.Time `json:"p,omitzero"`
	// Contact is the contact the record was associated with, so an update re-associates
	// only when the contact changed.
	Contact string `json:"c,omitempty"`
}

func (m *IDMap) key(object, externalID string) string {
	return connKey(m.conn, "idmap", object, externalID)
}

// Get returns the entry; ok is false when there is none.
func (m *IDMap) Get(ctx context.Context, object, externalID string) (e IDEntry, ok bool, err error) {
	b, err := m.rdb.Get(ctx, m.key(object, externalID)).Bytes()
	if errors.Is(err, redis.Nil) {
		return IDEntry{}, false, nil
	}
	if err != nil {
		return IDEntry{}, false, fmt.Errorf("crm: read id map: %w", err)
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return IDEntry{}, false, fmt.Errorf("crm: decode id map entry: %w", err)
	}
	return e, true, nil
}

// Put stores the entry (refreshing the TTL) and waits for replicas; a *durable.Error says
// it was not confirmed.
func (m *IDMap) Put(ctx context.Context, object, externalID string, e IDEntry) error {
	b, _ := json.Marshal(e)
	key := m.key(object, externalID)
	err := m.acks.Write(ctx, "crm: write id map", key, func(ctx context.Context, c redis.Cmdable) error {
		return c.Set(ctx, key, b, m.ttl).Err()
	})
	var de *durable.Error
	if err != nil && !errors.As(err, &de) {
		return fmt.Errorf("crm: write id map: %w", err)
	}
	return err
}

// redisError classifies a failed id-map write: one the replicas did not confirm retries as
// Throttled (not counted against the task), any other as Transient.
func redisError(err error) *Error {
	var de *durable.Error
	if errors.As(err, &de) {
		return &Error{Class: Throttled, Op: "crm: id map", Code: "NOT_REPLICATED", After: de.RetryAfter(), Err: err}
	}
	return &Error{Class: Transient, Op: "crm: id map", Err: err}
}

// markPendingScript writes a pending marker unless the entry already holds an id.
var markPendingScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then
  local ok, e = pcall(cjson.decode, v)
  if ok and type(e) == 'table' and e['id'] and e['id'] ~= '' then return v end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false`)

// MarkPending records that a create is about to be sent. When the entry already holds an id
// it is left alone and returned with ok true. A marker the replicas did not confirm is
// dropped again and a *durable.Error returned: the create must not be sent.
func (m *IDMap) MarkPending(ctx context.Context, object, externalID string, now time.Time) (existing IDEntry, ok bool, err error) {
	b, _ := json.Marshal(IDEntry{PendingSince: now.UTC().Truncate(time.Millisecond)})
	key := m.key(object, externalID)
	var v string
	wrote := false
	err = m.acks.Write(ctx, "crm: write pending marker", key, func(ctx context.Context, c redis.Cmdable) error {
		var err error
		v, err = markPendingScript.Run(ctx, c, []string{key}, b, m.ttl.Milliseconds()).Text()
		if errors.Is(err, redis.Nil) {
			wrote = true
			return nil
		}
		return err
	})
	var de *durable.Error
	if errors.As(err, &de) {
		if wrote {
			_ = m.Delete(context.WithoutCancel(ctx), object, externalID)
		}
		return IDEntry{}, false, err
	}
	if err != nil {
		return IDEntry{}, false, fmt.Errorf("crm: write pending marker: %w", err)
	}
	if wrote {
		return IDEntry{}, false, nil
	}
	if err := json.Unmarshal([]byte(v), &existing); err != nil {
		return IDEntry{}, false, fmt.Errorf("crm: decode id map entry: %w", err)
	}
	return existing, true, nil
}

// Delete drops the entry.
func (m *IDMap) Delete(ctx context.Context, object, externalID string) error {
	return m.rdb.Del(ctx, m.key(object, externalID)).Err()
}

// IDMapOps are the CRM requests Upsert drives.
type IDMapOps struct {
	// Update writes the record with this id; it returns ErrNotFound (wrapped or not) when
	// the record no longer exists.
	Update func(ctx context.Context, e IDEntry) error
	// Find searches the CRM for a record carrying the external id; "" when none.
	Find func(ctx context.Context) (string, error)
	// Create creates the record and returns its id.
	Create func(ctx context.Context) (string, error)
}

// Upsert runs the protocol described on IDMap and returns the record id and whether this call
// created it. The entry stored is e with the id filled in, so callers can keep Contact.
func (m *IDMap) Upsert(ctx context.Context, object, externalID string, contact string, ops IDMapOps) (id string, created bool, err error) {
	e, ok, err := m.Get(ctx, object, externalID)
	if err != nil {
		return "", false, &Error{Class: Transient, Op: "crm: id map", Err: err}
	}
	if ok && e.ID != "" {
		err := ops.Update(ctx, e)
		switch {
		case err == nil:
			if e.Contact != contact && contact != "" {
				e.Contact = contact
				_ = m.Put(ctx, object, externalID, e)
			}
			return e.ID, false, nil
		case errors.Is(err, ErrNotFound):
			// Deleted in the CRM: forget it and create it again below.
			if err := m.Delete(ctx, object, externalID); err != nil {
				return "", false, &Error{Class: Transient, Op: "crm: id map", Err: err}
			}
			ok = false
		default:
			return "", false, err
		}
	}
	if ok && !e.PendingSince.IsZero() {
		// An earlier attempt may have created the record: let the search index catch up,
		// then look for it.
		if wait := m.searchLag - time.Since(e.PendingSince); wait > 0 {
			return "", false, &Error{Class: Transient, Op: "crm: id map", Code: "PENDING_CREATE",
				Msg: "an earlier create's outcome is unknown; waiting for the search index", After: wait}
		}
		found, err := ops.Find(ctx)
		if err != nil {
			return "", false, err
		}
		if found != "" {
			adopted := IDEntry{ID: found}
			if err := ops.Update(ctx, adopted); err != nil && !errors.Is(err, ErrNotFound) {
				return "", false, err
			}
			adopted.Contact = contact
			if err := m.Put(ctx, object, externalID, adopted); err != nil {
				return "", false, redisError(err)
			}
			return found, false, nil
		}
	}
	if existing, has, err := m.MarkPending(ctx, object, externalID, time.Now()); err != nil {
		return "", false, redisError(err)
	} else if has {
		// Another delivery stored an id meanwhile (should not happen under the per-call lock).
		if err := ops.Update(ctx, existing); err != nil {
			return "", false, err
		}
		return existing.ID, false, nil
	}
	id, err = ops.Create(ctx)
	if err != nil {
		var ce *Error
		if errors.As(err, &ce) && (ce.Class != Transient || (ce.Status >= 400 && ce.Status < 500) || ce.Status == http.StatusMultiStatus) {
			// Refused (validation, 401, 423, 429, no token, local limit, or this record
			// refused alone in a batch's 207 Multi-Status): nothing was created, so drop
			// the marker and let the next attempt create at once. Only a network failure
			// or a 5xx leaves the outcome unknown.
			_ = m.Delete(ctx, object, externalID)
		}
		return "", false, err
	}
	if err := m.Put(ctx, object, externalID, IDEntry{ID: id, Contact: contact}); err != nil {
		// The record exists but the map (or its replicas) may not say so; the pending marker
		// makes the retry search before creating.
		return "", false, redisError(err)
	}
	return id, true, nil
}
