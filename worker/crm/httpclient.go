package crm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// The HTTP layer every connector sends through is a stack of RoundTrippers under one
// http.Client, outermost first:
//
//	RateLimitTransport  takes the request's budgets from the shared RateLimiter (waits up
//	                    to its MaxWait or fails Throttled before anything is sent)
//	AuthTransport       sets Authorization from the TokenProvider; on 401 drops the token
//	                    and, where the CRM wants it, resends once with a fresh one
//	base                http.DefaultTransport, an httptest server's, or the dry-run recorder
//
// API.Do sits on top: it encodes JSON, reads the answer, classifies failures into *Error
// (Classify) and retries a short 429 burst inside the call. Everything longer is the
// task's retry, owned by asynq.

// RateLimitTransport holds requests back according to the connection's shared budgets.
type RateLimitTransport struct {
	Limiter *RateLimiter
	// Budgets names the budgets a request draws on; nil draws on "requests".
	Budgets func(*http.Request) []string
	Next    http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (t *RateLimitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if usePrepaid(req.Context()) { // a Batcher's Ready already took this request's budget
		return next(t.Next).RoundTrip(req)
	}
	budgets := []string{"requests"}
	if t.Budgets != nil {
		budgets = t.Budgets(req)
	}
	if err := t.Limiter.Wait(req.Context(), budgets...); err != nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, err
	}
	return next(t.Next).RoundTrip(req)
}

// Reauth is what AuthTransport does after a 401.
type Reauth int

const (
	// KeepToken leaves the token alone (a static token; the 401 is classified by the caller).
	KeepToken Reauth = iota
	// DropToken invalidates the shared token so the next attempt fetches a new one.
	DropToken
	// DropTokenAndRetry invalidates it and resends the request once with a new token
	// (Salesforce INVALID_SESSION_ID: sessions end without notice).
	DropTokenAndRetry
)

// AuthTransport authorises requests with the connection's token.
type AuthTransport struct {
	Tokens TokenProvider
	// OnUnauthorized decides what a 401 means; body is the response body (the transport
	// buffers it and hands the response on intact). Nil means KeepToken.
	OnUnauthorized func(resp *http.Response, body []byte) Reauth
	Next           http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (t *AuthTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, tok, err := t.send(req)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || t.OnUnauthorized == nil {
		return resp, err
	}
	body, rerr := bufferBody(resp)
	if rerr != nil {
		return resp, nil
	}
	action := t.OnUnauthorized(resp, body)
	if action == KeepToken {
		return resp, nil
	}
	inv, ok := t.Tokens.(TokenInvalidator)
	if !ok {
		return resp, nil
	}
	if err := inv.Invalidate(req.Context(), tok); err != nil {
		return resp, nil
	}
	if action != DropTokenAndRetry || (req.Body != nil && req.GetBody == nil) {
		return resp, nil
	}
	retry := req.Clone(req.Context())
	if req.GetBody != nil {
		b, err := req.GetBody()
		if err != nil {
			return resp, nil
		}
		retry.Body = b
	}
	resp2, _, err := t.send(retry)
	if err != nil {
		// A classified failure of the token fetch (a revoked refresh token: Broken) says more
		// than the first 401 and must reach the retry policy; anything else, the 401 does.
		var ce *Error
		if errors.As(err, &ce) {
			_ = resp.Body.Close()
			return nil, err
		}
		return resp, nil
	}
	_ = resp.Body.Close()
	return resp2, nil
}

func (t *AuthTransport) send(req *http.Request) (*http.Response, *oauth2.Token, error) {
	tok, err := t.Tokens.Token(req.Context())
	if err != nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, nil, err
	}
	r := req.Clone(req.Context()) // RoundTrippers must not modify the caller's request
	tok.SetAuthHeader(r)
	resp, err := next(t.Next).RoundTrip(r)
	return resp, tok, err
}

func next(rt http.RoundTripper) http.RoundTripper {
	if rt == nil {
		return http.DefaultTransport
	}
	return rt
}

// bufferBody reads a response body (up to maxBody) and puts it back so later readers see it.
func bufferBody(resp *http.Response) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	_ = resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return b, err
}

const maxBody = 8 << 20

// API sends JSON requests to one CRM through a Client built from the transports above and
// turns every failure into a classified *Error.
type API struct {
	Client     *http.Client
	BaseURL    string // e.g. https://api.hubapi.com, without a trailing slash
	Connection string
	// ParseError extracts the CRM's error code and message from an error response body.
	ParseError func(body []byte) (code, msg string)
	// Adjust lets the connector reclassify a failure with vendor knowledge (HubSpot 403
	// MISSING_SCOPES -> Broken, Salesforce 403 REQUEST_LIMIT_EXCEEDED -> Throttled).
	Adjust func(e *Error, resp *http.Response, body []byte)
	// MaxBurstRetries is how often a 429 is retried inside one call (default 1), when its
	// wait is at most MaxBurstWait (default 2s). Longer waits go back to the queue.
	MaxBurstRetries int
	MaxBurstWait    time.Duration
	Metrics         *Metrics
}

// Request is one API call.
type Request struct {
	Op     string // what is attempted, for errors: "hubspot: create call"
	Method string
	Path   string // appended to BaseURL
	Query  url.Values
	Body   any // JSON-encoded when not nil
}

