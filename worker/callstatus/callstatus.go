// Package callstatus answers "what happened to this call?": a durable record per call detail
// of the events received (kind, when, the dedupe key, duplicates), the task's state (pending,
// active, retry with the next attempt, parked on a broken connection, dead, done, skipped),
// the attempts, the last error and, once written, the CRM record with its link and whether
// the contact and the owner were matched.
//
// Writers: the receiver records what it accepted (Received, or, inside its own enqueue
// script, NoteLua's mcs_status_defer, which only notes the receipt, so the status costs
// no round trip and little Redis time on the webhook's path); the worker records each
// attempt (Started, Failed, Delivered, Skipped), folding the detail's noted receipts first,
// and folds the other notes in the background (RunFolder). Readers: Get (a call id or a
// detail id) and List (time range, route, rep, state, phone), used by the admin API and the
// CLI alike; both fold what is noted first.
//
// A record is one JSON string per detail, changed only by Lua so concurrent writers (the
// receiver and several workers) never lose each other's updates, under the queue's hash tag
// like asynq's keys. It lives status.retention after its last change, and the store keeps at
// most status.max_records, the oldest calls going first. Phone numbers are stored masked;
// with status.phone_search enabled, an HMAC of each E.164 number (keyed with the configured
// secret) indexes the call, never the number. Lists are ordered and bounded by when a call
// first reached us.
package callstatus

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nyaruka/phonenumbers"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/deadletter"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redact"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// State is where a call detail's latest event is.
type State string

const (
	Pending State = "pending" // queued, not yet taken by a worker
	Active  State = "active"  // a worker is on it
	Retry   State = "retry"   // failed; tried again at NextAttemptAt
	Parked  State = "parked"  // its CRM connection is broken; waits for an admin (not dead)
	Dead    State = "dead"    // in the dead letter
	Done    State = "done"    // written to the CRM
	Skipped State = "skipped" // the mapping's skip rule left it out; nothing written
)

// States lists every state, for validating queries.
var States = []State{Pending, Active, Retry, Parked, Dead, Done, Skipped}

// NoteLua defines the Lua function that notes an accepted event, for a script of the same
// queue to call (the receiver's enqueue script), so the status costs no round trip:
//
//	mcs_status_defer(prefix, member, arg, duplicate)  -- duplicate: a Lua boolean the script decided
//
// prefix, member and arg are the three values ReceiveArgs returns; pass them in ARGV. The
// function only notes the receipt (one HSETNX); the store folds it into the detail's
// record before a worker's transition of that detail and before every read, and a worker's
// folder (RunFolder) folds the rest in the background. Every key the function touches is
// under prefix, which carries the queue's hash tag, so on Redis Cluster it runs in the slot
// of the queue's asynq keys (the calling script declares those). The function is local:
// prepend it to the script's source. It is LuaLibrary's first part, kept apart so the
// receiver's script carries only it: every local function of a script is built anew on
// each call.
//
//go:embed note.lua
var NoteLua string

//go:embed callstatus.lua
var libraryLua string

// LuaLibrary is every call status function: NoteLua's, and those that record, fold and
// transition (callstatus.lua).
var LuaLibrary = NoteLua + "\n" + libraryLua

var (
	// receivedScript folds the detail's noted receipts first: this receipt follows them.
	receivedScript = redis.NewScript(LuaLibrary + `
mcs_status_fold_member(ARGV[1], ARGV[2], nil)
return mcs_status_received(ARGV[1], ARGV[3], ARGV[4] == '1')`)
	transitionScript = redis.NewScript(LuaLibrary + "\nreturn mcs_status_transition(ARGV[1], ARGV[2])")
	foldScript       = redis.NewScript(LuaLibrary + "\nreturn mcs_status_fold(ARGV[1], tonumber(ARGV[2]))")
)

// foldChunk is how many noted members one fold script takes: a few milliseconds of Redis
// time, so a backlog never blocks the receivers' enqueues for long. foldRounds bounds the
// chunks a read folds before it reads (a backlog of foldChunk*foldRounds members and more is
// a worker outage's; the read then shows what is folded, the rest follows).
// folderRounds bounds one tick of the folder's, leaving Redis to the others in between.
const (
	foldChunk    = 200
	foldRounds   = 50
	folderRounds = 100
)

