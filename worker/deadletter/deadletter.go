// Package deadletter is our own record of every call that went dead: asynq's archive keeps at
// most 10,000 tasks per queue for 90 days and drops the rest silently, so it cannot be the
// dead letter an operator relies on.
//
// Identity: one entry per call detail and route (the CRM activity a call detail becomes).
// When the detail dies again (the same event after a replay, or a later event of the call)
// the entry is updated: its error, its event, deaths and attempts. The entry is removed when
// the detail is later delivered: by a replay, by MiiTel's re-send, or by a later event of the
// call that was delivered with the call's stored state (which carries the dead event's
// fields). So the number of entries is the number of call details that are dead now.
//
// Each entry keeps what an operator needs to decide and to act: call id and detail id, route,
// connection, the error's class, CRM code and message (phone numbers masked), attempts, when,
// the mapping version, and the event itself, compressed, so it can be replayed after asynq
// dropped the task.
//
// Storage: every key carries the queue's hash tag, {queue}, as asynq's own keys do, so on
// Redis Cluster an entry, its indexes and the size counter live in one slot and are changed
// together by one script; no operation spans slots. Size is bounded by retention (age),
// max_entries and max_bytes; trimming removes the oldest entries first and counts them in
// mcs_deadletter_trimmed_total{reason} so an alert can fire when it happens.
package deadletter

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redact"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// Options is what New needs.
type Options struct {
	// Queue is the asynq queue name; the keys carry it as their hash tag.
	Queue  string
	Config config.DeadLetter
	// Routes name each route's connection, recorded with its entries.
	Routes []config.Route
	Logger *slog.Logger
	// Registerer receives mcs_deadletter_entries, mcs_deadletter_bytes (read from Redis at
	// scrape time) and mcs_deadletter_trimmed_total; nil registers nothing.
	Registerer prometheus.Registerer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// SweepInterval is how often Run trims by age; 0 means an hour.
	SweepInterval time.Duration
	// MaxEventBytes caps one stored event; over it the per-speaker phrases are dropped (the
	// transcript text stays), as the call state does. 0 means 256 KiB.
	MaxEventBytes int
}

// Store is the dead letter of one queue.
type Store struct {
	rdb    redis.UniversalClient
	prefix string // mcs:{queue}:dl:
	cfg    config.DeadLetter
	conns  map[string]string
	log    *slog.Logger
	now    func() time.Time
	sweep  time.Duration
	maxEv  int

	trimmed         *prometheus.CounterVec
	recorded        *prometheus.CounterVec
	entries, nbytes *prometheus.Desc
}

// New returns the dead letter of o.Queue.
func New(rdb redis.UniversalClient, o Options) (*Store, error) {
	if rdb == nil || o.Queue == "" {
		return nil, errors.New("deadletter: a Redis client and a queue name are required")
	}
	if o.Config.Retention <= 0 || o.Config.MaxEntries <= 0 || o.Config.MaxBytes <= 0 {
		return nil, fmt.Errorf("deadletter: retention, max_entries and max_bytes must be positive (got %s, %d, %d)", o.Config.Retention, o.Config.MaxEntries, o.Config.MaxBytes)
	}
	s := &Store{
		rdb:    rdb,
		prefix: tasks.KeyPrefix + "{" + o.Queue + "}:dl:",
		cfg:    o.Config,
		conns:  map[string]string{},
		log:    o.Logger,
		now:    o.Now,
		sweep:  o.SweepInterval,
		maxEv:  o.MaxEventBytes,
		trimmed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcs_deadletter_trimmed_total",
			Help: "Dead-letter entries removed before anyone resolved them, by reason: age (dead_letter.retention), entries (max_entries) or bytes (max_bytes). Any increase means dead calls were forgotten.",
		}, []string{"reason"}),
		recorded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcs_deadletter_recorded_total",
			Help: "Call details that went dead, by connection and error class (permanent: the CRM refused the record; transient: retries ran out; broken, throttled), each time one goes dead.",
		}, []string{"connection", "class"}),
		entries: prometheus.NewDesc("mcs_deadletter_entries", "Call details in the dead letter now (dead and not delivered since).", []string{"queue"}, nil),
		nbytes:  prometheus.NewDesc("mcs_deadletter_bytes", "Size of the dead letter as counted against dead_letter.max_bytes: compressed events, metadata and Redis's overhead per entry.", []string{"queue"}, nil),
	}
	for _, r := range []string{"age", "entries", "bytes"} {
		s.trimmed.WithLabelValues(r)
	}
	for _, r := range o.Routes {
		s.conns[r.Name] = r.Connection
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.sweep <= 0 {
		s.sweep = time.Hour
	}
	if s.maxEv <= 0 {
		s.maxEv = 256 << 10
	}
	if o.Registerer != nil {
		if err := o.Registerer.Register(s.trimmed); err != nil {
			return nil, fmt.Errorf("deadletter: register metrics: %w", err)
		}
		if err := o.Registerer.Register(s.recorded); err != nil {
			return nil, fmt.Errorf("deadletter: register metrics: %w", err)
		}
		if err := o.Registerer.Register(collector{s, o.Queue}); err != nil {
			return nil, fmt.Errorf("deadletter: register metrics: %w", err)
		}
	}
	return s, nil
}

