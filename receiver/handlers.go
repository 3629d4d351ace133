package receiver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/bytedance/sonic/encoder"
	"github.com/gin-gonic/gin"
)

// Outcomes label the requests metric and the request log line.
const (
	outcomeQueued       = "queued"    // at least one detail queued
	outcomeDuplicate    = "duplicate" // every detail was a re-send
	outcomeChallenge    = "challenge"
	outcomeNotFound     = "not_found"
	outcomeIPDenied     = "ip_not_allowed"
	outcomeUnauthorized = "unauthorized"
	outcomeForbidden    = "forbidden"
	outcomeTooLarge     = "too_large"
	outcomeMediaType    = "unsupported_media_type"
	outcomeInvalid      = "invalid"
	outcomeUnavailable  = "unavailable"
	outcomeOverloaded   = "overloaded" // over the in-flight budget
	outcomeInternal     = "internal"
)

// requestLog collects what the one log line of a webhook request says. Only identifiers,
// sizes and outcomes: never the body, phone numbers, transcripts or credentials.
type requestLog struct {
	route      string
	outcome    string
	remoteIP   string
	bodyBytes  int
	callID     string
	detailIDs  []string
	kinds      []string
	queued     int
	duplicates int
	err        error
}

const requestLogKey = "miitel_crm_sync.request_log"

func logOf(c *gin.Context) *requestLog {
	if v, ok := c.Get(requestLogKey); ok {
		return v.(*requestLog)
	}
	rl := &requestLog{}
	c.Set(requestLogKey, rl)
	return rl
}

// webhook handles POST /webhooks/miitel/:route; doc.go lists its steps and answers.
func (r *Receiver) webhook(c *gin.Context) {
	rl := logOf(c)
	name := c.Param("route")
	au, ok := r.routes[name]
	if !ok {
		rl.route, rl.outcome = unknownRoute, outcomeNotFound
		writeError(c, http.StatusNotFound, "route_not_found", fmt.Sprintf("unknown route %q", name))
		return
	}
	rl.route = name
	rl.remoteIP = c.ClientIP()
	if !au.ipAllowed(rl.remoteIP) {
		rl.outcome = outcomeIPDenied
		writeError(c, http.StatusForbidden, "ip_not_allowed", "source address is not allowed")
		return
	}
	// Routes whose credentials are all headers decide before a byte of the body is read:
	// an unauthenticated flood costs neither memory nor the in-flight budget.
	if !au.insecure && !au.needsBody() {
		ok, presented := au.checkHeaders(c.Request.Header)
		if !ok {
			closeUnread(c)
		}
		if !r.authorized(c, rl, au, ok, presented) {
			return
		}
	}
	if !au.needsBody() && !isJSONContentType(c.GetHeader("Content-Type")) {
		closeUnread(c)
		r.jsonContentType(c, rl)
		return
	}

	ch, ok := r.admit(c, rl)
	if !ok {
		return
	}
	defer ch.release()
	body, err := r.readBody(c, ch)
	if err != nil {
		r.unreadable(c, rl, err)
		return
	}
	rl.bodyBytes = len(body)
	r.m.bodyBytes.WithLabelValues(name).Observe(float64(len(body)))

	top, perr := splitTop(body)
	if !au.insecure && au.needsBody() {
		ok, presented := au.checkHeaders(c.Request.Header)
		if !ok && perr == nil {
			pok, ppresented := au.checkPayload(top)
			ok, presented = pok, presented || ppresented
		}
		if !r.authorized(c, rl, au, ok, presented) {
			return
		}
		if !r.jsonContentType(c, rl) {
			return
		}
	}
	if perr != nil {
		r.invalid(c, rl, perr)
		return
	}

	token, isChallenge, err := top.challengeToken()
	if err != nil {
		r.invalid(c, rl, err)
		return
	}
	if isChallenge {
		// MiiTel's setup handshake: echo the token, exactly, and touch nothing else.
		rl.outcome = outcomeChallenge
		c.Header("X-Content-Type-Options", "nosniff")
		c.Data(http.StatusOK, "text/plain", []byte(token))
		return
	}

	// A call whose structure decodes into far more than its size (e.g. thousands of {})
	// is charged what it will take before it is decoded.
	need := top.decodeCost() + 3*int64(len(body))
	if need > r.inflight.maxBytes {
		rl.outcome = outcomeTooLarge
		writeError(c, http.StatusRequestEntityTooLarge, "body_too_complex", fmt.Sprintf(
			"request body would take %d bytes in memory once decoded, more than server.max_inflight_bytes (%d)", need, r.inflight.maxBytes))
		return
	}
	if !ch.atLeast(need) {
		r.overBudget(c, rl)
		return
	}
	req, err := top.parse(name, au.payloadKeys, r.now().UTC())
	if err != nil {
		r.invalid(c, rl, err)
		return
	}
	rl.callID = req.events[0].CallID
	for _, ev := range req.events {
		rl.detailIDs = append(rl.detailIDs, ev.Detail.ID)
		rl.kinds = append(rl.kinds, string(ev.Kind))
	}

	results, err := r.enqueueAll(c.Request.Context(), name, req)
	req.release() // encodeTasks copied each detail into its task message
	if err != nil {
		rl.outcome, rl.err = outcomeUnavailable, err
		c.Header("Retry-After", strconv.Itoa(retryAfterSeconds(r.server.RetryAfter)))
		writeError(c, http.StatusServiceUnavailable, "unavailable",
			"the queue is unavailable; nothing of this request is acknowledged, send it again")
		return
	}
	for _, res := range results {
		if res.Result == resultQueued {
			rl.queued++
		} else {
			rl.duplicates++
		}
	}
	rl.outcome = outcomeQueued
	if rl.queued == 0 {
		rl.outcome = outcomeDuplicate
	}
	writeAccepted(c, &acceptedResponse{
		Status: "accepted", CallID: rl.callID, Queued: rl.queued, Duplicates: rl.duplicates, Details: results,
	})
}

