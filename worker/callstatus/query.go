package callstatus

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/deadletter"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/timespec"
)

// Status is what happened to one call detail. Phone numbers are masked; nothing of the
// transcript is kept.
type Status struct {
	Route    string    `json:"route"`
	DetailID string    `json:"detail_id"`
	CallID   string    `json:"call_id"`
	CallAt   time.Time `json:"call_at,omitzero"`
	// FirstReceivedAt is when the call first reached us: what since and until select by.
	FirstReceivedAt time.Time   `json:"first_received_at,omitzero"`
	CallType        string      `json:"call_type,omitempty"`
	Direction       string      `json:"direction,omitempty"`
	Kind            miitel.Kind `json:"kind,omitempty"`
	Rep             string      `json:"rep,omitempty"`
	From            string      `json:"from,omitempty"`
	To              string      `json:"to,omitempty"`
	Customer        string      `json:"customer,omitempty"`

	// State is that of the detail's latest event; Attempts that event's attempts.
	State         State      `json:"state"`
	StateAt       time.Time  `json:"state_at,omitzero"`
	Attempts      int        `json:"attempts"`
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`

	Events []Event `json:"events"`
	// EventsDropped counts events beyond the most a record lists.
	EventsDropped int `json:"events_dropped,omitempty"`

	LastError  *LastError `json:"last_error,omitempty"`
	CRM        *CRMRecord `json:"crm,omitempty"`
	Contact    *Lookup    `json:"contact,omitempty"`
	Owner      *Lookup    `json:"owner,omitempty"`
	SkipReason string     `json:"skip_reason,omitempty"`
}

// Event is one event of a call detail as the receiver (or the worker) saw it.
type Event struct {
	Kind miitel.Kind `json:"kind"`
	// DedupeKey is the event's content hash: the same content re-sent is a duplicate.
	DedupeKey       string     `json:"dedupe_key"`
	ReceivedAt      time.Time  `json:"received_at,omitzero"`
	Duplicates      int        `json:"duplicates"`
	LastDuplicateAt *time.Time `json:"last_duplicate_at,omitempty"`
	State           State      `json:"state,omitempty"`
	Attempts        int        `json:"attempts"`
}

// LastError is the detail's latest failure (kept after a later success, for the history).
type LastError struct {
	deadletter.Error
	At time.Time `json:"at,omitzero"`
}

// CRMRecord is where the call was written.
type CRMRecord struct {
	Connection     string    `json:"connection,omitempty"`
	Object         string    `json:"object,omitempty"`
	ID             string    `json:"id"`
	URL            string    `json:"url,omitempty"`
	Created        bool      `json:"created"`
	DeliveredAt    time.Time `json:"delivered_at,omitzero"`
	MappingVersion string    `json:"mapping_version,omitempty"`
}

// stored is a record as the Lua side writes it.
type stored struct {
	facts
	Seen    string                 `json:"seen"`
	Ev      map[string]storedEvent `json:"ev"`
	NDrop   string                 `json:"ndrop"`
	State   string                 `json:"state"`
	StateAt string                 `json:"state_at"`
	Attempt string                 `json:"attempt"`
	NextAt  string                 `json:"next_at"`
	Err     *errorRec              `json:"err"`
	CRM     *crmRec                `json:"crm"`
	Contact *lookupRec             `json:"contact"`
	Owner   *lookupRec             `json:"owner"`
	Skip    string                 `json:"skip"`
}

type storedEvent struct {
	Kind     string `json:"kind"`
	At       string `json:"at"`
	Dups     string `json:"dups"`
	DupAt    string `json:"dup_at"`
	State    string `json:"state"`
	Attempts string `json:"attempts"`
}

func msTime(s string) time.Time {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n == 0 {
		return time.Time{}
	}
	return time.UnixMilli(n).UTC()
}

func msPtr(s string) *time.Time {
	if t := msTime(s); !t.IsZero() {
		return &t
	}
	return nil
}

func num(s string) int { n, _ := strconv.Atoi(s); return n }

func decode(b []byte) (*Status, error) {
	var r stored
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("callstatus: decode record: %w", err)
	}
	st := &Status{
		Route: r.Route, DetailID: r.Detail, CallID: r.Call, CallAt: msTime(r.CallAt), FirstReceivedAt: msTime(r.Seen), CallType: r.Type,
		Direction: r.Dir, Kind: miitel.Kind(r.Kind), Rep: r.Rep, From: r.From, To: r.To, Customer: r.Cust,
		State: State(r.State), StateAt: msTime(r.StateAt), Attempts: num(r.Attempt), NextAttemptAt: msPtr(r.NextAt),
		EventsDropped: num(r.NDrop), SkipReason: r.Skip, Events: []Event{},
	}
	if st.State == "" {
		st.State = Pending
	}
	for k, e := range r.Ev {
		st.Events = append(st.Events, Event{Kind: miitel.Kind(e.Kind), DedupeKey: strings.TrimPrefix(k, "-"), ReceivedAt: msTime(e.At),
			Duplicates: num(e.Dups), LastDuplicateAt: msPtr(e.DupAt), State: State(e.State), Attempts: num(e.Attempts)})
	}
	slices.SortFunc(st.Events, func(a, b Event) int {
		return cmp.Or(a.ReceivedAt.Compare(b.ReceivedAt), strings.Compare(a.DedupeKey, b.DedupeKey))
	})
	if e := r.Err; e != nil {
		st.LastError = &LastError{Error: deadletter.Error{Class: e.Class, Code: e.Code, Status: num(e.Status), Message: e.Msg}, At: msTime(e.At)}
	}
	if c := r.CRM; c != nil {
		st.CRM = &CRMRecord{Connection: c.Conn, Object: c.Obj, ID: c.ID, URL: c.URL, Created: c.Created == "1",
			DeliveredAt: msTime(c.At), MappingVersion: c.Ver}
	}
	if l := r.Contact; l != nil {
		st.Contact = &Lookup{Match: Match(l.Match), ID: l.ID}
	}
	if l := r.Owner; l != nil {
		st.Owner = &Lookup{Match: Match(l.Match), ID: l.ID}
	}
	return st, nil
}

// NotFoundError is a call or detail id with no record.
type NotFoundError struct {
	ID        string
	Retention time.Duration
}

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("no record of %s: MiiTel has not sent this call (or it is older than the status retention of %d days)",
		e.ID, int(e.Retention.Hours()/24))
}

// Get returns every detail of a call id, or the detail of a detail id (on every route it
// came in on), the earliest call first.
func (s *Store) Get(ctx context.Context, id string) ([]Status, error) {
	id = strings.TrimSpace(id)
	if id == "" {
		return nil, errors.New("callstatus: an id is required")
	}
	if err := s.foldForRead(ctx); err != nil {
		return nil, err
	}
	members, err := s.rdb.SMembers(ctx, s.prefix+"id:"+id).Result()
	if err != nil {
		return nil, fmt.Errorf("callstatus: find %s: %w", id, err)
	}
	for _, r := range s.routes {
		if m := member(r, id); !slices.Contains(members, m) {
			members = append(members, m)
		}
	}
	out, err := s.load(ctx, members)
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, &NotFoundError{ID: id, Retention: s.cfg.Retention}
	}
	slices.SortFunc(out, func(a, b Status) int {
		return cmp.Or(a.CallAt.Compare(b.CallAt), strings.Compare(a.Route, b.Route), strings.Compare(a.DetailID, b.DetailID))
	})
	return out, nil
}

// foldForRead folds the noted receipts before a read, so it sees every call received. A
// backlog beyond foldRounds chunks (a worker outage's) is left to the folder: the read
// shows what is folded, and says so in the log.
func (s *Store) foldForRead(ctx context.Context) error {
	done, err := s.Fold(ctx, foldRounds)
	if err != nil {
		return err
	}
	if !done {
		s.log.Warn("call status: more received events are waiting to be folded than a read folds; the answer may miss the latest calls",
			"folded_members", foldChunk*foldRounds)
	}
	return nil
}

const loadChunk = 500

// load reads the records of members, skipping expired ones.
func (s *Store) load(ctx context.Context, members []string) ([]Status, error) {
	var out []Status
	for start := 0; start < len(members); start += loadChunk {
		chunk := members[start:min(start+loadChunk, len(members))]
		keys := make([]string, len(chunk))
		for i, m := range chunk {
			keys[i] = s.prefix + "r:" + m
		}
		vals, err := s.mget(ctx, keys)
		if err != nil {
			return nil, err
		}
		for i, v := range vals {
			if v == nil {
				continue
			}
			st, err := decode(v)
			if err != nil {
				s.log.Warn("call status record unreadable", "record", chunk[i], "error", err.Error())
				continue
			}
			if st.CRM != nil && st.CRM.URL == "" {
				st.CRM.URL = expandURL(s.urls[st.Route], st.CRM.ID)
			}
			out = append(out, *st)
		}
	}
	return out, nil
}

// mget reads keys of one slot; GETs in a pipeline rather than MGET, which go-redis's cluster
// client would refuse were the keys ever spread.
func (s *Store) mget(ctx context.Context, keys []string) ([][]byte, error) {
	cmds := make([]*redis.StringCmd, len(keys))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.Get(ctx, k)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("callstatus: read records: %w", err)
	}
	out := make([][]byte, len(keys))
	for i, c := range cmds {
		if b, err := c.Bytes(); err == nil {
			out[i] = b
		}
	}
	return out, nil
}

// Query is a list query as an operator writes it (the admin API's parameters, the CLI's
// flags): "which of my calls today failed" is {Since: "09:00", Rep: "sato@example.co.jp",
// State: "dead"}.
type Query struct {
	// Since and Until bound when calls first reached us (see timespec.Parse): for a live
	// call minutes after it ended, for a backfilled one when it was backfilled.
	Since string `json:"since,omitempty"`
	Until string `json:"until,omitempty"`
	Route string `json:"route,omitempty"`
	Rep   string `json:"rep,omitempty"`   // the rep's MiiTel login e-mail, any case
	State string `json:"state,omitempty"` // one of States
	// Phone finds calls from or to a number (any format); only with status.phone_search.
	Phone string `json:"phone,omitempty"`
	Limit int    `json:"limit,omitempty"` // default 100, at most 1000
}

// QueryFromValues reads a Query from URL query parameters of the same names.
func QueryFromValues(v url.Values) (Query, error) {
	q := Query{Since: v.Get("since"), Until: v.Get("until"), Route: v.Get("route"), Rep: v.Get("rep"),
		State: v.Get("state"), Phone: v.Get("phone")}
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			return Query{}, queryErrorf("callstatus: limit %q is not a non-negative number", l)
		}
		q.Limit = n
	}
	return q, nil
}

// Default and maximum of Query.Limit.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// ErrPhoneSearchOff is returned (as a QueryError) for a phone query while
// status.phone_search is off.
var ErrPhoneSearchOff = errors.New("callstatus: phone numbers are not a search key: an admin turns on status.phone_search")

// QueryError is a query the operator must fix (a bad time, state, limit or phone number), as
// opposed to Redis failing.
type QueryError struct{ Err error }

func (e *QueryError) Error() string { return e.Err.Error() }
func (e *QueryError) Unwrap() error { return e.Err }

func queryErrorf(format string, a ...any) error { return &QueryError{fmt.Errorf(format, a...)} }

// List returns the records a query selects, the latest call first.
func (s *Store) List(ctx context.Context, q Query) ([]Status, error) {
	r, err := timespec.ParseRange(q.Since, q.Until, s.now(), s.loc)
	if err != nil {
		return nil, queryErrorf("callstatus: %w", err)
	}
	state := State(strings.ToLower(strings.TrimSpace(q.State)))
	if state != "" && !slices.Contains(States, state) {
		return nil, queryErrorf("callstatus: state %q is not one of pending, active, retry, parked, dead, done, skipped", q.State)
	}
	limit := q.Limit
	switch {
	case limit == 0:
		limit = DefaultLimit
	case limit > MaxLimit:
		return nil, queryErrorf("callstatus: limit %d is over %d", limit, MaxLimit)
	}
	rep := strings.ToLower(strings.TrimSpace(q.Rep))
	if err := s.foldForRead(ctx); err != nil {
		return nil, err
	}
	members, err := s.candidates(ctx, r, rep, q.Phone)
	if err != nil {
		return nil, err
	}
	var out []Status
	for start := 0; start < len(members) && len(out) < limit; start += loadChunk {
		sts, err := s.load(ctx, members[start:min(start+loadChunk, len(members))])
		if err != nil {
			return nil, err
		}
		for _, st := range sts {
			switch {
			case q.Route != "" && st.Route != q.Route,
				rep != "" && st.Rep != rep,
				state != "" && st.State != state,
				!r.Contains(st.FirstReceivedAt):
				continue
			}
			out = append(out, st)
			if len(out) == limit {
				break
			}
		}
	}
	if q.Phone != "" { // candidates of a phone are a set, unordered
		slices.SortFunc(out, func(a, b Status) int {
			return cmp.Or(b.FirstReceivedAt.Compare(a.FirstReceivedAt), strings.Compare(a.Route+":"+a.DetailID, b.Route+":"+b.DetailID))
		})
	}
	return out, nil
}

// candidates are the members to read for a query, latest call first where an index orders
// them: the phone's set, the rep's calls, or every call in the range.
func (s *Store) candidates(ctx context.Context, r timespec.Range, rep, phone string) ([]string, error) {
	if phone != "" {
		if s.phoneKey == nil {
			return nil, &QueryError{ErrPhoneSearchOff}
		}
		h := s.phoneHash(phone)
		if h == "" {
			return nil, queryErrorf("callstatus: %q is not a phone number", phone)
		}
		ms, err := s.rdb.SMembers(ctx, s.prefix+"ph:"+h).Result()
		if err != nil {
			return nil, fmt.Errorf("callstatus: find phone: %w", err)
		}
		return ms, nil
	}
	key := s.prefix + "idx"
	if rep != "" {
		key = s.prefix + "rep:" + repKey(rep)
	}
	hi, lo := "+inf", "-inf"
	if !r.Until.IsZero() {
		hi = "(" + strconv.FormatInt(r.Until.UnixMilli(), 10)
	}
	if !r.Since.IsZero() {
		lo = strconv.FormatInt(r.Since.UnixMilli(), 10)
	}
	ms, err := s.rdb.ZRevRangeByScore(ctx, key, &redis.ZRangeBy{Max: hi, Min: lo}).Result()
	if err != nil {
		return nil, fmt.Errorf("callstatus: list: %w", err)
	}
	return ms, nil
}
