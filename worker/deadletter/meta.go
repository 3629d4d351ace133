package deadletter

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
)

// meta is an entry's stored metadata; the counters (attempts, deaths, first death) and the
// size are hash fields of their own, which the record script updates in place.
type meta struct {
	Route          string      `json:"route"`
	DetailID       string      `json:"detail_id"`
	CallID         string      `json:"call_id"`
	Kind           miitel.Kind `json:"kind"`
	TaskID         string      `json:"task_id"`
	Connection     string      `json:"connection,omitempty"`
	Rep            string      `json:"rep,omitempty"`
	CallAt         int64       `json:"call_at,omitempty"` // ms
	Error          Error       `json:"error"`
	DeadAt         int64       `json:"dead_at"` // ms
	MappingVersion string      `json:"mapping_version,omitempty"`
}

func marshalMeta(e *Entry) (string, error) {
	m := meta{Route: e.Route, DetailID: e.DetailID, CallID: e.CallID, Kind: e.Kind, TaskID: e.TaskID,
		Connection: e.Connection, Rep: e.Rep, Error: e.Error, DeadAt: e.DeadAt.UnixMilli(), MappingVersion: e.MappingVersion}
	if !e.CallAt.IsZero() {
		m.CallAt = e.CallAt.UnixMilli()
	}
	b, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("deadletter: encode entry: %w", err)
	}
	return string(b), nil
}

func unmarshalMeta(s string) (Entry, error) {
	var m meta
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return Entry{}, fmt.Errorf("deadletter: decode entry: %w", err)
	}
	e := Entry{Route: m.Route, DetailID: m.DetailID, CallID: m.CallID, Kind: m.Kind, TaskID: m.TaskID,
		Connection: m.Connection, Rep: m.Rep, Error: m.Error, DeadAt: msTime(m.DeadAt), MappingVersion: m.MappingVersion}
	if m.CallAt != 0 {
		e.CallAt = msTime(m.CallAt)
	}
	return e, nil
}

func msTime(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

// callFacts are the rep and the call's start, derived as mappings derive rep_email and
// started_at; a call without a start time counts from when it was received.
func callFacts(ev *miitel.Event) (rep string, callAt time.Time) {
	f := mappers.FactsOf(ev)
	callAt = f.StartedAt
	if callAt.IsZero() {
		callAt = ev.ReceivedAt
	}
	return f.RepEmail, callAt.UTC()
}