// writeAccepted writes the 200 answer: the JSON c.JSON would write, by sonic's encoder
// (EscapeHTML as encoding/json), cheaper than gin's encoding/json render.
func writeAccepted(c *gin.Context, a *acceptedResponse) {
	b, err := encoder.Encode(a, encoder.EscapeHTML)
	if err != nil { // cannot happen for these types; answer as before rather than fail
		c.JSON(http.StatusOK, a)
		return
	}
	c.Data(http.StatusOK, "application/json; charset=utf-8", b)
}

// authorized answers 401 or 403 unless ok.
func (r *Receiver) authorized(c *gin.Context, rl *requestLog, au *authenticator, ok, presented bool) bool {
	switch {
	case ok:
		return true
	case !presented:
		rl.outcome = outcomeUnauthorized
		for _, v := range au.wwwAuthenticate() {
			c.Writer.Header().Add("WWW-Authenticate", v)
		}
		writeError(c, http.StatusUnauthorized, "unauthorized", "credentials are required")
	default:
		rl.outcome = outcomeForbidden
		writeError(c, http.StatusForbidden, "forbidden", "credentials are not valid")
	}
	return false
}

func (r *Receiver) jsonContentType(c *gin.Context, rl *requestLog) bool {
	if isJSONContentType(c.GetHeader("Content-Type")) {
		return true
	}
	rl.outcome = outcomeMediaType
	writeError(c, http.StatusUnsupportedMediaType, "unsupported_media_type",
		"content type must be application/json (charset utf-8)")
	return false
}

// admit charges the request against the in-flight budget before its body is read: its
// declared length (times bodyCostFactor), or a first step of a chunked body. A declared
// length over Server.MaxBodyBytes is refused here (413) without reading a byte.
func (r *Receiver) admit(c *gin.Context, rl *requestLog) (*charge, bool) {
	cl := c.Request.ContentLength
	if cl > r.server.MaxBodyBytes {
		closeUnread(c)
		r.tooLarge(c, rl)
		return nil, false
	}
	ch, ok := r.inflight.admit(max(minCharge, max(cl, 0)*bodyCostFactor))
	if !ok {
		r.overBudget(c, rl)
		return nil, false
	}
	if r.onAdmit != nil {
		r.onAdmit()
	}
	return ch, true
}