// Do sends r and decodes a 2xx JSON answer into out (when out is not nil). It returns the
// status code and, for anything but 2xx, a *Error.
func (a *API) Do(ctx context.Context, r Request, out any) (int, error) {
	var payload []byte
	if r.Body != nil {
		var err error
		if payload, err = json.Marshal(r.Body); err != nil {
			return 0, &Error{Class: Permanent, Op: r.Op, Msg: "encode request", Err: err}
		}
	}
	u := a.BaseURL + r.Path
	if len(r.Query) > 0 {
		u += "?" + r.Query.Encode()
	}
	retries := a.MaxBurstRetries
	if retries == 0 {
		retries = 1
	}
	burstWait := a.MaxBurstWait
	if burstWait <= 0 {
		burstWait = 2 * time.Second
	}
	m := orNop(a.Metrics)
	for attempt := 0; ; attempt++ {
		var body io.Reader
		if payload != nil {
			body = bytes.NewReader(payload)
		}
		req, err := http.NewRequestWithContext(ctx, r.Method, u, body)
		if err != nil {
			return 0, &Error{Class: Permanent, Op: r.Op, Msg: "build request", Err: err}
		}
		req.Header.Set("Accept", "application/json")
		if payload != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := a.Client.Do(req)
		if err != nil {
			m.Requests.WithLabelValues(a.Connection, "network").Inc()
			return 0, ClassifyTransport(r.Op, err)
		}
		rb, rerr := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		_ = resp.Body.Close()
		m.Requests.WithLabelValues(a.Connection, strconv.Itoa(resp.StatusCode)).Inc()
		if rerr != nil {
			return resp.StatusCode, &Error{Class: Transient, Op: r.Op, Status: resp.StatusCode, Msg: "read response", Err: rerr}
		}
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			if out != nil && len(rb) > 0 {
				if err := json.Unmarshal(rb, out); err != nil {
					return resp.StatusCode, &Error{Class: Transient, Op: r.Op, Status: resp.StatusCode, Msg: "decode response", Err: err}
				}
			}
			return resp.StatusCode, nil
		}
		code, msg := "", ""
		if a.ParseError != nil {
			code, msg = a.ParseError(rb)
		}
		ce := Classify(r.Op, resp, code, msg)
		if a.Adjust != nil {
			a.Adjust(ce, resp, rb)
		}
		if resp.StatusCode == http.StatusTooManyRequests && ce.Class == Throttled && attempt < retries && ce.After <= burstWait {
			t := time.NewTimer(max(ce.After, 100*time.Millisecond))
			select {
			case <-ctx.Done():
				t.Stop()
				return resp.StatusCode, ce
			case <-t.C:
			}
			continue
		}
		return resp.StatusCode, ce
	}
}

// Classify turns a non-2xx response into an *Error:
//
//	429                     Throttled; After from Retry-After, else
//	                        X-HubSpot-RateLimit-Interval-Milliseconds, else 1s
//	423 Locked              Transient, After at least 2s
//	477, 5xx                Transient, After from Retry-After when given
//	401                     Transient (the auth layer already dropped a stale token)
//	400 404 409 422 ...     Permanent with the CRM's code and message
//
// Connectors refine it (API.Adjust) with what only their CRM's bodies say.
func Classify(op string, resp *http.Response, code, msg string) *Error {
	e := &Error{Op: op, Status: resp.StatusCode, Code: code, Msg: msg}
	ra, hasRA := RetryAfter(resp.Header, time.Now())
	switch s := resp.StatusCode; {
	case s == http.StatusTooManyRequests:
		e.Class = Throttled
		switch {
		case hasRA:
			e.After = ra
		case resp.Header.Get("X-HubSpot-RateLimit-Interval-Milliseconds") != "":
			if ms, err := strconv.Atoi(resp.Header.Get("X-HubSpot-RateLimit-Interval-Milliseconds")); err == nil && ms > 0 {
				e.After = time.Duration(ms) * time.Millisecond
			}
		}
		if e.After <= 0 && !hasRA {
			e.After = time.Second // HubSpot's search 429 carries no headers: its window is 1s
		}
	case s == http.StatusLocked:
		e.Class = Transient
		e.After = max(ra, 2*time.Second)
	case s == 477 || s >= 500:
		e.Class = Transient
		if hasRA {
			e.After = ra
		}
	case s == http.StatusUnauthorized:
		e.Class = Transient
	case s == http.StatusRequestTimeout:
		e.Class = Transient
	default:
		e.Class = Permanent
	}
	return e
}

// ClassifyTransport classifies an error from http.Client.Do: an *Error raised by a transport
// (rate limit, token) keeps its class; anything else (connection refused, reset, timeout) is
// Transient.
func ClassifyTransport(op string, err error) *Error {
	var ce *Error
	if errors.As(err, &ce) {
		c := *ce
		if c.Op == "" || !strings.HasPrefix(c.Op, op) {
			c.Op = op + ": " + strings.TrimPrefix(c.Op, "crm: ")
		}
		return &c
	}
	return &Error{Class: Transient, Op: op, Err: err}
}

// RetryAfter parses a Retry-After header: delay-seconds or an HTTP date.
func RetryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.Atoi(v); err == nil {
		if secs < 0 {
			return 0, false
		}
		return time.Duration(secs) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}
