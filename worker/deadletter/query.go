package deadletter

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/timespec"
)

// Query is a selection of dead-letter entries as an operator writes it: the admin API's
// query string or JSON body and the CLI's flags. Every set field must match (AND); the ids
// are alternatives (OR).
type Query struct {
	CallIDs    []string `json:"call_id,omitempty"`
	DetailIDs  []string `json:"detail_id,omitempty"`
	Route      string   `json:"route,omitempty"`
	Connection string   `json:"connection,omitempty"`
	// ErrorClass is transient, throttled, permanent or broken.
	ErrorClass string `json:"error_class,omitempty"`
	// ErrorCode matches the CRM's code (or MAPPING, ROUTE) exactly, ignoring case.
	ErrorCode string `json:"error_code,omitempty"`
	// Text matches anywhere in the error message, ignoring case.
	Text string `json:"text,omitempty"`
	// Since and Until bound when the detail (last) went dead; see timespec.Parse.
	Since string `json:"since,omitempty"`
	Until string `json:"until,omitempty"`
	// Limit caps the entries returned; 0 means no cap.
	Limit int `json:"limit,omitempty"`
}

// QueryFromValues reads a Query from URL query parameters of the same names (call_id and
// detail_id may repeat or hold comma-separated ids).
func QueryFromValues(v url.Values) (Query, error) {
	q := Query{
		CallIDs: splitIDs(v["call_id"]), DetailIDs: splitIDs(v["detail_id"]),
		Route: v.Get("route"), Connection: v.Get("connection"),
		ErrorClass: v.Get("error_class"), ErrorCode: v.Get("error_code"), Text: v.Get("text"),
		Since: v.Get("since"), Until: v.Get("until"),
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return Query{}, fmt.Errorf("deadletter: limit %q is not a non-negative number", s)
		}
		q.Limit = n
	}
	return q, nil
}

func splitIDs(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, id := range strings.Split(v, ",") {
			if id = strings.TrimSpace(id); id != "" {
				out = append(out, id)
			}
		}
	}
	return out
}

// Selector is a compiled Query.
type Selector struct {
	CallIDs, DetailIDs          []string
	Route, Connection           string
	ErrorClass, ErrorCode, Text string
	Range                       timespec.Range
	Limit                       int
}

var errorClasses = []string{"transient", "throttled", "permanent", "broken"}

// Selector compiles q: times relative to now, dates and clock times in loc.
func (q Query) Selector(now time.Time, loc *time.Location) (Selector, error) {
	r, err := timespec.ParseRange(q.Since, q.Until, now, loc)
	if err != nil {
		return Selector{}, fmt.Errorf("deadletter: %w", err)
	}
	class := strings.ToLower(strings.TrimSpace(q.ErrorClass))
	if class != "" && !slices.Contains(errorClasses, class) {
		return Selector{}, fmt.Errorf("deadletter: error_class %q is not one of %s", q.ErrorClass, strings.Join(errorClasses, ", "))
	}
	if q.Limit < 0 {
		return Selector{}, fmt.Errorf("deadletter: limit must not be negative")
	}
	return Selector{
		CallIDs: q.CallIDs, DetailIDs: q.DetailIDs, Route: q.Route, Connection: q.Connection,
		ErrorClass: class, ErrorCode: strings.TrimSpace(q.ErrorCode), Text: strings.ToLower(q.Text),
		Range: r, Limit: q.Limit,
	}, nil
}

// Narrowed reports whether the selector selects by anything but a limit: replaying an
// unnarrowed selection is replaying the whole dead letter, which callers confirm first.
func (s Selector) Narrowed() bool {
	return len(s.CallIDs)+len(s.DetailIDs) > 0 || s.Route != "" || s.Connection != "" || s.ErrorClass != "" ||
		s.ErrorCode != "" || s.Text != "" || !s.Range.Since.IsZero() || !s.Range.Until.IsZero()
}