// maxEvents bounds the events one record lists; MiiTel sends a few per detail (analysis,
// minutes, memo edits), so only a runaway sender reaches it.
const maxEvents = 32

// maxEventsArg is maxEvents as the Lua argument carries it.
var maxEventsArg = strconv.Itoa(maxEvents)

// maxMessage bounds a stored error message.
const maxMessage = 1024

// Options is what New needs.
type Options struct {
	// Queue is the asynq queue name; the keys carry it as their hash tag.
	Queue  string
	Config config.Status
	// Routes and Connections tell a route's connection and its record_url template.
	Routes      []config.Route
	Connections []config.Connection
	Logger      *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Store is the call status of one queue.
type Store struct {
	rdb      redis.UniversalClient
	prefix   string
	cfg      config.Status
	loc      *time.Location
	routes   []string
	conns    map[string]string // route -> connection
	urls     map[string]string // route -> record_url template
	phoneKey []byte            // nil: phone search off
	// ttlArg and maxArg are retention and max_records as every Lua argument carries them,
	// formatted once.
	ttlArg, maxArg string
	log            *slog.Logger
	now            func() time.Time
}

// New returns the call status of o.Queue.
func New(rdb redis.UniversalClient, o Options) (*Store, error) {
	if rdb == nil || o.Queue == "" {
		return nil, errors.New("callstatus: a Redis client and a queue name are required")
	}
	if o.Config.Retention <= 0 || o.Config.MaxRecords <= 0 {
		return nil, fmt.Errorf("callstatus: retention and max_records must be positive (got %s, %d)", o.Config.Retention, o.Config.MaxRecords)
	}
	loc := time.UTC
	if o.Config.TimeZone != "" {
		l, err := time.LoadLocation(o.Config.TimeZone)
		if err != nil {
			return nil, fmt.Errorf("callstatus: time zone: %w", err)
		}
		loc = l
	}
	s := &Store{
		rdb: rdb, prefix: tasks.KeyPrefix + "{" + o.Queue + "}:status:", cfg: o.Config, loc: loc,
		conns: map[string]string{}, urls: map[string]string{}, log: o.Logger, now: o.Now,
		ttlArg: strconv.FormatInt(o.Config.Retention.Milliseconds(), 10), maxArg: strconv.Itoa(o.Config.MaxRecords),
	}
	if o.Config.PhoneSearch.Enabled {
		if o.Config.PhoneSearch.Secret.Value() == "" {
			return nil, errors.New("callstatus: phone_search is enabled but its secret is empty (unresolved?)")
		}
		s.phoneKey = []byte(o.Config.PhoneSearch.Secret.Value())
	}
	templates := map[string]string{}
	for _, c := range o.Connections {
		templates[c.Name] = c.RecordURL
	}
	for _, r := range o.Routes {
		s.routes = append(s.routes, r.Name)
		s.conns[r.Name] = r.Connection
		s.urls[r.Name] = templates[r.Connection]
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

// Location is the zone queries read dates and clock times in (status.time_zone).
func (s *Store) Location() *time.Location { return s.loc }

// Retention is how long records are kept.
func (s *Store) Retention() time.Duration { return s.cfg.Retention }

func member(route, detailID string) string { return route + ":" + detailID }

func ms(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.UnixMilli(), 10)
}

// facts are a record's call-level facts, as the Lua side reads them.
type facts struct {
	Route  string `json:"route,omitempty"`
	Detail string `json:"detail,omitempty"`
	Call   string `json:"call,omitempty"`
	CallAt string `json:"call_at,omitempty"`
	Type   string `json:"type,omitempty"`
	Dir    string `json:"dir,omitempty"`
	Rep    string `json:"rep,omitempty"`
	From   string `json:"from,omitempty"`
	To     string `json:"to,omitempty"`
	Cust   string `json:"cust,omitempty"`
	Kind   string `json:"kind,omitempty"`
}

// arg is the one argument of every Lua function.
type arg struct {
	M     string      `json:"m"`
	F     facts       `json:"f"`
	K     string      `json:"k"`             // the event's dedupe key
	At    string      `json:"at,omitempty"`  // when received (ms)
	RAt   string      `json:"rat,omitempty"` // the event's received_at, for a worker noting it
	T     *transition `json:"t,omitempty"`
	RepK  string      `json:"repk,omitempty"`
	Ph    []string    `json:"ph,omitempty"`
	TTL   string      `json:"ttl"`
	Max   string      `json:"max"`
	MaxEv string      `json:"maxev"`
	Now   string      `json:"now"`
}

type transition struct {
	State   State      `json:"state"`
	At      string     `json:"at"`
	Next    string     `json:"next,omitempty"`
	Err     *errorRec  `json:"err,omitempty"`
	CRM     *crmRec    `json:"crm,omitempty"`
	Contact *lookupRec `json:"contact,omitempty"`
	Owner   *lookupRec `json:"owner,omitempty"`
	Skip    string     `json:"skip,omitempty"`
}

type errorRec struct {
	Class  string `json:"class,omitempty"`
	Code   string `json:"code,omitempty"`
	Status string `json:"status,omitempty"`
	Msg    string `json:"msg,omitempty"`
	At     string `json:"at,omitempty"`
}

type crmRec struct {
	Conn    string `json:"conn,omitempty"`
	Obj     string `json:"obj,omitempty"`
	ID      string `json:"id,omitempty"`
	URL     string `json:"url,omitempty"`
	Created string `json:"created,omitempty"`
	At      string `json:"at,omitempty"`
	Ver     string `json:"ver,omitempty"`
}

type lookupRec struct {
	Match string `json:"match,omitempty"`
	ID    string `json:"id,omitempty"`
}

// eventKey names an event in its record: its dedupe key (every event the receiver queues
// has one), else its kind.
func eventKey(ev *miitel.Event) string {
	if ev.DedupeKey != "" {
		return ev.DedupeKey
	}
	return "-" + string(ev.Kind)
}

// base builds the argument common to every write: the member, the event's facts and
// indexes, and the store's bounds.
func (s *Store) base(ev *miitel.Event) arg {
	f := mappers.FactsOf(ev)
	callAt := f.StartedAt
	if callAt.IsZero() {
		callAt = ev.ReceivedAt
	}
	a := arg{
		M: member(ev.Route, ev.Detail.ID), K: eventKey(ev),
		F: facts{Route: ev.Route, Detail: ev.Detail.ID, Call: ev.CallID, CallAt: ms(callAt), Type: ev.Detail.CallType,
			Dir: f.Direction, Rep: f.RepEmail, From: redact.Number(f.FromNumber), To: redact.Number(f.ToNumber),
			Cust: redact.Number(f.CustomerNumber), Kind: string(ev.Kind)},
		TTL: s.ttlArg, Max: s.maxArg, MaxEv: maxEventsArg, Now: ms(s.now()),
	}
	if f.RepEmail != "" {
		a.RepK = repKey(f.RepEmail)
	}
	if s.phoneKey != nil {
		seen := map[string]bool{}
		for _, n := range []string{f.FromNumber, f.ToNumber} {
			if h := s.phoneHash(n); h != "" && !seen[h] {
				seen[h] = true
				a.Ph = append(a.Ph, h)
			}
		}
	}
	return a
}

// repKey pseudonymises a rep's e-mail for a key name, so `redis-cli --scan` lists no
// addresses.
func repKey(email string) string {
	h := sha256.Sum256([]byte(strings.ToLower(strings.TrimSpace(email))))
	return hex.EncodeToString(h[:12])
}

// phoneHash is the HMAC-SHA256 (keyed with status.phone_search.secret) of a number in E.164
// (national numbers read as Japanese): a plain hash of a phone number is reversed by hashing
// the few billion possible numbers, a keyed one is not without the key.
func (s *Store) phoneHash(number string) string {
	e164 := normalize(number)
	if e164 == "" || s.phoneKey == nil {
		return ""
	}
	m := hmac.New(sha256.New, s.phoneKey)
	m.Write([]byte(e164))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

func normalize(number string) string {
	number = strings.TrimSpace(number)
	if number == "" {
		return ""
	}
	n, err := phonenumbers.Parse(number, "JP")
	if err != nil {
		digits := strings.Map(func(r rune) rune {
			if r >= '0' && r <= '9' {
				return r
			}
			return -1
		}, number)
		if len(digits) < 7 {
			return ""
		}
		return digits
	}
	return phonenumbers.Format(n, phonenumbers.E164)
}

func (s *Store) encode(a arg) (string, error) {
	b, err := appendArg(make([]byte, 0, 512), &a)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// ReceiveArgs are the three ARGV values of mcs_status_defer for one event the receiver
// accepted at `at`: the keys' prefix, the detail's member and the JSON argument.
func (s *Store) ReceiveArgs(ev *miitel.Event, at time.Time) (prefix, member, arg string, err error) {
	a := s.base(ev)
	a.At = ms(at)
	if arg, err = s.encode(a); err != nil {
		return "", "", "", err
	}
	return s.prefix, a.M, arg, nil
}

// Received records an event the receiver accepted: queued, or a duplicate of one queued or
// delivered. It is what a receiver without its own script calls after the enqueue; one
// with the script notes the receipt there (mcs_status_defer), to the same effect once
// folded.
func (s *Store) Received(ctx context.Context, ev *miitel.Event, duplicate bool, at time.Time) error {
	prefix, member, arg, err := s.ReceiveArgs(ev, at)
	if err != nil {
		return err
	}
	dup := "0"
	if duplicate {
		dup = "1"
	}
	if err := receivedScript.Run(ctx, s.rdb, []string{s.prefix + "idx"}, prefix, member, arg, dup).Err(); err != nil {
		return fmt.Errorf("callstatus: record received event: %w", err)
	}
	return nil
}

// Fold brings every record up to date with the receipts the receiver noted (NoteLua),
// in chunks of foldChunk members, at most rounds chunks (0: until none is left). It
// reports whether none is left.
func (s *Store) Fold(ctx context.Context, rounds int) (bool, error) {
	for i := 0; rounds == 0 || i < rounds; i++ {
		left, err := foldScript.Run(ctx, s.rdb, []string{s.prefix + "in"}, s.prefix, foldChunk).Int64()
		if err != nil {
			return false, fmt.Errorf("callstatus: fold received events: %w", err)
		}
		if left == 0 {
			return true, nil
		}
	}
	return false, nil
}

// FoldInterval is how often RunFolder folds.
const FoldInterval = 500 * time.Millisecond

// RunFolder folds the noted receipts every interval until ctx ends, so records stay
// current and the notes do not pile up while no one reads. Workers run it: every transition
// folds its own detail first, this the rest (duplicates, calls not yet taken). A failed fold
// is logged once until one succeeds again (Redis down shows in every other part too).
func (s *Store) RunFolder(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		_, err := s.Fold(ctx, folderRounds)
		switch {
		case err != nil && ctx.Err() != nil:
			return nil
		case err != nil && !failing:
			failing = true
			s.log.Warn("call status: folding received events failed; records show them once it works again", "error", err.Error())
		case err == nil && failing:
			failing = false
			s.log.Info("call status: folding received events works again")
		}
	}
}

func (s *Store) transition(ctx context.Context, ev *miitel.Event, t transition) error {
	a := s.base(ev)
	a.RAt = ms(ev.ReceivedAt)
	if t.At == "" {
		t.At = ms(s.now())
	}
	a.T = &t
	j, err := s.encode(a)
	if err != nil {
		return err
	}
	if err := transitionScript.Run(ctx, s.rdb, []string{s.prefix + "idx"}, s.prefix, j).Err(); err != nil {
		return fmt.Errorf("callstatus: record %s: %w", t.State, err)
	}
	return nil
}

// Started records that a worker took the event: active, one attempt more. It also notes the
// event itself, so status works for processed calls even where the receiver records nothing.
func (s *Store) Started(ctx context.Context, ev *miitel.Event) error {
	return s.transition(ctx, ev, transition{State: Active})
}

// Failure is a failed attempt as the worker decided it.
type Failure struct {
	// State is Retry, Parked (the connection is broken) or Dead.
	State State
	// NextAttempt is when asynq runs it again (Retry, Parked).
	NextAttempt time.Time
	Error       deadletter.Error
}

// Failed records a failed attempt.
func (s *Store) Failed(ctx context.Context, ev *miitel.Event, f Failure) error {
	if f.State != Retry && f.State != Parked && f.State != Dead {
		return fmt.Errorf("callstatus: %q is not a failure state", f.State)
	}
	now := s.now()
	t := transition{State: f.State, At: ms(now), Next: ms(f.NextAttempt), Err: &errorRec{
		Class: f.Error.Class, Code: f.Error.Code, Msg: redact.Text(snippet(f.Error.Message, maxMessage)), At: ms(now)}}
	if f.Error.Status != 0 {
		t.Err.Status = strconv.Itoa(f.Error.Status)
	}
	if f.State == Dead {
		t.Next = ""
	}
	return s.transition(ctx, ev, t)
}

// Delivery is what a successful delivery wrote.
type Delivery struct {
	Record *mappers.Record // what was rendered (for the object, the lookups, the version)
	Result crm.Result
}

// Delivered records that the event was written to the CRM.
func (s *Store) Delivered(ctx context.Context, ev *miitel.Event, d Delivery) error {
	now := s.now()
	// A link the connector reported is kept; one from the record_url template is expanded
	// when read, so a corrected template applies to calls written before.
	c := &crmRec{Conn: s.conns[ev.Route], ID: d.Result.ID, URL: d.Result.URL, At: ms(now)}
	if d.Result.Created {
		c.Created = "1"
	}
	contact, owner := Matches(d.Record, d.Result)
	if d.Record != nil {
		c.Obj, c.Ver = d.Record.Object, d.Record.MappingVersion
	}
	return s.transition(ctx, ev, transition{State: Done, At: ms(now), CRM: c,
		Contact: &lookupRec{Match: string(contact.Match), ID: contact.ID},
		Owner:   &lookupRec{Match: string(owner.Match), ID: owner.ID}})
}

// Skipped records that the mapping's skip rule left the event out.
func (s *Store) Skipped(ctx context.Context, ev *miitel.Event, reason string) error {
	return s.transition(ctx, ev, transition{State: Skipped, Skip: reason})
}

// expandURL fills a record_url template that needs nothing but the record id; one that
// needs what only the connector knows ({portal_id}, {instance_url}) is the connector's to
// fill (crm.Result.URL).
func expandURL(template, id string) string {
	if template == "" || id == "" || strings.Count(template, "{") != strings.Count(template, "{id}") {
		return ""
	}
	return strings.ReplaceAll(template, "{id}", id)
}

// Match says whether a contact or owner was matched.
type Match string

const (
	Found   Match = "found"   // matched; the id is the CRM's
	None    Match = "none"    // looked up, nothing matched (or several, with on_multiple: skip)
	Policy  Match = "skipped" // not looked up: the mapping asked for no lookup, or had no number / e-mail
	Assumed Match = "assumed" // dry run: no CRM was asked, a placeholder stands for the id
)

// Lookup is the outcome of a contact or owner lookup.
type Lookup struct {
	Match Match  `json:"match"`
	ID    string `json:"id,omitempty"`
}

// Matches tells what became of the record's contact and owner lookups.
func Matches(rec *mappers.Record, res crm.Result) (contact, owner Lookup) {
	outcome := func(asked bool, id string) Lookup {
		switch {
		case !asked:
			return Lookup{Match: Policy}
		case strings.HasPrefix(id, "{") && strings.HasSuffix(id, "}"): // the dry run's placeholders
			return Lookup{Match: Assumed}
		case id != "":
			return Lookup{Match: Found, ID: id}
		}
		return Lookup{Match: None}
	}
	askedContact := rec != nil && rec.Contact != nil && (rec.Contact.E164 != "" || rec.Contact.National != "" || rec.Contact.Raw != "")
	askedOwner := rec != nil && rec.Owner != nil && rec.Owner.Email != ""
	return outcome(askedContact, res.ContactID), outcome(askedOwner, res.OwnerID)
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

// Noted is how many call details have receipts the receivers noted that no fold has brought
// into their records yet (NoteLua): a few between the folder's runs, more only while no
// worker runs.
func (s *Store) Noted(ctx context.Context) (int64, error) {
	return s.rdb.HLen(ctx, s.prefix+"in").Result()
}

// Collector exports Noted at scrape time as mcs_status_unfolded.
func (s *Store) Collector() prometheus.Collector { return &notedCollector{s: s, desc: notedDesc} }

var notedDesc = prometheus.NewDesc("mcs_status_unfolded",
	"Call details whose receipts the receivers noted and no fold has brought into their records yet; grows while no worker runs.", nil, nil)

type notedCollector struct {
	s    *Store
	desc *prometheus.Desc
}

func (c *notedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *notedCollector) Collect(ch chan<- prometheus.Metric) {
	n, err := c.s.Noted(context.Background())
	if err != nil {
		return // mcs_queue_scrape_ok says Redis is unreadable
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n))
}
