package crm

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
)

// fakeCRM records which of the IDMapOps ran.
type fakeCRM struct {
	calls     []string
	updateErr error
	found     string
	createErr error
}

func (f *fakeCRM) ops() IDMapOps {
	return IDMapOps{
		Update: func(_ context.Context, e IDEntry) error {
			f.calls = append(f.calls, "update "+e.ID)
			return f.updateErr
		},
		Find: func(context.Context) (string, error) { f.calls = append(f.calls, "find"); return f.found, nil },
		Create: func(context.Context) (string, error) {
			f.calls = append(f.calls, "create")
			if f.createErr != nil {
				return "", f.createErr
			}
			return "new-1", nil
		},
	}
}

func TestIDMapUpsert(t *testing.T) {
	const lag = time.Minute
	tests := []struct {
		name        string
		before      *IDEntry // nil: no entry
		crm         fakeCRM
		wantID      string
		wantCreated bool
		wantClass   *Class
		wantCalls   []string
		wantAfter   bool
		wantEntry   *IDEntry // nil: none
	}{
		{name: "first delivery creates", crm: fakeCRM{},
			wantID: "new-1", wantCreated: true, wantCalls: []string{"create"}, wantEntry: &IDEntry{ID: "new-1", Contact: "c9"}},
		{name: "known id updates", before: &IDEntry{ID: "77", Contact: "c9"},
			wantID: "77", wantCalls: []string{"update 77"}, wantEntry: &IDEntry{ID: "77", Contact: "c9"}},
		{name: "known id, new contact remembered", before: &IDEntry{ID: "77"},
			wantID: "77", wantCalls: []string{"update 77"}, wantEntry: &IDEntry{ID: "77", Contact: "c9"}},
		{name: "deleted in the CRM is created again", before: &IDEntry{ID: "77"}, crm: fakeCRM{updateErr: fmt.Errorf("gone: %w", ErrNotFound)},
			wantID: "new-1", wantCreated: true, wantCalls: []string{"update 77", "create"}, wantEntry: &IDEntry{ID: "new-1", Contact: "c9"}},
		{name: "fresh pending marker waits for the search index", before: &IDEntry{PendingSince: time.Now().Add(-10 * time.Second)},
			wantClass: ptr(Transient), wantAfter: true, wantCalls: nil, wantEntry: &IDEntry{}},
		{name: "old pending marker, record found: adopted, not created", before: &IDEntry{PendingSince: time.Now().Add(-2 * lag)}, crm: fakeCRM{found: "55"},
			wantID: "55", wantCalls: []string{"find", "update 55"}, wantEntry: &IDEntry{ID: "55", Contact: "c9"}},
		{name: "old pending marker, nothing found: created", before: &IDEntry{PendingSince: time.Now().Add(-2 * lag)},
			wantID: "new-1", wantCreated: true, wantCalls: []string{"find", "create"}, wantEntry: &IDEntry{ID: "new-1", Contact: "c9"}},
		{name: "create refused: marker dropped", crm: fakeCRM{createErr: &Error{Class: Permanent, Op: "x"}},
			wantClass: ptr(Permanent), wantCalls: []string{"create"}},
		{name: "create throttled: marker dropped", crm: fakeCRM{createErr: &Error{Class: Throttled, Op: "x"}},
			wantClass: ptr(Throttled), wantCalls: []string{"create"}},
		{name: "create answered 401: marker dropped", crm: fakeCRM{createErr: &Error{Class: Transient, Op: "x", Status: 401}},
			wantClass: ptr(Transient), wantCalls: []string{"create"}},
		{name: "create answered 502: marker kept", crm: fakeCRM{createErr: &Error{Class: Transient, Op: "x", Status: 502}},
			wantClass: ptr(Transient), wantCalls: []string{"create"}, wantEntry: &IDEntry{}},
		{name: "create refused alone in a batch's 207: marker dropped", crm: fakeCRM{createErr: &Error{Class: Transient, Op: "x", Status: 207, Code: "INTERNAL_ERROR"}},
			wantClass: ptr(Transient), wantCalls: []string{"create"}},
		{name: "create outcome unknown: marker kept", crm: fakeCRM{createErr: &Error{Class: Transient, Op: "x"}},
			wantClass: ptr(Transient), wantCalls: []string{"create"}, wantEntry: &IDEntry{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			rdb := redistest.Start(t).Client()
			m := NewIDMap(rdb, "hs", time.Hour, lag)
			if tt.before != nil {
				if err := m.Put(ctx, "calls", "d1", *tt.before); err != nil {
					t.Fatal(err)
				}
			}
			crm := tt.crm
			id, created, err := m.Upsert(ctx, "calls", "d1", "c9", crm.ops())
			if tt.wantClass != nil {
				var ce *Error
				if !errors.As(err, &ce) || ce.Class != *tt.wantClass {
					t.Fatalf("err = %v, want class %v", err, *tt.wantClass)
				}
				if tt.wantAfter && (ce.After <= 0 || ce.After > lag) {
					t.Errorf("After = %v, want the remaining search lag", ce.After)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if id != tt.wantID || created != tt.wantCreated {
				t.Errorf("Upsert = %q, %v; want %q, %v", id, created, tt.wantID, tt.wantCreated)
			}
			if diff := cmp.Diff(tt.wantCalls, crm.calls); diff != "" {
				t.Errorf("CRM calls (-want +got):\n%s", diff)
			}
			e, ok, err := m.Get(ctx, "calls", "d1")
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantEntry == nil {
				if ok {
					t.Errorf("entry %+v left behind, want none", e)
				}
				return
			}
			if !ok {
				t.Fatal("no entry stored")
			}
			pending := !e.PendingSince.IsZero()
			e.PendingSince = time.Time{}
			if diff := cmp.Diff(*tt.wantEntry, e); diff != "" {
				t.Errorf("entry (-want +got):\n%s", diff)
			}
			if pending != (e.ID == "") {
				t.Errorf("pending marker = %v for entry %+v", pending, e)
			}
			if ttl := rdb.PTTL(ctx, connKey("hs", "idmap", "calls", "d1")).Val(); ttl <= 0 || ttl > time.Hour {
				t.Errorf("entry TTL = %v, want up to 1h", ttl)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestIDMapMarkPendingKeepsKnownID(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client()
	m := NewIDMap(rdb, "hs", time.Hour, 0)
	_ = m.Put(ctx, "calls", "d1", IDEntry{ID: "77"})
	e, ok, err := m.MarkPending(ctx, "calls", "d1", time.Now())
	if err != nil || !ok || e.ID != "77" {
		t.Fatalf("MarkPending over a known id = %+v, %v, %v", e, ok, err)
	}
	got, _, _ := m.Get(ctx, "calls", "d1")
	if got.ID != "77" || !got.PendingSince.IsZero() {
		t.Errorf("entry overwritten: %+v", got)
	}
}