// Match reports whether e is selected (ids included).
func (s Selector) Match(e *Entry) bool {
	if len(s.CallIDs)+len(s.DetailIDs) > 0 && !slices.Contains(s.CallIDs, e.CallID) && !slices.Contains(s.DetailIDs, e.DetailID) {
		return false
	}
	switch {
	case s.Route != "" && e.Route != s.Route,
		s.Connection != "" && e.Connection != s.Connection,
		s.ErrorClass != "" && e.Error.Class != s.ErrorClass,
		s.ErrorCode != "" && !strings.EqualFold(e.Error.Code, s.ErrorCode),
		s.Text != "" && !strings.Contains(strings.ToLower(e.Error.Message), s.Text),
		!s.Range.Contains(e.DeadAt):
		return false
	}
	return true
}

// List returns the selected entries, the most recently dead first.
func (s *Store) List(ctx context.Context, sel Selector) ([]Entry, error) {
	var out []Entry
	err := s.Each(ctx, sel, func(e Entry) error {
		out = append(out, e)
		return nil
	})
	return out, err
}

// Each calls fn for every selected entry, the most recently dead first, up to sel.Limit. The
// members are read at once, so entries resolved while fn runs (a replay delivering them) do
// not shift the walk; an entry gone by the time it is read is skipped.
func (s *Store) Each(ctx context.Context, sel Selector, fn func(Entry) error) error {
	members, err := s.members(ctx, sel)
	if err != nil {
		return err
	}
	n := 0
	for start := 0; start < len(members); start += loadChunk {
		es, err := s.load(ctx, members[start:min(start+loadChunk, len(members))])
		if err != nil {
			return err
		}
		for i := range es {
			if !sel.Match(&es[i]) {
				continue
			}
			if err := fn(es[i]); err != nil {
				return err
			}
			if n++; sel.Limit > 0 && n >= sel.Limit {
				return nil
			}
		}
	}
	return nil
}

// members lists the candidate members: those of the ids when the selector names any (from
// the id index), else every entry dead within the time range, newest first.
func (s *Store) members(ctx context.Context, sel Selector) ([]string, error) {
	if ids := append(slices.Clone(sel.CallIDs), sel.DetailIDs...); len(ids) > 0 {
		keys := make([]string, len(ids))
		for i, id := range ids {
			keys[i] = s.idKey(id)
		}
		ms, err := s.rdb.SUnion(ctx, keys...).Result()
		if err != nil {
			return nil, fmt.Errorf("deadletter: find ids: %w", err)
		}
		// Newest first like the time walk: order by the index's score.
		scores := make([]*redis.FloatCmd, len(ms))
		if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, m := range ms {
				scores[i] = p.ZScore(ctx, s.idxKey(), m)
			}
			return nil
		}); err != nil && err != redis.Nil {
			return nil, fmt.Errorf("deadletter: find ids: %w", err)
		}
		type scored struct {
			m string
			s float64
		}
		var ordered []scored
		for i, m := range ms {
			if v, err := scores[i].Result(); err == nil {
				ordered = append(ordered, scored{m, v})
			}
		}
		slices.SortFunc(ordered, func(a, b scored) int {
			if a.s != b.s {
				if a.s > b.s {
					return -1
				}
				return 1
			}
			return strings.Compare(a.m, b.m)
		})
		out := make([]string, len(ordered))
		for i, o := range ordered {
			out[i] = o.m
		}
		return out, nil
	}
	hi, lo := "+inf", "-inf"
	if !sel.Range.Until.IsZero() {
		hi = "(" + strconv.FormatInt(sel.Range.Until.UnixMilli(), 10)
	}
	if !sel.Range.Since.IsZero() {
		lo = strconv.FormatInt(sel.Range.Since.UnixMilli(), 10)
	}
	ms, err := s.rdb.ZRevRangeByScore(ctx, s.idxKey(), &redis.ZRangeBy{Max: hi, Min: lo}).Result()
	if err != nil {
		return nil, fmt.Errorf("deadletter: list: %w", err)
	}
	return ms, nil
}

// Find returns the entries of a call id or detail id (a call has several details).
func (s *Store) Find(ctx context.Context, id string) ([]Entry, error) {
	return s.List(ctx, Selector{CallIDs: []string{id}, DetailIDs: []string{id}})
}