// Error is what a failure was, as the dead letter and call status show it.
type Error struct {
	// Class is the retry class: transient, throttled, permanent or broken.
	Class string `json:"class"`
	// Code is the CRM's error code or category (VALIDATION_ERROR, INVALID_FIELD), or ours:
	// MAPPING (the mapping failed on this call), ROUTE (the route is not configured).
	Code string `json:"code,omitempty"`
	// Status is the CRM's HTTP status, 0 for network and our own errors.
	Status int `json:"status,omitempty"`
	// Message is the whole error text, phone numbers masked.
	Message string `json:"message"`
}

// Entry is one dead call detail.
type Entry struct {
	Route    string      `json:"route"`
	DetailID string      `json:"detail_id"`
	CallID   string      `json:"call_id"`
	Kind     miitel.Kind `json:"kind"`
	// TaskID is the dead event's dedupe key: a replay queues the event again under it, so a
	// second replay while the first is queued conflicts instead of sending twice.
	TaskID     string    `json:"task_id"`
	Connection string    `json:"connection,omitempty"`
	Rep        string    `json:"rep,omitempty"`    // the rep's MiiTel login (e-mail)
	CallAt     time.Time `json:"call_at,omitzero"` // when the call started
	Error      Error     `json:"error"`
	// Attempts counts failed attempts over every time the detail went dead (throttled
	// attempts do not count, as for queue.max_retry); Deaths how often it went dead.
	Attempts       int       `json:"attempts"`
	Deaths         int       `json:"deaths"`
	FirstDeadAt    time.Time `json:"first_dead_at"`
	DeadAt         time.Time `json:"dead_at"`
	MappingVersion string    `json:"mapping_version,omitempty"`
	// Bytes is the entry's size as counted against dead_letter.max_bytes: its stored bytes
	// plus Redis's overhead per entry, so close to what it takes of Redis's memory.
	Bytes int `json:"bytes"`
}

// Death is what the worker knows when a call detail goes dead.
type Death struct {
	// Event is what a replay sends again: the call's merged state when the worker had one
	// (so a replay does not depend on the state outliving worker.state_ttl), else the event.
	Event *miitel.Event
	// TaskID is the dead task's id (the event's dedupe key).
	TaskID string
	Error  Error
	// Attempts is the failed attempts of this life of the task (asynq's retry count + 1).
	Attempts       int
	MappingVersion string
	// At is when it died; zero means now.
	At time.Time
}

//go:embed deadletter.lua
var luaLib string

var (
	recordScript  = redis.NewScript(luaLib + "\nreturn record(KEYS, ARGV)")
	resolveScript = redis.NewScript(luaLib + "\nreturn resolve(KEYS, ARGV)")
	sweepScript   = redis.NewScript(luaLib + "\nreturn sweep(KEYS, ARGV)")
)

// trimLimit bounds the entries one script call removes, so a script never blocks Redis for
// long; the next record or sweep goes on where it stopped.
const trimLimit = 1000

// entryOverhead is what Redis spends on an entry beyond its bytes, so that max_bytes bounds
// memory rather than payload: MEMORY USAGE of an entry's hash exceeds its fields' bytes by
// about 1 KB (measured on Redis 7.0 with MiiTel's samples), and its index and id-set members
// add some 0.2 KB.
const entryOverhead = 1200

// maxMessage bounds a stored error message.
const maxMessage = 2048

func member(route, detailID string) string { return route + ":" + detailID }

// splitMember undoes member: route names hold no ':' (config checks them).
func splitMember(m string) (route, detailID string) {
	route, detailID, _ = strings.Cut(m, ":")
	return route, detailID
}

func (s *Store) idxKey() string   { return s.prefix + "idx" }
func (s *Store) bytesKey() string { return s.prefix + "bytes" }
func (s *Store) entryKey(m string) string {
	return s.prefix + "e:" + m
}
func (s *Store) idKey(id string) string { return s.prefix + "id:" + id }

