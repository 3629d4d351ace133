// Package admin is the admin API, an http.Handler served on the ops listener (never on the
// webhook port): call status, the dead letter, replay, backfill, and asynqmon for the
// queues. It calls the same packages the CLI calls (worker/callstatus, worker/deadletter,
// worker/replay), so both always answer alike.
//
//	GET  /admin/calls/{id}             a call id (every detail) or a detail id
//	GET  /admin/calls?since=&until=&route=&rep=&state=&phone=&limit=
//	GET  /admin/deadletter?call_id=&detail_id=&route=&connection=&error_class=&error_code=&text=&since=&until=&limit=
//	POST /admin/replay                 JSON: the dead-letter selectors, dry_run, all    (read_write)
//	POST /admin/backfill?route=R[&dry_run=true][&from_line=N]  body: JSON lines         (read_write)
//	     /admin/queues/                asynqmon (read_only tokens get its read-only mode)
//
// Every request needs an admin credential (admin.tokens: Bearer, admin.basic: Basic), any of
// several so they rotate; without one, or with a wrong one, 401 with WWW-Authenticate; a
// read_only credential on a write, 403. A query parameter an endpoint does not take is a 400
// naming it. Answers are JSON with stable snake_case fields; phone numbers are masked and no
// transcript is ever part of one.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/callstatus"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/deadletter"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/replay"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// Options is what New needs. Status, DeadLetter, Replayer and Backfill may be nil: their
// endpoints then answer 503 saying what is not configured.
type Options struct {
	Auth       config.Admin
	Status     *callstatus.Store
	DeadLetter *deadletter.Store
	Replayer   *replay.Replayer
	// Backfill queues backfilled events: the receiver's enqueue, or replay.AsynqEnqueuer.
	Backfill replay.Enqueuer
	// Routes are the configured routes: a backfill's route must be one, and its payload
	// credential keys are removed as the receiver removes them.
	Routes []config.Route
	// MaxLineBytes bounds one backfill line (server.max_body_bytes); MaxBackfillBytes a whole
	// backfill body (default 1 GiB).
	MaxLineBytes, MaxBackfillBytes int64
	// Redis is the client asynqmon reads the queues with (Sentinel and Cluster included);
	// asynqmon never closes it. Nil: no /admin/queues.
	Redis  redis.UniversalClient
	Logger *slog.Logger
	Now    func() time.Time
	// Location reads dates and clock times of dead-letter queries (status.time_zone).
	Location *time.Location
}

// Handler is the admin API.
type Handler struct {
	o        Options
	auth     *authenticator
	mux      *http.ServeMux
	monRO    http.Handler
	monRW    http.Handler
	log      *slog.Logger
	now      func() time.Time
	routeCfg map[string]config.Route
}

// QueuesPath is where asynqmon is mounted.
const QueuesPath = "/admin/queues"

// New builds the admin API.
func New(o Options) (*Handler, error) {
	au, err := compileAuth(o.Auth)
	if err != nil {
		return nil, err
	}
	h := &Handler{o: o, auth: au, mux: http.NewServeMux(), log: o.Logger, now: o.Now, routeCfg: map[string]config.Route{}}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.o.Location == nil {
		h.o.Location = time.UTC
	}
	if h.o.MaxBackfillBytes <= 0 {
		h.o.MaxBackfillBytes = 1 << 30
	}
	for _, r := range o.Routes {
		h.routeCfg[r.Name] = r
	}
	if o.Redis != nil {
		// Two handlers: asynqmon's read-only mode is per handler, chosen per request by role.
		for _, ro := range []bool{true, false} {
			mon := asynqmon.New(asynqmon.Options{
				RootPath: QueuesPath, RedisConnOpt: sharedConn{o.Redis}, ReadOnly: ro,
				PayloadFormatter: asynqmon.PayloadFormatterFunc(formatPayload),
				ResultFormatter:  asynqmon.ResultFormatterFunc(func(string, []byte) string { return "" }),
			})
			if ro {
				h.monRO = mon
			} else {
				h.monRW = mon
			}
		}
	}
	h.mux.HandleFunc("GET /admin/calls/{id}", h.getCall)
	h.mux.HandleFunc("GET /admin/calls", h.listCalls)
	h.mux.HandleFunc("GET /admin/deadletter", h.listDeadLetter)
	h.mux.HandleFunc("POST /admin/replay", h.replay)
	h.mux.HandleFunc("POST /admin/backfill", h.backfill)
	h.mux.HandleFunc(QueuesPath+"/", h.queues)
	h.mux.HandleFunc(QueuesPath, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, QueuesPath+"/", http.StatusMovedPermanently)
	})
	h.mux.HandleFunc("/admin/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such admin endpoint: "+r.Method+" "+r.URL.Path)
	})
	return h, nil
}

