// Package replay sends calls again: the dead-letter entries an operator selects (by call or
// detail id, route, connection, error class, code or text, and when they died), and stored
// MiiTel payloads (backfill). The admin API and the CLI call the same Replayer.
//
// A replay queues an entry's stored event again with its dedupe key as the asynq TaskID, the
// way the receiver queues it: a second replay while the first is still queued conflicts and
// is reported as already queued, and a delivered replay resolves the entry (the worker does
// that), so a second replay afterwards selects nothing. Nothing is written twice either way:
// the CRM write is an upsert. A dry run renders each selected event with the route's current
// mapping and reports what would be sent, writing nothing.
package replay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/deadletter"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redact"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// Renderer renders an event with a route's mapping (*mappers.Mapping, worker.Renderer).
type Renderer interface {
	Render(ev *miitel.Event) (*mappers.Record, *mappers.Skip, error)
}

// Received is told about every event a replay or a backfill queues, so the call status shows
// it pending again (worker/callstatus.Store).
type Received interface {
	Received(ctx context.Context, ev *miitel.Event, duplicate bool, at time.Time) error
}

// Options is what New needs.
type Options struct {
	Redis      redis.UniversalClient
	Queue      config.Queue
	DeadLetter *deadletter.Store
	// Mapping returns a route's current mapping (a getter: a hot-reloaded mapping is the
	// one a dry run renders with); false for a route this process does not know.
	Mapping func(route string) (Renderer, bool)
	// Status, when set, records each queued event as received.
	Status Received
	Logger *slog.Logger
	Now    func() time.Time
}

// Replayer replays dead-letter entries.
type Replayer struct {
	q       *queue
	dl      *deadletter.Store
	mapping func(string) (Renderer, bool)
	status  Received
	log     *slog.Logger
	now     func() time.Time
}

// New builds a Replayer.
func New(o Options) (*Replayer, error) {
	if o.Redis == nil || o.DeadLetter == nil || o.Queue.Name == "" {
		return nil, errors.New("replay: Redis, DeadLetter and a queue name are required")
	}
	r := &Replayer{q: newQueue(o.Redis, o.Queue), dl: o.DeadLetter, mapping: o.Mapping, status: o.Status, log: o.Logger, now: o.Now}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.now == nil {
		r.now = time.Now
	}
	return r, nil
}

// Outcome of one replayed entry.
type Outcome string

const (
	Queued        Outcome = "queued"         // queued again; the worker delivers it
	AlreadyQueued Outcome = "already_queued" // its task is queued, running or retrying: nothing done
	Failed        Outcome = "failed"         // could not be queued (Error says why)
	WouldSend     Outcome = "would_send"     // dry run: the current mapping renders it (Preview)
	WouldSkip     Outcome = "would_skip"     // dry run: the mapping's skip rule leaves it out
	RenderFails   Outcome = "render_fails"   // dry run: the current mapping fails on it (Error)
	Resolved      Outcome = "resolved"       // delivered (or deleted) since it was selected: nothing to do
)

// Item is what happened to one selected entry.
type Item struct {
	Route    string  `json:"route"`
	DetailID string  `json:"detail_id"`
	CallID   string  `json:"call_id"`
	TaskID   string  `json:"task_id"`
	Outcome  Outcome `json:"outcome"`
	// Queued tells, in a dry run, that the task is queued now (a replay would conflict).
	Queued  bool     `json:"queued,omitempty"`
	Error   string   `json:"error,omitempty"`
	Preview *Preview `json:"preview,omitempty"`
}

// Progress is reported after each entry of a run.
type Progress struct {
	Done, Total int
	Last        Item
}

