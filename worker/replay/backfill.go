package replay

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/receiver"
)

// Enqueuer queues the events of one webhook body the way the receiver does (dedupe kept)
// and says, per event in order, whether it was queued or dropped as a duplicate: the
// receiver's own enqueue (ReceiverEnqueuer).
type Enqueuer interface {
	Enqueue(ctx context.Context, route string, events []*miitel.Event) ([]Enqueued, error)
}

// Enqueued is the fate of one event at the door.
type Enqueued struct {
	DetailID  string      `json:"detail_id"`
	Kind      miitel.Kind `json:"kind"`
	Duplicate bool        `json:"duplicate"`
}

// BackfillOptions shape a backfill.
type BackfillOptions struct {
	// Route is the route the bodies are ingested on (its mapping and connection apply).
	Route string
	// CredentialKeys are the route's payload-credential keys (auth.payload[].key), removed
	// from what is queued as the receiver removes them. Authentication itself is skipped.
	CredentialKeys []string
	// ReceivedAt stamps every event (received_at, which decides which of two events of a
	// call is newer); zero means now.
	ReceivedAt time.Time
	// MaxLineBytes bounds one line, as server.max_body_bytes bounds a request; 0 means 10 MiB.
	MaxLineBytes int
	// FromLine skips the lines before it (1-based), to resume a backfill that stopped.
	FromLine int
	// DryRun parses and checks every line and queues nothing.
	DryRun bool
	// Progress, when set, is called after each line.
	Progress func(BackfillProgress)
}

// BackfillProgress is reported after each line.
type BackfillProgress struct {
	Line int
	BackfillCounts
}

// BackfillCounts count a backfill's lines and events.
type BackfillCounts struct {
	Lines      int `json:"lines"`      // non-empty lines read (from FromLine on)
	Events     int `json:"events"`     // call details in them
	Queued     int `json:"queued"`     // queued for the worker
	Duplicates int `json:"duplicates"` // already queued or delivered within the dedupe window
	Challenges int `json:"challenges"` // MiiTel's setup handshakes, not calls: skipped
	Invalid    int `json:"invalid"`    // lines the receiver would answer 400: skipped (LineErrors)
}

// BackfillSummary is the result of a backfill.
type BackfillSummary struct {
	DryRun bool `json:"dry_run"`
	BackfillCounts
	// Errors are the first invalid lines (at most maxLineErrors).
	Errors []LineError `json:"errors"`
	// StoppedAt is the line an enqueue failed on; resume with FromLine = StoppedAt.
	StoppedAt int `json:"stopped_at,omitempty"`
}

// LineError is one line the receiver would refuse, and why (never the line itself).
type LineError struct {
	Line  int    `json:"line"`
	Error string `json:"error"`
}

const maxLineErrors = 100

// Backfill ingests stored MiiTel webhook bodies, one JSON object per line, through the
// receiver's path: parsed and checked by receiver.ParseEvents, queued by enq with dedupe, so
// a line sent before, or a body MiiTel sent as well, is a duplicate, never a second write.
// An invalid line is counted and skipped. An enqueue failure stops the backfill with the
// error and StoppedAt, and everything before that line is queued.
func Backfill(ctx context.Context, r io.Reader, enq Enqueuer, o BackfillOptions) (BackfillSummary, error) {
	sum := BackfillSummary{DryRun: o.DryRun, Errors: []LineError{}}
	if o.Route == "" {
		return sum, errors.New("replay: backfill: a route is required")
	}
	if enq == nil && !o.DryRun {
		return sum, errors.New("replay: backfill: an Enqueuer is required")
	}
	maxLine := o.MaxLineBytes
	if maxLine <= 0 {
		maxLine = 10 << 20
	}
	received := o.ReceivedAt
	if received.IsZero() {
		received = time.Now()
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, min(64<<10, maxLine)), maxLine)
	line := 0
	for sc.Scan() {
		line++
		body := bytes.TrimSpace(sc.Bytes())
		if line < o.FromLine || len(body) == 0 {
			continue
		}
		if err := ctx.Err(); err != nil {
			sum.StoppedAt = line
			return sum, fmt.Errorf("replay: backfill stopped at line %d: %w", line, err)
		}
		sum.Lines++
		events, err := receiver.ParseEvents(o.Route, body, o.CredentialKeys, received)
		switch {
		case errors.Is(err, receiver.ErrChallenge):
			sum.Challenges++
		case err != nil:
			sum.Invalid++
			if len(sum.Errors) < maxLineErrors {
				sum.Errors = append(sum.Errors, LineError{Line: line, Error: err.Error()})
			}
		default:
			sum.Events += len(events)
			if o.DryRun {
				break
			}
			res, err := enq.Enqueue(ctx, o.Route, events)
			if err != nil {
				sum.StoppedAt = line
				return sum, fmt.Errorf("replay: backfill line %d: %w (lines before it are queued; resume from line %d)", line, err, line)
			}
			for _, e := range res {
				if e.Duplicate {
					sum.Duplicates++
				} else {
					sum.Queued++
				}
			}
		}
		if o.Progress != nil {
			o.Progress(BackfillProgress{Line: line, BackfillCounts: sum.BackfillCounts})
		}
	}
	if err := sc.Err(); err != nil {
		sum.StoppedAt = line + 1
		if errors.Is(err, bufio.ErrTooLong) {
			return sum, fmt.Errorf("replay: backfill line %d is over %d bytes (server.max_body_bytes): %w", line+1, maxLine, err)
		}
		return sum, fmt.Errorf("replay: backfill: read line %d: %w", line+1, err)
	}
	return sum, nil
}

// EventEnqueuer is the receiver's own enqueue (*receiver.Enqueuer): the events of one body
// in one script with its dedupe, its call status and its wait for replicas
// (redis.ack_replicas), so a backfilled call gets what a webhook call gets.
type EventEnqueuer interface {
	EnqueueEvents(ctx context.Context, route string, events []*miitel.Event) ([]receiver.EventResult, error)
}

// ReceiverEnqueuer is the receiver's enqueue as a backfill's Enqueuer.
func ReceiverEnqueuer(e EventEnqueuer) Enqueuer { return receiverEnqueuer{e} }

type receiverEnqueuer struct{ e EventEnqueuer }

// Enqueue implements Enqueuer.
func (r receiverEnqueuer) Enqueue(ctx context.Context, route string, events []*miitel.Event) ([]Enqueued, error) {
	res, err := r.e.EnqueueEvents(ctx, route, events)
	if err != nil {
		return nil, err
	}
	out := make([]Enqueued, len(res))
	for i, e := range res {
		out[i] = Enqueued{DetailID: e.DetailID, Kind: e.Kind, Duplicate: e.Duplicate}
	}
	return out, nil
}