// Record adds or updates the entry of a dead call detail and trims the dead letter to its
// bounds.
func (s *Store) Record(ctx context.Context, d Death) error {
	ev := d.Event
	if ev == nil || ev.Route == "" || ev.Detail.ID == "" {
		return errors.New("deadletter: record: the event with its route and detail id is required")
	}
	at := d.At
	if at.IsZero() {
		at = s.now()
	}
	blob, err := s.compress(ev)
	if err != nil {
		return err
	}
	rep, callAt := callFacts(ev)
	e := Entry{
		Route: ev.Route, DetailID: ev.Detail.ID, CallID: ev.CallID, Kind: ev.Kind, TaskID: d.TaskID,
		Connection: s.conns[ev.Route], Rep: rep, CallAt: callAt,
		Error: Error{Class: d.Error.Class, Code: d.Error.Code, Status: d.Error.Status,
			Message: redact.Text(snippet(d.Error.Message, maxMessage))},
		DeadAt: at.UTC(), MappingVersion: d.MappingVersion,
	}
	meta, err := marshalMeta(&e)
	if err != nil {
		return err
	}
	m := member(ev.Route, ev.Detail.ID)
	size := len(blob) + len(meta) + entryOverhead
	attempts := max(d.Attempts, 1)
	res, err := recordScript.Run(ctx, s.rdb,
		[]string{s.idxKey(), s.bytesKey(), s.entryKey(m), s.idKey(ev.CallID), s.idKey(ev.Detail.ID)},
		m, at.UnixMilli(), meta, blob, size, d.TaskID, ev.CallID, ev.Detail.ID, attempts,
		s.cfg.MaxEntries, s.cfg.MaxBytes, s.cutoff().UnixMilli(), s.prefix, trimLimit,
	).Int64Slice()
	if err != nil {
		return fmt.Errorf("deadletter: record %s: %w", m, err)
	}
	s.countTrimmed(res)
	s.recorded.WithLabelValues(e.Connection, e.Error.Class).Inc()
	return nil
}

// compress stores the event as the call state is stored, capped like it.
func (s *Store) compress(ev *miitel.Event) ([]byte, error) {
	b, err := tasks.CompressEvent(ev)
	if err != nil {
		return nil, fmt.Errorf("deadletter: %w", err)
	}
	if len(b) > s.maxEv && len(ev.Detail.Phrases) > 0 {
		trimmed := *ev
		trimmed.Detail.Phrases = nil
		if b, err = tasks.CompressEvent(&trimmed); err != nil {
			return nil, fmt.Errorf("deadletter: %w", err)
		}
	}
	return b, nil
}

// Resolve removes the entry of route/detailID: the call detail was delivered. With taskID
// set, only the entry of that dead event is removed (the delivered event is the dead one, a
// replay or MiiTel's re-send); with anyEvent, whatever event the entry holds (a later event
// was delivered with the call's stored state, which carries the dead event's fields). It
// reports whether an entry was removed.
func (s *Store) Resolve(ctx context.Context, route, detailID, taskID string, anyEvent bool) (bool, error) {
	m := member(route, detailID)
	anyArg := "0"
	if anyEvent {
		anyArg = "1"
	}
	n, err := resolveScript.Run(ctx, s.rdb, []string{s.idxKey(), s.entryKey(m)}, m, taskID, anyArg, s.prefix).Int()
	if err != nil {
		return false, fmt.Errorf("deadletter: resolve %s: %w", m, err)
	}
	return n == 1, nil
}

// Delete removes an entry for good (an operator decided the call is not to be written).
func (s *Store) Delete(ctx context.Context, route, detailID string) (bool, error) {
	return s.Resolve(ctx, route, detailID, "", true)
}

// Sweep trims the dead letter to its bounds (age first, then entries, then bytes), as every
// Record does; Run calls it periodically so entries age out while nothing dies.
func (s *Store) Sweep(ctx context.Context) error {
	res, err := sweepScript.Run(ctx, s.rdb, []string{s.idxKey(), s.bytesKey()},
		s.cfg.MaxEntries, s.cfg.MaxBytes, s.cutoff().UnixMilli(), s.prefix, trimLimit).Int64Slice()
	if err != nil {
		return fmt.Errorf("deadletter: sweep: %w", err)
	}
	s.countTrimmed(res)
	return nil
}