// Summary is the result of a run.
type Summary struct {
	DryRun   bool      `json:"dry_run"`
	Selected int       `json:"selected"`
	Counts   Counts    `json:"counts"`
	Items    []Item    `json:"items"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
}

// Counts are a run's items by outcome.
type Counts struct {
	Queued        int `json:"queued"`
	AlreadyQueued int `json:"already_queued"`
	Failed        int `json:"failed"`
	WouldSend     int `json:"would_send"`
	WouldSkip     int `json:"would_skip"`
	RenderFails   int `json:"render_fails"`
	Resolved      int `json:"resolved"`
}

func (c *Counts) add(o Outcome) {
	switch o {
	case Queued:
		c.Queued++
	case AlreadyQueued:
		c.AlreadyQueued++
	case Failed:
		c.Failed++
	case WouldSend:
		c.WouldSend++
	case WouldSkip:
		c.WouldSkip++
	case RenderFails:
		c.RenderFails++
	case Resolved:
		c.Resolved++
	}
}

// RunOptions shape one run.
type RunOptions struct {
	DryRun bool
	// All must be set to select without narrowing (no id, route, error or time): the whole
	// dead letter.
	All bool
	// Progress, when set, is called after each entry (the CLI draws a bar from it).
	Progress func(Progress)
}

// ErrUnnarrowed is returned for a selection of everything without RunOptions.All.
var ErrUnnarrowed = errors.New("replay: the selection names no id, route, connection, error or time: that is the whole dead letter; confirm with all")

// Replay replays the entries sel selects, the most recently dead first. A failure to queue
// one entry is reported on its item and the run goes on; an error is returned only when the
// selection cannot be read or ctx ends (with the summary so far).
func (r *Replayer) Replay(ctx context.Context, sel deadletter.Selector, o RunOptions) (Summary, error) {
	if !sel.Narrowed() && !o.All {
		return Summary{}, ErrUnnarrowed
	}
	sum := Summary{DryRun: o.DryRun, Started: r.now().UTC(), Items: []Item{}}
	// Collected first: a replay that is delivered while the run goes on resolves its entry,
	// which must not shift what the run walks.
	entries, err := r.dl.List(ctx, sel)
	if err != nil {
		return sum, fmt.Errorf("replay: select: %w", err)
	}
	sum.Selected = len(entries)
	for i := range entries {
		if err := ctx.Err(); err != nil {
			sum.Finished = r.now().UTC()
			return sum, fmt.Errorf("replay: stopped after %d of %d: %w", i, len(entries), err)
		}
		it := r.one(ctx, &entries[i], o.DryRun)
		sum.Items = append(sum.Items, it)
		sum.Counts.add(it.Outcome)
		if o.Progress != nil {
			o.Progress(Progress{Done: i + 1, Total: len(entries), Last: it})
		}
	}
	sum.Finished = r.now().UTC()
	r.log.Info("replay finished", "dry_run", o.DryRun, "selected", sum.Selected, "queued", sum.Counts.Queued,
		"already_queued", sum.Counts.AlreadyQueued, "failed", sum.Counts.Failed)
	return sum, nil
}

func (r *Replayer) one(ctx context.Context, e *deadletter.Entry, dry bool) Item {
	it := Item{Route: e.Route, DetailID: e.DetailID, CallID: e.CallID, TaskID: e.TaskID}
	ev, err := r.dl.Event(ctx, e.Route, e.DetailID)
	if errors.Is(err, deadletter.ErrNotFound) {
		it.Outcome = Resolved
		return it
	}
	if err != nil {
		it.Outcome, it.Error = Failed, err.Error()
		return it
	}
	if ev.DedupeKey == "" {
		ev.DedupeKey = e.TaskID
	}
	if dry {
		r.preview(ctx, ev, &it)
		return it
	}
	res, err := r.q.enqueue(ctx, ev, false)
	switch {
	case err != nil:
		it.Outcome, it.Error = Failed, err.Error()
		return it
	case res == resultDuplicate:
		it.Outcome = AlreadyQueued
		return it
	}
	it.Outcome = Queued
	if r.status != nil {
		if err := r.status.Received(ctx, ev, false, r.now()); err != nil {
			r.log.Warn("replay: call status not recorded", "route", ev.Route, "detail_id", ev.Detail.ID, "error", err.Error())
		}
	}
	return it
}

func (r *Replayer) preview(ctx context.Context, ev *miitel.Event, it *Item) {
	if queued, err := r.q.pending(ctx, ev.DedupeKey); err == nil {
		it.Queued = queued
	}
	if r.mapping == nil {
		it.Outcome, it.Error = RenderFails, "replay: no mappings given for a dry run"
		return
	}
	m, ok := r.mapping(ev.Route)
	if !ok {
		it.Outcome, it.Error = RenderFails, fmt.Sprintf("replay: route %q is not configured here", ev.Route)
		return
	}
	rec, skip, err := m.Render(ev)
	switch {
	case err != nil:
		it.Outcome, it.Error = RenderFails, redact.Text(err.Error())
	case skip != nil:
		it.Outcome, it.Preview = WouldSkip, &Preview{Skip: skip.Reason}
	default:
		it.Outcome, it.Preview = WouldSend, PreviewOf(rec)
	}
}

// Preview is what a replay would send, safe to show: phone numbers masked, long text (the
// body or description that carries the transcript) given by its length only.
type Preview struct {
	Object         string         `json:"object,omitempty"`
	ExternalID     string         `json:"external_id,omitempty"`
	MappingVersion string         `json:"mapping_version,omitempty"`
	Fields         []PreviewField `json:"fields,omitempty"`
	ContactNumber  string         `json:"contact_number,omitempty"`
	OwnerEmail     string         `json:"owner_email,omitempty"`
	Skip           string         `json:"skip,omitempty"`
}

// PreviewField is one field of a Preview: its value, or for long text its length.
type PreviewField struct {
	Name  string `json:"name"`
	Value any    `json:"value,omitempty"`
	// Chars is the length of a string value not shown.
	Chars int `json:"chars,omitempty"`
}

// maxShown is the longest string value a preview shows: titles, directions, statuses.
const maxShown = 64

// PreviewOf makes the safe preview of a record.
func PreviewOf(rec *mappers.Record) *Preview {
	p := &Preview{Object: rec.Object, ExternalID: rec.ExternalID.Value, MappingVersion: rec.MappingVersion}
	for _, f := range rec.Fields {
		pf := PreviewField{Name: f.Name, Value: f.Value}
		if s, ok := f.Value.(string); ok {
			if n := utf8.RuneCountInString(s); f.KeepLonger || n > maxShown {
				pf.Value, pf.Chars = nil, n
			} else {
				pf.Value = redact.Text(s)
				if strings.Contains(strings.ToLower(f.Name), "number") || strings.Contains(strings.ToLower(f.Name), "phone") {
					pf.Value = redact.Number(s)
				}
			}
		}
		p.Fields = append(p.Fields, pf)
	}
	if rec.Contact != nil {
		p.ContactNumber = redact.Number(rec.Contact.E164)
	}
	if rec.Owner != nil {
		p.OwnerEmail = rec.Owner.Email
	}
	return p
}

// queue puts events into the asynq queue the way the receiver does.
type queue struct {
	rdb       redis.UniversalClient
	client    *asynq.Client
	inspector *asynq.Inspector
	cfg       config.Queue
}

func newQueue(rdb redis.UniversalClient, cfg config.Queue) *queue {
	return &queue{rdb: rdb, client: asynq.NewClientFromRedisClient(rdb), inspector: asynq.NewInspectorFromRedisClient(rdb), cfg: cfg}
}

const (
	resultQueued    = "queued"
	resultDuplicate = "duplicate"
)

// maxConflictRounds bounds "conflict -> the task went away or is archived -> enqueue again".
const maxConflictRounds = 3

// enqueue queues ev under its dedupe key. A conflict with a queued, running or retrying task
// is a duplicate; one with an archived task (asynq's copy of the dead call) replaces it. With
// ledger, an event delivered within the dedupe window is a duplicate too (MiiTel's re-send;
// a backfill line sent before).
func (q *queue) enqueue(ctx context.Context, ev *miitel.Event, ledger bool) (string, error) {
	if ledger && ev.DedupeKey != "" {
		seen, err := q.delivered(ctx, ev.DedupeKey)
		if err != nil {
			return "", err
		}
		if seen {
			return resultDuplicate, nil
		}
	}
	task, err := tasks.NewCallEvent(ev, asynq.Queue(q.cfg.Name), tasks.MaxRetry(q.cfg.MaxRetry), asynq.Timeout(q.cfg.TaskTimeout))
	if err != nil {
		return "", err
	}
	for range maxConflictRounds {
		_, err := q.client.EnqueueContext(ctx, task)
		if err == nil {
			return resultQueued, nil
		}
		if !errors.Is(err, asynq.ErrTaskIDConflict) {
			return "", fmt.Errorf("replay: enqueue: %w", err)
		}
		info, err := q.inspector.GetTaskInfo(q.cfg.Name, ev.DedupeKey)
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound):
			// Finished between the enqueue and the look-up: delivered, or gone; try again
			// unless the ledger says delivered.
			if ledger {
				if seen, err := q.delivered(ctx, ev.DedupeKey); err != nil {
					return "", err
				} else if seen {
					return resultDuplicate, nil
				}
			}
			continue
		case err != nil:
			return "", fmt.Errorf("replay: inspect conflicting task: %w", err)
		case info.State == asynq.TaskStateArchived:
			if err := q.inspector.DeleteTask(q.cfg.Name, ev.DedupeKey); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
				return "", fmt.Errorf("replay: delete archived task: %w", err)
			}
			continue
		default:
			return resultDuplicate, nil
		}
	}
	return "", errors.New("replay: the task id kept conflicting with a task that went away")
}

// pending reports whether the task of a dedupe key is queued, running or retrying.
func (q *queue) pending(ctx context.Context, id string) (bool, error) {
	if id == "" {
		return false, nil
	}
	info, err := q.inspector.GetTaskInfo(q.cfg.Name, id)
	if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return info.State != asynq.TaskStateArchived && info.State != asynq.TaskStateCompleted, nil
}

func (q *queue) delivered(ctx context.Context, dedupeKey string) (bool, error) {
	n, err := q.rdb.Exists(ctx, tasks.LedgerKey(q.cfg.Name, dedupeKey)).Result()
	if err != nil {
		return false, fmt.Errorf("replay: ledger: %w", err)
	}
	return n > 0, nil
}