// ServeHTTP authenticates, then routes. Writes (POST to the API, any non-GET to asynqmon)
// need read_write.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	role, ok := h.authorize(w, r, ReadOnly)
	if !ok {
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead && role < ReadWrite {
		writeError(w, http.StatusForbidden, "forbidden", "this credential is read_only: "+r.Method+" needs a read_write one")
		return
	}
	h.mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), roleKey{}, role)))
}

type roleKey struct{}

// authorize answers 401 or 403 unless r carries a credential of at least role.
func (h *Handler) authorize(w http.ResponseWriter, r *http.Request, need Role) (Role, bool) {
	role, presented := h.auth.authenticate(r)
	switch {
	case role == NoRole:
		for _, c := range h.auth.challenge() {
			w.Header().Add("WWW-Authenticate", c)
		}
		msg := "an admin credential is required (admin.tokens as Bearer, admin.basic as Basic)"
		if presented {
			msg = "the credential is not valid"
		}
		writeError(w, http.StatusUnauthorized, "unauthorized", msg)
		return NoRole, false
	case role < need:
		writeError(w, http.StatusForbidden, "forbidden", "this credential is "+role.String()+": "+need.String()+" is needed")
		return role, false
	}
	return role, true
}

// RequireAny wraps next so it needs an admin credential of either role (the ops listener's
// /metrics with ops.metrics_auth).
func (h *Handler) RequireAny(next http.Handler) http.Handler { return h.Require(ReadOnly, next) }

// RequireReadWrite wraps next so it needs a read_write admin credential (pprof).
func (h *Handler) RequireReadWrite(next http.Handler) http.Handler { return h.Require(ReadWrite, next) }

// Require wraps next so it needs an admin credential of at least role.
func (h *Handler) Require(role Role, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := h.authorize(w, r, role); ok {
			next.ServeHTTP(w, r)
		}
	})
}

func (h *Handler) queues(w http.ResponseWriter, r *http.Request) {
	if h.monRO == nil {
		writeError(w, http.StatusServiceUnavailable, "not_configured", "asynqmon has no Redis client")
		return
	}
	if role, _ := r.Context().Value(roleKey{}).(Role); role >= ReadWrite {
		h.monRW.ServeHTTP(w, r)
		return
	}
	h.monRO.ServeHTTP(w, r)
}

