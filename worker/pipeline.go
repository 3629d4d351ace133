package worker

import (
	"context"
	"fmt"
	"log/slog"
	"time"
	"unicode/utf8"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/callstatus"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/durable"
)

// Renderer turns a merged event into a CRM record, or says why the call is skipped.
// *mappers.Mapping implements it.
type Renderer interface {
	Render(ev *miitel.Event) (*mappers.Record, *mappers.Skip, error)
}

// Route is where one route's events go: the mapping that renders them (a getter, so a
// hot-reloaded mapping is picked up per event) and the CRM connection that receives them.
type Route struct {
	Mapping   func() Renderer
	Connector crm.Connector
	// Connection names the connector in metrics ("dryrun" for a route without one).
	Connection string
}

// PipelineOptions is what NewPipeline needs.
type PipelineOptions struct {
	Redis  redis.UniversalClient
	Routes map[string]Route
	// StateTTL is how long a call's merged state is kept; WrittenTTL how long the lengths
	// of long fields already written are remembered (the id-map TTL).
	StateTTL, WrittenTTL time.Duration
	// LockTTL is the call lease (renewed while a task runs; see callLock): how long a crashed
	// worker can block its call. 0 means DefaultLockLease.
	LockTTL time.Duration
	// StateMaxBytes caps one call's compressed state; 0 means 256 KiB.
	StateMaxBytes int
	Logger        *slog.Logger
	Registerer    prometheus.Registerer
	// Acks holds the lease, the state and the written lengths to redis.ack_replicas (see
	// worker/durable); nil waits for no replica.
	Acks *durable.Acks
}

// Pipeline is the Processor that delivers an event: lock the call, merge the event into the
// call's state, render the route's mapping on the merged state, keep long fields from
// shrinking, and hand the record to the route's connector.
type Pipeline struct {
	routes     map[string]Route
	state      stateStore
	lock       callLock
	writtenTTL time.Duration
	log        *slog.Logger
	stateBytes prometheus.Histogram
	skipped    prometheus.Counter
	// contacts and owners count what the delivered records' lookups matched, by connection
	// and outcome (found, none, skipped, assumed): a rise of "none" is calls landing on no
	// contact, or without their rep as owner.
	contacts, owners *prometheus.CounterVec
}

// NewPipeline builds the delivery pipeline.
func NewPipeline(o PipelineOptions) *Pipeline {
	if o.StateMaxBytes == 0 {
		o.StateMaxBytes = 256 << 10
	}
	if o.Acks == nil {
		o.Acks = durable.Off(o.Redis)
	}
	p := &Pipeline{
		routes:     o.Routes,
		state:      stateStore{rdb: o.Redis, acks: o.Acks, ttl: o.StateTTL, maxBytes: o.StateMaxBytes},
		lock:       callLock{rdb: o.Redis, acks: o.Acks, ttl: o.LockTTL},
		writtenTTL: o.WrittenTTL,
		log:        o.Logger,
		stateBytes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mcs_worker_call_state_bytes",
			Help:    "Compressed size of a call's merged state as stored in Redis.",
			Buckets: prometheus.ExponentialBuckets(256, 2, 12),
		}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mcs_worker_skipped_total",
			Help: "Call details a mapping's when-rule skipped.",
		}),
		contacts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcs_worker_contact_match_total",
			Help: "Delivered call details by what their contact lookup found: found, none (no or several matches under on_multiple: skip), skipped (no lookup or no number), assumed (dry run).",
		}, []string{"connection", "outcome"}),
		owners: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcs_worker_owner_match_total",
			Help: "Delivered call details by what their owner lookup found: found, none (no CRM user with the rep's e-mail), skipped, assumed (dry run).",
		}, []string{"connection", "outcome"}),
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(p.stateBytes, p.skipped, p.contacts, p.owners)
	}
	return p
}