// Run sweeps every SweepInterval until ctx is done. A failed sweep is logged and tried again
// at the next tick.
func (s *Store) Run(ctx context.Context) error {
	t := time.NewTicker(s.sweep)
	defer t.Stop()
	for {
		if err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("dead letter sweep failed", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (s *Store) cutoff() time.Time { return s.now().Add(-s.cfg.Retention) }

func (s *Store) countTrimmed(res []int64) {
	for i, reason := range []string{"age", "entries", "bytes"} {
		if i < len(res) && res[i] > 0 {
			s.trimmed.WithLabelValues(reason).Add(float64(res[i]))
			s.log.Warn("dead letter trimmed: dead calls were forgotten before anyone resolved them",
				"reason", reason, "entries", res[i])
		}
	}
}

// Count is the number of entries.
func (s *Store) Count(ctx context.Context) (int64, error) {
	n, err := s.rdb.ZCard(ctx, s.idxKey()).Result()
	if err != nil {
		return 0, fmt.Errorf("deadletter: count: %w", err)
	}
	return n, nil
}

// Bytes is the stored size counted against max_bytes.
func (s *Store) Bytes(ctx context.Context) (int64, error) {
	n, err := s.rdb.Get(ctx, s.bytesKey()).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("deadletter: size: %w", err)
	}
	return n, nil
}

// ErrNotFound is returned for a detail that is not in the dead letter.
var ErrNotFound = errors.New("deadletter: no such entry")

// Get returns the entry of route/detailID.
func (s *Store) Get(ctx context.Context, route, detailID string) (*Entry, error) {
	es, err := s.load(ctx, []string{member(route, detailID)})
	if err != nil {
		return nil, err
	}
	if len(es) == 0 {
		return nil, ErrNotFound
	}
	return &es[0], nil
}

// Event returns the stored event of route/detailID, to replay or preview.
func (s *Store) Event(ctx context.Context, route, detailID string) (*miitel.Event, error) {
	b, err := s.rdb.HGet(ctx, s.entryKey(member(route, detailID)), "event").Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("deadletter: read event: %w", err)
	}
	ev, err := tasks.DecompressEvent(b)
	if err != nil {
		return nil, fmt.Errorf("deadletter: %s: %w", member(route, detailID), err)
	}
	return ev, nil
}

// loadChunk is how many entries one pipelined read fetches.
const loadChunk = 500

// load reads the entries of members, skipping those that are gone, in the given order.
func (s *Store) load(ctx context.Context, members []string) ([]Entry, error) {
	var out []Entry
	for start := 0; start < len(members); start += loadChunk {
		chunk := members[start:min(start+loadChunk, len(members))]
		cmds := make([]*redis.SliceCmd, len(chunk))
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, m := range chunk {
				cmds[i] = p.HMGet(ctx, s.entryKey(m), "meta", "size", "attempts", "deaths", "first_dead_at")
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("deadletter: read entries: %w", err)
		}
		for i, c := range cmds {
			v := c.Val()
			meta, ok := v[0].(string)
			if !ok {
				continue // resolved or trimmed meanwhile
			}
			e, err := unmarshalMeta(meta)
			if err != nil {
				s.log.Warn("dead letter entry unreadable", "entry", chunk[i], "error", err.Error())
				continue
			}
			e.Bytes = atoi(v[1])
			e.Attempts = atoi(v[2])
			e.Deaths = atoi(v[3])
			if ms := atoi(v[4]); ms > 0 {
				e.FirstDeadAt = msTime(int64(ms))
			}
			out = append(out, e)
		}
	}
	return out, nil
}

func atoi(v any) int {
	s, _ := v.(string)
	n, _ := strconv.Atoi(s)
	return n
}

func snippet(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && (s[n]&0xC0) == 0x80 {
		n--
	}
	return s[:n] + "…"
}

// collector exports the dead letter's size at scrape time, read from Redis, so every replica
// reports the same number.
type collector struct {
	s     *Store
	queue string
}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.s.entries
	ch <- c.s.nbytes
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if n, err := c.s.Count(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(c.s.entries, prometheus.GaugeValue, float64(n), c.queue)
	}
	if n, err := c.s.Bytes(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(c.s.nbytes, prometheus.GaugeValue, float64(n), c.queue)
	}
}

// Classify describes err as the dead letter and call status show it: a worker/crm.Error's
// class, code and HTTP status; asynq.SkipRetry is permanent; anything else transient (the
// retry policy's reading, crm.ClassOf).
func Classify(err error) Error {
	if err == nil {
		return Error{}
	}
	e := Error{Class: crm.ClassOf(err).String(), Message: err.Error()}
	var ce *crm.Error
	if errors.As(err, &ce) {
		e.Code, e.Status = ce.Code, ce.Status
	}
	return e
}
