// Package crm is the boundary between the worker and the CRM connectors. A connector turns a
// rendered mappers.Record into one CRM's requests; everything CRM-neutral that connectors share
// (error classification for retries, the Redis-shared OAuth2 token, the Redis-shared rate
// limit, the lookup cache, the MiiTel-id -> CRM-id map) lives here so a new CRM is one new
// package under worker/crm.
package crm

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/hibiken/asynq"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
)

// Connector writes one rendered record into a CRM as exactly one activity: it resolves the
// record's contact and owner lookups, upserts by the record's external id and associates the
// activity with the contact. Calling it again with the same record (a retry, a later event of
// the same call) updates the same activity; it never creates a second one.
type Connector interface {
	Deliver(ctx context.Context, rec *mappers.Record) (Result, error)
}

// Result says what Deliver did.
type Result struct {
	ID        string `json:"id"`                   // the CRM id of the activity
	Created   bool   `json:"created"`              // true when this call created it
	ContactID string `json:"contact_id,omitempty"` // the associated contact/lead, if any
	OwnerID   string `json:"owner_id,omitempty"`   // the owner set, if any
	// Assumed: ContactID and OwnerID are placeholders for lookups that were not made (a dry
	// run cannot know whether the CRM would find them), not found records.
	Assumed bool `json:"assumed,omitempty"`
	// URL links to the activity in the CRM's UI (connections[].record_url filled with what
	// the connector knows: HubSpot's portal id, Salesforce's instance URL); "" if unknown.
	// Call status shows it.
	URL string `json:"url,omitempty"`
}

// Class is what a failure means for the retry policy.
type Class int

const (
	// Transient failures (network errors, 5xx, 423, 477) retry with backoff and count as
	// failed attempts.
	Transient Class = iota
	// Throttled failures (429, Salesforce REQUEST_LIMIT_EXCEEDED, our own shared rate limit)
	// retry after RetryAfter and do NOT count as failed attempts.
	Throttled
	// Permanent failures (validation 4xx, unknown field, mapping errors) go straight to the
	// dead letter with the CRM's message.
	Permanent
	// Broken means the connection itself is unusable until an admin acts (revoked refresh
	// token: invalid_grant). Tasks wait (long RetryAfter, not counted as failures) instead of
	// burning their retries.
	Broken
)

func (c Class) String() string {
	switch c {
	case Transient:
		return "transient"
	case Throttled:
		return "throttled"
	case Permanent:
		return "permanent"
	case Broken:
		return "broken"
	}
	return fmt.Sprintf("class(%d)", int(c))
}

// Error is a classified CRM failure. Connectors return it (wrapped or not); the worker's retry
// policy reads it through errors.As.
type Error struct {
	Class  Class
	Op     string        // what was attempted, e.g. "hubspot: create call"
	Status int           // HTTP status, 0 for network errors
	Code   string        // the CRM's error code/category, e.g. "VALIDATION_ERROR", "INVALID_FIELD"
	Msg    string        // the CRM's message, kept for the dead letter's reason
	After  time.Duration // how long to wait before the next attempt (Retry-After), 0 = policy default
	Err    error         // the underlying error, if any
}

func (e *Error) Error() string {
	s := e.Op
	if e.Status != 0 {
		s += fmt.Sprintf(": HTTP %d", e.Status)
	}
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s + " (" + e.Class.String() + ")"
}

// Unwrap exposes the cause, and asynq.SkipRetry for permanent failures so asynq archives the
// task at once.
func (e *Error) Unwrap() []error {
	errs := []error{}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	if e.Class == Permanent {
		errs = append(errs, asynq.SkipRetry)
	}
	return errs
}

// RetryAfter is how long to wait before retrying; 0 lets the policy's backoff decide.
func (e *Error) RetryAfter() time.Duration { return e.After }

// Throttled reports whether the failure must not count against the task's retry budget.
func (e *Error) Throttled() bool { return e.Class == Throttled || e.Class == Broken }

// ClassOf returns the class of err: a *Error's class, Permanent for asynq.SkipRetry, and
// Transient for anything else (an unknown failure is worth retrying).
func ClassOf(err error) Class {
	var ce *Error
	if errors.As(err, &ce) {
		return ce.Class
	}
	if errors.Is(err, asynq.SkipRetry) {
		return Permanent
	}
	return Transient
}

// Snippet cuts a CRM's error text to at most n bytes for Error.Msg (the dead letter's reason
// and the logs), on a rune boundary: CRM messages quote field values, often Japanese.
func Snippet(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
