// Package timespec reads the since/until values of operators' queries (call status, dead
// letter, replay), the same way for the admin API and the CLI: an instant (RFC 3339), a
// date or a clock time in the operator's time zone, or a span back from now.
package timespec

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Parse reads s relative to now, dates and clock times in loc:
//
//	2026-04-01T09:00:00+09:00   an instant (RFC 3339)
//	2026-04-01                  midnight starting that day
//	09:00, 9:30                 that time today
//	today, yesterday            midnight starting the day
//	90m, 2h, 3d                 that long before now (Go durations, plus d for days)
//
// The empty string is the zero time (no bound).
func Parse(s string, now time.Time, loc *time.Location) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if loc == nil {
		loc = time.UTC
	}
	local := now.In(loc)
	midnight := time.Date(local.Year(), local.Month(), local.Day(), 0, 0, 0, 0, loc)
	switch strings.ToLower(s) {
	case "today":
		return midnight, nil
	case "yesterday":
		return midnight.AddDate(0, 0, -1), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation(time.DateOnly, s, loc); err == nil {
		return t, nil
	}
	for _, layout := range []string{"15:04", "15:04:05"} {
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			return midnight.Add(time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute + time.Duration(t.Second())*time.Second), nil
		}
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 {
			return now.Add(-time.Duration(n) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("timespec: %q is not a time: use RFC 3339 (2026-04-01T09:00:00+09:00), a date (2026-04-01), a clock time (09:00), today, yesterday, or a span back from now (90m, 2h, 3d)", s)
}

// Range is a half-open interval [Since, Until); a zero bound is open.
type Range struct{ Since, Until time.Time }

// Contains reports whether t is within the range.
func (r Range) Contains(t time.Time) bool {
	return (r.Since.IsZero() || !t.Before(r.Since)) && (r.Until.IsZero() || t.Before(r.Until))
}

// ParseRange reads since and until (see Parse) and checks that since is before until.
func ParseRange(since, until string, now time.Time, loc *time.Location) (Range, error) {
	var r Range
	var err error
	if r.Since, err = Parse(since, now, loc); err != nil {
		return Range{}, fmt.Errorf("since: %w", err)
	}
	if r.Until, err = Parse(until, now, loc); err != nil {
		return Range{}, fmt.Errorf("until: %w", err)
	}
	if !r.Since.IsZero() && !r.Until.IsZero() && !r.Since.Before(r.Until) {
		return Range{}, fmt.Errorf("timespec: since %s is not before until %s", r.Since.Format(time.RFC3339), r.Until.Format(time.RFC3339))
	}
	return r, nil
}
