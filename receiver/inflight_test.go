package receiver

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// slowRequest opens a raw connection and sends a webhook request's headers declaring
// length bytes of body, and only the first few bytes of it: the handler is then reading
// the body, holding its share of the in-flight budget, until finish or close.
type slowRequest struct {
	t    *testing.T
	conn net.Conn
	rest string
}

func startSlow(t *testing.T, h *harness, path string, hdr string, body string) *slowRequest {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.http.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json; charset=utf-8\r\n%sContent-Length: %d\r\n\r\n", path, hdr, len(body))
	if _, err := io.WriteString(conn, head+body[:10]); err != nil {
		t.Fatal(err)
	}
	return &slowRequest{t: t, conn: conn, rest: body[10:]}
}

// response reads the answer without sending the rest of the body.
func (s *slowRequest) response() *http.Response {
	s.t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(s.conn), nil)
	if err != nil {
		s.t.Fatalf("read response: %v", err)
	}
	resp.Body.Close()
	return resp
}

// finish sends the rest of the body and reads the answer.
func (s *slowRequest) finish() *http.Response {
	s.t.Helper()
	if _, err := io.WriteString(s.conn, s.rest); err != nil {
		s.t.Fatal(err)
	}
	return s.response()
}

// TestHeaderAuthBeforeBody: on a route whose credentials are headers, a request without
// or with wrong credentials is answered before its body is read (here: before the body
// has even been sent), and an unknown content type too, after authentication.
func TestHeaderAuthBeforeBody(t *testing.T) {
	h := newHarness(t)
	seed := string(sample(t, "call_analysis_completed/seed_sample.json"))
	for _, tc := range []struct {
		name, path, hdr string
		want            int
	}{
		{"no credential", "/webhooks/miitel/bearer", "", 401},
		{"wrong bearer", "/webhooks/miitel/bearer", "Authorization: Bearer nope\r\n", 403},
		{"wrong header", "/webhooks/miitel/header", headerName + ": nope\r\n", 403},
		{"wrong basic", "/webhooks/miitel/basic", "Authorization: Basic eDp5\r\n", 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := startSlow(t, h, tc.path, tc.hdr, seed).response().StatusCode; got != tc.want {
				t.Errorf("status %d, want %d", got, tc.want)
			}
		})
	}
	t.Run("valid credential waits for the body", func(t *testing.T) {
		if got := startSlow(t, h, "/webhooks/miitel/bearer", "Authorization: Bearer "+bearerNew+"\r\n", seed).finish().StatusCode; got != 200 {
			t.Errorf("status %d, want 200", got)
		}
	})
}

// TestInflightBudget: over max_inflight_requests or max_inflight_bytes a request gets 503
// with Retry-After before its body is read; the budget comes back when requests finish.
func TestInflightBudget(t *testing.T) {
	seed := string(sample(t, "call_analysis_completed/seed_sample.json"))
	const overloaded = "the receiver is at its limit of requests in flight; nothing of this request is acknowledged, send it again"

	t.Run("requests", func(t *testing.T) {
		admitted := make(chan struct{}, 8)
		h := newHarness(t, func(o *Options) { o.Server.MaxInflightRequests = 2 })
		h.r.onAdmit = func() { admitted <- struct{}{} }
		a, b := startSlow(t, h, "/webhooks/miitel/open", "", seed), startSlow(t, h, "/webhooks/miitel/open", "", seed)
		<-admitted
		<-admitted
		resp := startSlow(t, h, "/webhooks/miitel/open", "", seed).response()
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "30" {
			t.Fatalf("third request: %d Retry-After %q, want 503 30", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		if a.finish().StatusCode != 200 || b.finish().StatusCode != 200 {
			t.Fatal("admitted requests did not complete")
		}
		if resp, body := h.post("/webhooks/miitel/open", []byte(seed), nil); resp.StatusCode != 200 {
			t.Fatalf("after the budget came back: %d %s", resp.StatusCode, body)
		}
		if n := testutil.ToFloat64(h.r.m.overloaded.WithLabelValues("open")); n != 1 {
			t.Errorf("overloaded_total %v, want 1", n)
		}
	})

	t.Run("bytes", func(t *testing.T) {
		admitted := make(chan struct{}, 8)
		h := newHarness(t, func(o *Options) {
			o.Server.MaxBodyBytes = 256 << 10
			o.Server.MaxInflightBytes = 4 * (256 << 10) // one max-size body
		})
		h.r.onAdmit = func() { admitted <- struct{}{} }
		big := strings.Replace(seed, "Left Message", strings.Repeat("x", 200<<10), 1)
		slow := startSlow(t, h, "/webhooks/miitel/open", "", big)
		<-admitted
		resp := startSlow(t, h, "/webhooks/miitel/open", "", big).response()
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "30" {
			t.Fatalf("request over the byte budget: %d, want 503", resp.StatusCode)
		}
		if got := slow.finish().StatusCode; got != 200 {
			t.Errorf("admitted request: %d", got)
		}
		if resp, body := h.post("/webhooks/miitel/open", []byte(big), nil); resp.StatusCode != 200 {
			t.Errorf("after the budget came back: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("chunked body charged as it grows", func(t *testing.T) {
		h := newHarness(t, func(o *Options) {
			o.Server.MaxBodyBytes = 1 << 20
			o.Server.MaxInflightBytes = 4 << 20
		})
		admitted := make(chan struct{}, 8)
		h.r.onAdmit = func() { admitted <- struct{}{} }
		// 600 KiB declared holds 2.4 MiB of the 4 MiB; a chunked 800 KiB body would need 3.2.
		held := startSlow(t, h, "/webhooks/miitel/open", "", strings.Replace(seed, "Left Message", strings.Repeat("x", 600<<10), 1))
		<-admitted
		big := []byte(strings.Replace(seed, "Left Message", strings.Repeat("y", 800<<10), 1))
		resp, body := h.postChunked("/webhooks/miitel/open", big)
		if resp.StatusCode != 503 {
			t.Fatalf("chunked body over the budget: %d %s", resp.StatusCode, body)
		}
		assertErrorBody(t, body, "overloaded", overloaded)
		<-admitted
		if got := held.finish().StatusCode; got != 200 {
			t.Errorf("held request: %d", got)
		}
		if resp, body := h.postChunked("/webhooks/miitel/open", big); resp.StatusCode != 200 {
			t.Errorf("chunked body once the budget is back: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("a call decoding far beyond its size is charged for it", func(t *testing.T) {
		h := newHarness(t, func(o *Options) {
			o.Server.MaxBodyBytes = 1 << 20
			o.Server.MaxInflightBytes = 4 << 20
		})
		// 200k empty phrase items: 600 KB of JSON, tens of MB once decoded.
		items := strings.Repeat("{},", 200000)
		body := `{"call":{"id":"c","tenant_code":"t","details":[{"id":"d","call_type":"OUTGOING_CALL","phrases":[{"raw":[` + items[:len(items)-1] + `]}]}]}}`
		resp, got := h.post("/webhooks/miitel/open", []byte(body), nil)
		if resp.StatusCode != 413 {
			t.Fatalf("status %d: %s", resp.StatusCode, got)
		}
		var eb errorBody
		if err := json.Unmarshal(got, &eb); err != nil || eb.Code != "body_too_complex" ||
			!strings.Contains(eb.Error, "more than server.max_inflight_bytes (4194304)") {
			t.Errorf("answer %s", got)
		}
		if n := h.redisKeys(); n != 0 {
			t.Errorf("%d redis keys written", n)
		}
	})
}