func (r *Receiver) overBudget(c *gin.Context, rl *requestLog) {
	rl.outcome = outcomeOverloaded
	r.m.overloaded.WithLabelValues(rl.route).Inc()
	c.Header("Retry-After", strconv.Itoa(retryAfterSeconds(r.server.RetryAfter)))
	closeUnread(c)
	writeError(c, http.StatusServiceUnavailable, "overloaded",
		"the receiver is at its limit of requests in flight; nothing of this request is acknowledged, send it again")
}

// closeUnread closes the connection after an answer given without reading the body: net/http
// would otherwise read (and discard) up to 256 KiB of it before answering, which is the
// work the early answer is there to avoid. It must be called before the answer is written.
func closeUnread(c *gin.Context) {
	if c.Request.ContentLength != 0 {
		c.Header("Connection", "close")
	}
}

func (r *Receiver) tooLarge(c *gin.Context, rl *requestLog) {
	rl.outcome, rl.bodyBytes = outcomeTooLarge, int(r.server.MaxBodyBytes)
	writeError(c, http.StatusRequestEntityTooLarge, "body_too_large",
		fmt.Sprintf("request body exceeds %d bytes", r.server.MaxBodyBytes))
}

func (r *Receiver) unreadable(c *gin.Context, rl *requestLog, err error) {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		r.tooLarge(c, rl)
	case errors.Is(err, errOverBudget):
		r.overBudget(c, rl)
	default:
		rl.outcome, rl.err = outcomeInvalid, err
		writeError(c, http.StatusBadRequest, "unreadable_body", "request body could not be read")
	}
}

// acceptedResponse is the 200 body: what happened to each detail.
type acceptedResponse struct {
	Status     string         `json:"status"`
	CallID     string         `json:"call_id"`
	Queued     int            `json:"queued"`
	Duplicates int            `json:"duplicates"`
	Details    []detailResult `json:"details"`
}

func (r *Receiver) invalid(c *gin.Context, rl *requestLog, err error) {
	var ie *invalidError
	if errors.As(err, &ie) {
		rl.outcome, rl.err = outcomeInvalid, err
		writeError(c, ie.httpStatus(), ie.code, ie.msg)
		return
	}
	rl.outcome, rl.err = outcomeInternal, err
	writeError(c, http.StatusInternalServerError, "internal", "internal error")
}

// readBody reads the whole body under Server.MaxBodyBytes: a declared length into one
// buffer of exactly that size (already charged by admit), a chunked body through a reader
// that charges it as it grows.
func (r *Receiver) readBody(c *gin.Context, ch *charge) ([]byte, error) {
	limit := r.server.MaxBodyBytes
	body := http.MaxBytesReader(c.Writer, c.Request.Body, limit)
	if cl := c.Request.ContentLength; cl >= 0 {
		buf := make([]byte, cl)
		if _, err := io.ReadFull(body, buf); err != nil {
			return nil, err
		}
		return buf, nil
	}
	var buf bytes.Buffer
	_, err := buf.ReadFrom(&chargedReader{r: body, c: ch, covered: ch.bytes / bodyCostFactor})
	if err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// isJSONContentType accepts application/json with no charset or charset utf-8, which is
// what MiiTel sends ("application/json; charset=utf-8").
func isJSONContentType(v string) bool {
	mt, params, err := mime.ParseMediaType(v)
	if err != nil || mt != "application/json" {
		return false
	}
	cs, ok := params["charset"]
	return !ok || strings.EqualFold(cs, "utf-8") || strings.EqualFold(cs, "utf8")
}

func retryAfterSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

// errorBody is every error answer: a human message and a stable code to match on.
type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func writeError(c *gin.Context, status int, code, msg string) {
	c.AbortWithStatusJSON(status, errorBody{Error: msg, Code: code})
}

// healthz says the process serves HTTP; it never touches Redis, so a Redis outage does not
// get the pod restarted (that would not fix Redis).
func (r *Receiver) healthz(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"status": "ok"})
}

// readyTimeout bounds the readiness check: a probe must answer well within its own timeout.
const readyTimeout = time.Second