func (h *Handler) getCall(w http.ResponseWriter, r *http.Request) {
	if h.o.Status == nil {
		writeError(w, http.StatusServiceUnavailable, "not_configured", "call status is not configured")
		return
	}
	if !knownParams(w, r) {
		return
	}
	id := r.PathValue("id")
	sts, err := h.o.Status.Get(r.Context(), id)
	var nf *callstatus.NotFoundError
	if errors.As(err, &nf) {
		writeError(w, http.StatusNotFound, "no_record", nf.Error())
		return
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	resp := struct {
		ID      string              `json:"id"`
		Details []callstatus.Status `json:"details"`
		// DeadLetter lists the call's dead-letter entries (none when nothing is dead).
		DeadLetter []deadletter.Entry `json:"dead_letter"`
	}{ID: id, Details: sts, DeadLetter: []deadletter.Entry{}}
	if h.o.DeadLetter != nil {
		if es, err := h.o.DeadLetter.Find(r.Context(), id); err == nil {
			resp.DeadLetter = append(resp.DeadLetter, es...)
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

func (h *Handler) listCalls(w http.ResponseWriter, r *http.Request) {
	if h.o.Status == nil {
		writeError(w, http.StatusServiceUnavailable, "not_configured", "call status is not configured")
		return
	}
	if !knownParams(w, r, "since", "until", "route", "rep", "state", "phone", "limit") {
		return
	}
	q, err := callstatus.QueryFromValues(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_query", err.Error())
		return
	}
	sts, err := h.o.Status.List(r.Context(), q)
	var qe *callstatus.QueryError
	switch {
	case errors.Is(err, callstatus.ErrPhoneSearchOff):
		writeError(w, http.StatusBadRequest, "phone_search_off", err.Error())
		return
	case errors.As(err, &qe):
		writeError(w, http.StatusBadRequest, "invalid_query", err.Error())
		return
	case err != nil:
		h.fail(w, r, err)
		return
	}
	if sts == nil {
		sts = []callstatus.Status{}
	}
	writeJSON(w, http.StatusOK, struct {
		Calls []callstatus.Status `json:"calls"`
		Count int                 `json:"count"`
	}{sts, len(sts)})
}

// maxListed caps the dead-letter entries one GET returns.
const maxListed = 1000

func (h *Handler) selector(q deadletter.Query) (deadletter.Selector, error) {
	return q.Selector(h.now(), h.o.Location)
}

func (h *Handler) listDeadLetter(w http.ResponseWriter, r *http.Request) {
	if h.o.DeadLetter == nil {
		writeError(w, http.StatusServiceUnavailable, "not_configured", "the dead letter is not configured")
		return
	}
	if !knownParams(w, r, "call_id", "detail_id", "route", "connection", "error_class", "error_code", "text", "since", "until", "limit") {
		return
	}
	q, err := deadletter.QueryFromValues(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_query", err.Error())
		return
	}
	if q.Limit == 0 || q.Limit > maxListed {
		q.Limit = min(max(q.Limit, 100), maxListed)
	}
	sel, err := h.selector(q)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_query", err.Error())
		return
	}
	es, err := h.o.DeadLetter.List(r.Context(), sel)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	total, _ := h.o.DeadLetter.Count(r.Context())
	if es == nil {
		es = []deadletter.Entry{}
	}
	writeJSON(w, http.StatusOK, struct {
		Entries []deadletter.Entry `json:"entries"`
		Count   int                `json:"count"`
		// Total is every entry in the dead letter, selected or not.
		Total int64 `json:"total"`
	}{es, len(es), total})
}

// ReplayRequest is the body of POST /admin/replay: the dead-letter selectors (as for GET
// /admin/deadletter), whether to only preview, and the confirmation to replay everything.
type ReplayRequest struct {
	deadletter.Query
	DryRun bool `json:"dry_run"`
	All    bool `json:"all"`
}

// maxItems caps the per-call items a replay answer lists; the counts cover every call.
const maxItems = 1000

func (h *Handler) replay(w http.ResponseWriter, r *http.Request) {
	if h.o.Replayer == nil {
		writeError(w, http.StatusServiceUnavailable, "not_configured", "replay is not configured")
		return
	}
	var req ReplayRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_body", "admin: replay body: "+err.Error())
		return
	}
	sel, err := h.selector(req.Query)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_query", err.Error())
		return
	}
	sum, err := h.o.Replayer.Replay(r.Context(), sel, replay.RunOptions{DryRun: req.DryRun, All: req.All})
	if errors.Is(err, replay.ErrUnnarrowed) {
		writeError(w, http.StatusBadRequest, "unnarrowed", err.Error())
		return
	}
	if err != nil && sum.Started.IsZero() {
		h.fail(w, r, err)
		return
	}
	h.log.Info("admin: replay", "dry_run", req.DryRun, "selected", sum.Selected, "queued", sum.Counts.Queued, "failed", sum.Counts.Failed)
	resp := struct {
		replay.Summary
		ItemsTruncated bool   `json:"items_truncated,omitempty"`
		Error          string `json:"error,omitempty"`
	}{Summary: sum}
	if len(resp.Items) > maxItems {
		resp.Items, resp.ItemsTruncated = resp.Items[:maxItems], true
	}
	if err != nil {
		resp.Error = err.Error()
	}
	writeJSON(w, http.StatusOK, resp)
}

func (h *Handler) backfill(w http.ResponseWriter, r *http.Request) {
	if !knownParams(w, r, "route", "dry_run", "from_line") {
		return
	}
	q := r.URL.Query()
	dry, _ := strconv.ParseBool(q.Get("dry_run"))
	if h.o.Backfill == nil && !dry {
		writeError(w, http.StatusServiceUnavailable, "not_configured", "backfill has no enqueue configured")
		return
	}
	route, ok := h.routeCfg[q.Get("route")]
	if !ok {
		writeError(w, http.StatusBadRequest, "unknown_route", fmt.Sprintf("route %q is not configured (give ?route=)", q.Get("route")))
		return
	}
	from := 0
	if s := q.Get("from_line"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, "invalid_query", "from_line must be a line number from 1")
			return
		}
		from = n
	}
	var keys []string
	for _, p := range route.Auth.Payload {
		if !slices.Contains(keys, p.Key) {
			keys = append(keys, p.Key)
		}
	}
	sum, err := replay.Backfill(r.Context(), http.MaxBytesReader(w, r.Body, h.o.MaxBackfillBytes), h.o.Backfill, replay.BackfillOptions{
		Route: route.Name, CredentialKeys: keys, MaxLineBytes: int(h.o.MaxLineBytes), FromLine: from, DryRun: dry,
		ReceivedAt: h.now(),
	})
	h.log.Info("admin: backfill", "route", route.Name, "dry_run", dry, "lines", sum.Lines, "queued", sum.Queued,
		"duplicates", sum.Duplicates, "invalid", sum.Invalid, "stopped_at", sum.StoppedAt)
	resp := struct {
		replay.BackfillSummary
		Error string `json:"error,omitempty"`
	}{BackfillSummary: sum}
	status := http.StatusOK
	if err != nil {
		// What was queued before the failure stays queued: the answer says where to resume.
		resp.Error, status = err.Error(), http.StatusServiceUnavailable
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			status = http.StatusRequestEntityTooLarge
		}
	}
	writeJSON(w, status, resp)
}