// Process delivers one event (see Pipeline).
func (p *Pipeline) Process(ctx context.Context, ev *miitel.Event) error {
	rt, ok := p.routes[ev.Route]
	if !ok {
		return fmt.Errorf("worker: route %q is not configured in this worker: %w", ev.Route, asynq.SkipRetry)
	}
	ctx, release, err := p.lock.acquire(ctx, ev.Route, ev.Detail.ID)
	if err != nil {
		return err
	}
	defer release()

	prior, err := p.state.load(ctx, ev.Route, ev.Detail.ID)
	if err != nil {
		return err
	}
	merged := merge(prior, ev)
	att := attemptOf(ctx)
	att.noteMerged(merged, prior != nil)
	// The state is saved before delivery: if delivery fails and another event of the call
	// arrives meanwhile, it merges with this one and either delivery carries both.
	n, err := p.state.save(ctx, merged)
	if err != nil {
		return err
	}
	p.stateBytes.Observe(float64(n))

	mapping := rt.Mapping()
	rec, skip, err := mapping.Render(merged)
	att.noteRendered(mapping, rec, skip, err)
	if err != nil {
		return fmt.Errorf("worker: mapping: %v: %w", err, asynq.SkipRetry)
	}
	log := p.log.With("route", ev.Route, "call_id", ev.CallID, "detail_id", ev.Detail.ID, "kind", ev.Kind)
	if skip != nil {
		p.skipped.Inc()
		log.Info("call skipped by mapping", "reason", skip.Reason)
		return nil
	}

	// Only a call whose state is gone needs what earlier events wrote: with the state present
	// the merged record already carries everything.
	var written map[string]int
	if prior == nil {
		if written, err = p.state.writtenLengths(ctx, ev.Route, ev.Detail.ID); err != nil {
			return err
		}
	}
	lengths := keepLonger(rec, written, log)

	res, err := rt.Connector.Deliver(ctx, rec)
	if err != nil {
		return err
	}
	att.noteDelivered(res)
	contact, owner := callstatus.Matches(rec, res)
	p.contacts.WithLabelValues(rt.Connection, string(contact.Match)).Inc()
	p.owners.WithLabelValues(rt.Connection, string(owner.Match)).Inc()
	if err := p.state.saveWritten(ctx, ev.Route, ev.Detail.ID, lengths, p.writtenTTL); err != nil {
		return err
	}
	log.Info("call delivered", "object", rec.Object, "crm_id", res.ID, "created", res.Created,
		"contact", lookupOutcome(res.ContactID, res.Assumed), "owner", lookupOutcome(res.OwnerID, res.Assumed), "mapping_version", rec.MappingVersion)
	return nil
}

// lookupOutcome is what the "call delivered" line says of a contact or owner lookup.
func lookupOutcome(id string, assumed bool) string {
	switch {
	case id == "":
		return "none"
	case assumed:
		return "assumed (dry run)"
	}
	return "found"
}

// keepLonger drops keep_longer fields that would shorten what an earlier event wrote
// (written, the lengths remembered per field; nil when the call's state was present). It
// matters when the merged state had expired: then the record is built from this event alone,
// and e.g. the minutes must not replace a body that held the transcript. It returns the
// lengths to remember for the fields that will be written.
func keepLonger(rec *mappers.Record, written map[string]int, log *slog.Logger) map[string]int {
	lengths := map[string]int{}
	kept := rec.Fields[:0]
	for _, f := range rec.Fields {
		if !f.KeepLonger {
			kept = append(kept, f)
			continue
		}
		s, _ := f.Value.(string)
		n := utf8.RuneCountInString(s)
		if n < written[f.Name] {
			log.Warn("call state expired; not shortening a field an earlier event wrote", "field", f.Name, "written_runes", written[f.Name], "new_runes", n)
			continue
		}
		lengths[f.Name] = n
		kept = append(kept, f)
	}
	rec.Fields = kept
	return lengths
}