// Ready says whether the receiver can acknowledge calls now (nil) or why not, so the ops
// listener's /readyz takes a receiver that could only answer 503 out of the Service's
// endpoints. It checks the enqueue path itself: a write to the queue's slot and, with
// redis.ack_replicas, the wait for the replicas, on the connection kind an enqueue uses.
// So it turns unready while enqueues would fail (Redis down or read-only in a failover,
// NOREPLICAS, replicas not confirming within ack_timeout) and ready again once one would
// succeed.
func (r *Receiver) Ready(ctx context.Context) error {
	return r.enq.Ready(ctx, min(readyTimeout, r.server.EnqueueTimeout))
}

// logRequests writes one log line per request after it is handled and counts webhook
// requests. Webhook requests log at info (warn for 4xx, error for 5xx); probes and
// scrapes at debug, so they do not drown the log.
func (r *Receiver) logRequests() gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		rl := logOf(c)
		c.Next()
		status := c.Writer.Status()
		if rl.route != "" {
			outcome := rl.outcome
			if outcome == "" {
				outcome = outcomeInternal
			}
			r.m.requests.WithLabelValues(rl.route, outcome, strconv.Itoa(status)).Inc()
		}
		level := slog.LevelDebug
		switch {
		case rl.route == "" && status >= 500: // a panic outside the webhook routes
			level = slog.LevelWarn
		case rl.route == "": // liveness probes and unknown paths
		case status >= 500:
			level = slog.LevelError
		case status >= 400:
			level = slog.LevelWarn
		default:
			level = slog.LevelInfo
		}
		ctx := c.Request.Context()
		if !r.log.Enabled(ctx, level) {
			return
		}
		// Sized for a webhook request's every key, so appending never reallocates.
		attrs := make([]slog.Attr, 0, 15)
		attrs = append(attrs,
			slog.String("method", c.Request.Method),
			slog.String("path", c.Request.URL.Path),
			slog.Int("status", status),
			slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000),
		)
		if rl.route != "" {
			attrs = append(attrs, slog.String("route", rl.route), slog.String("outcome", rl.outcome),
				slog.String("remote_ip", rl.remoteIP), slog.Int("body_bytes", rl.bodyBytes))
		}
		if rl.callID != "" {
			attrs = append(attrs, slog.String("call_id", rl.callID), slog.Any("detail_ids", jsonStrings(rl.detailIDs)),
				slog.Any("kinds", jsonStrings(rl.kinds)), slog.Int("queued", rl.queued), slog.Int("duplicates", rl.duplicates))
		}
		if rl.err != nil {
			attrs = append(attrs, slog.String("error", rl.err.Error()))
		}
		r.log.LogAttrs(ctx, level, "receiver: request", attrs...)
	}
}

// recoverPanics turns a handler panic into a 500 and one error log line with the stack. It
// replaces gin.Recovery, which dumps request headers (credentials) when a client hangs up.
func (r *Receiver) recoverPanics() gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			rec := recover()
			if rec == nil {
				return
			}
			if rec == http.ErrAbortHandler { //nolint:errorlint // sentinel panic value, compared as net/http does
				panic(rec)
			}
			rl := logOf(c)
			rl.outcome, rl.err = outcomeInternal, fmt.Errorf("panic: %v", rec)
			r.log.Error("receiver: panic in handler", "panic", fmt.Sprint(rec), "stack", string(debug.Stack()))
			if !c.Writer.Written() {
				writeError(c, http.StatusInternalServerError, "internal", "internal error")
			}
			c.Abort()
		}()
		c.Next()
	}
}

// jsonStrings logs as the JSON array slog writes for a []string (its JSON handler
// encodes an Any value with encoding/json, by reflection, HTML escaping off), taking the
// common case (printable ASCII ids and kinds) without reflection.
type jsonStrings []string

func (ss jsonStrings) MarshalJSON() ([]byte, error) {
	if ss == nil {
		return []byte("null"), nil
	}
	n := 2
	for _, s := range ss {
		if !plainJSON(s) {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			if err := enc.Encode([]string(ss)); err != nil {
				return nil, err
			}
			return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
		}
		n += len(s) + 3
	}
	b := make([]byte, 0, n)
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(append(append(b, '"'), s...), '"')
	}
	return append(b, ']'), nil
}

// plainJSON reports whether s is printable ASCII that encoding/json writes as it is
// (HTML escaping off): no quote, backslash or control character.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