func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	h.log.Warn("admin: request failed", "method", r.Method, "path", r.URL.Path, "error", err.Error())
	writeError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// apiError is every error answer: {"error": {"code": ..., "message": ...}}.
type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	var e apiError
	e.Error.Code, e.Error.Message = code, msg
	writeJSON(w, status, e)
}

// sharedConn hands asynqmon our Redis client (standalone, Sentinel or Cluster) without
// letting it close it: asynqmon closes what MakeRedisClient returns when its handler is
// closed. (asynqmon's Redis-info page needs a concrete client type and is not served.)
type sharedConn struct{ c redis.UniversalClient }

func (s sharedConn) MakeRedisClient() any { return noClose{s.c} }

type noClose struct{ redis.UniversalClient }

func (noClose) Close() error { return nil }

// formatPayload is what asynqmon shows of a task: the call it is about, never the payload,
// which carries phone numbers and the transcript.
func formatPayload(taskType string, payload []byte) string {
	if taskType == tasks.TypeCallEvent {
		if ev, err := tasks.DecodeCallEvent(asynq.NewTask(taskType, payload)); err == nil {
			return fmt.Sprintf("route=%s call_id=%s detail_id=%s kind=%s", ev.Route, ev.CallID, ev.Detail.ID, ev.Kind)
		}
	}
	return fmt.Sprintf("(%d bytes, not shown)", len(payload))
}

// knownParams answers 400 and reports false when the request has a query parameter other
// than known: a misspelt selector (?sate=dead) would otherwise be ignored and the answer
// cover far more than was asked, which for a list is confusing and for a backfill wrong.
func knownParams(w http.ResponseWriter, r *http.Request, known ...string) bool {
	for _, k := range slices.Sorted(maps.Keys(r.URL.Query())) {
		if slices.Contains(known, k) {
			continue
		}
		msg := fmt.Sprintf("unknown query parameter %q: %s %s takes none", k, r.Method, r.URL.Path)
		if len(known) > 0 {
			msg = fmt.Sprintf("unknown query parameter %q: %s %s takes %s", k, r.Method, r.URL.Path, strings.Join(known, ", "))
		}
		writeError(w, http.StatusBadRequest, "invalid_query", msg)
		return false
	}
	return true
}
