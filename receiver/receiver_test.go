package receiver

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/miitel-crm-sync/miitel-crm-sync/examples"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
)

// TestSamplesMatchSchemas validates every MiiTel sample the project ships against MiiTel's
// published JSON Schema of its event (examples/payloads/*/schema.json), so a fixture edited by
// hand cannot drift from what MiiTel sends. The help page's sample (seed_sample.json) is
// older than the schema and lacks participants[].login_id, which the schema requires: the
// receiver accepts it all the same (TestSamplesAccepted), and this test pins exactly that
// one difference.
func TestSamplesMatchSchemas(t *testing.T) {
	fsys := examples.Payloads()
	schemas, err := fs.Glob(fsys, "*/schema.json")
	if err != nil || len(schemas) != 3 {
		t.Fatalf("schemas found: %v (%v), want one per event kind (3)", schemas, err)
	}
	checked := 0
	for _, sp := range schemas {
		c := jsonschema.NewCompiler()
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(sample(t, sp)))
		if err != nil {
			t.Fatalf("%s: %v", sp, err)
		}
		if err := c.AddResource(sp, doc); err != nil {
			t.Fatalf("%s: %v", sp, err)
		}
		sch, err := c.Compile(sp)
		if err != nil {
			t.Fatalf("%s: %v", sp, err)
		}
		dir := path.Dir(sp)
		samples, _ := fs.Glob(fsys, dir+"/*sample*.json")
		for _, name := range samples {
			v, err := jsonschema.UnmarshalJSON(bytes.NewReader(sample(t, name)))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			err = sch.Validate(v)
			if name == "call_analysis_completed/seed_sample.json" {
				if err == nil || strings.Count(err.Error(), "missing property 'login_id'") != 2 {
					t.Errorf("%s: want exactly the two known missing login_id, got %v", name, err)
				}
			} else if err != nil {
				t.Errorf("%s does not match %s: %v", name, sp, err)
			}
			checked++
		}
	}
	if checked != 6 {
		t.Errorf("validated %d samples, want every shipped sample (6)", checked)
	}
}

// TestSamplesAccepted sends every published call-history sample and checks what is queued:
// one task per detail, the right kind, the call-level fields, the detail as MiiTel sent it,
// the additional payload without the credential key.
func TestSamplesAccepted(t *testing.T) {
	tests := []struct {
		file        string
		route       string
		hdr         http.Header
		wantKind    miitel.Kind
		wantPayload map[string]any
	}{
		{"call_analysis_completed/seed_sample.json", "seed", nil, miitel.KindAnalysis, nil},
		{"call_analysis_completed/sample1.json", "seed", nil, miitel.KindAnalysis, nil},
		{"call_analysis_completed/sample2.json", "bearer", bearer(bearerNew), miitel.KindUnanswered, map[string]any{"ip_restricted": true}},
		{"call_summarization_completed/sample1.json", "bearer", bearer(bearerOld), miitel.KindMinutes, map[string]any{"ip_restricted": true}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			h := newHarness(t)
			body := sample(t, tc.file)
			resp, got := h.post("/webhooks/miitel/"+tc.route, body, tc.hdr)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, body %s", resp.StatusCode, got)
			}
			var in struct {
				Call struct {
					ID         string            `json:"id"`
					TenantCode string            `json:"tenant_code"`
					Details    []json.RawMessage `json:"details"`
				} `json:"call"`
			}
			if err := json.Unmarshal(body, &in); err != nil {
				t.Fatal(err)
			}
			var wantDetail miitel.Detail
			if err := json.Unmarshal(in.Call.Details[0], &wantDetail); err != nil {
				t.Fatal(err)
			}
			evs := h.pending()
			if len(evs) != 1 {
				t.Fatalf("queued %d tasks, want 1", len(evs))
			}
			want := &miitel.Event{
				Route: tc.route, CallID: in.Call.ID, TenantCode: in.Call.TenantCode, Kind: tc.wantKind,
				ReceivedAt: fixedNow, Detail: wantDetail, Payload: tc.wantPayload, DedupeKey: evs[0].DedupeKey,
			}
			// EquateEmpty: the Detail type drops empty lists on encoding (omitempty), so []
			// arrives as nil; the mapping treats both alike.
			if diff := cmp.Diff(want, evs[0], cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("queued event (-want +got):\n%s", diff)
			}
			if len(evs[0].DedupeKey) != dedupeKeyLen {
				t.Errorf("dedupe key %q: want %d hex chars", evs[0].DedupeKey, dedupeKeyLen)
			}
			var ack acceptedResponse
			if err := json.Unmarshal(got, &ack); err != nil {
				t.Fatal(err)
			}
			wantAck := acceptedResponse{Status: "accepted", CallID: in.Call.ID, Queued: 1,
				Details: []detailResult{{ID: wantDetail.ID, Kind: tc.wantKind, Result: resultQueued}}}
			if diff := cmp.Diff(wantAck, ack); diff != "" {
				t.Errorf("response (-want +got):\n%s", diff)
			}
			// The credential is never stored in Redis, in any key.
			keys, err := h.rdb.Keys(t.Context(), "*").Result()
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range keys {
				dump, _ := h.rdb.Dump(t.Context(), k).Result()
				if strings.Contains(dump, seedParamsKey) || strings.Contains(dump, bearerNew) {
					t.Errorf("redis key %s holds a credential", k)
				}
			}
		})
	}
}

// TestMultiDetail: a call with several legs becomes one task per detail, each classified.
func TestMultiDetail(t *testing.T) {
	h := newHarness(t)
	resp, body := h.post("/webhooks/miitel/seed", sample(t, "multi_detail.json"), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	type got struct {
		ID   string
		Kind miitel.Kind
	}
	var gots []got
	keys := map[string]bool{}
	for _, ev := range h.pending() {
		gots = append(gots, got{ev.Detail.ID, ev.Kind})
		keys[ev.DedupeKey] = true
		if ev.CallID != "99e2fdb7-845a-46de-8d94-882add220551" || ev.Payload != nil {
			t.Errorf("event %s: call id %q payload %v", ev.Detail.ID, ev.CallID, ev.Payload)
		}
	}
	want := []got{
		{"99e2fdb7-845a-46de-8d94-882add220551", miitel.KindAnalysis},
		{"99e2fdb7-845a-46de-8d94-882add220552", miitel.KindMissed},
		{"99e2fdb7-845a-46de-8d94-882add220553", miitel.KindIVR},
	}
	if diff := cmp.Diff(want, gots, cmpopts.SortSlices(func(a, b got) bool { return a.ID < b.ID })); diff != "" {
		t.Errorf("queued (-want +got):\n%s", diff)
	}
	if len(keys) != 3 {
		t.Errorf("%d distinct dedupe keys, want 3", len(keys))
	}
}

// TestChallenge answers MiiTel's handshake under every auth mode, with the admin's
// additional headers and payload present, and queues nothing.
func TestChallenge(t *testing.T) {
	basicHdr := "Basic " + base64.StdEncoding.EncodeToString([]byte(basicUser+":"+basicPass))
	tests := []struct {
		name  string
		route string
		body  string
		hdr   http.Header
	}{
		{"payload key", "seed", `{"challenge":"a1b2c3d4e5f6","params_key":"z&aH+&Kz8saC"}`, nil},
		{"payload key with more payload", "seed", `{"params_key":"z&aH+&Kz8saC","challenge":"00ff","team":"sales","n":1}`, nil},
		{"bearer old", "bearer", `{"challenge":"deadbeef"}`, bearer(bearerOld)},
		{"bearer new", "bearer", `{"challenge":"deadbeef01"}`, bearer(bearerNew)},
		{"bearer lower-case scheme", "bearer", `{"challenge":"cafe"}`, http.Header{"Authorization": {"bearer " + bearerNew}}},
		{"basic", "basic", `{"challenge":"0123456789abcdef0123456789abcdef"}`, http.Header{"Authorization": {basicHdr}}},
		{"header", "header", `{"challenge":"beef","extra":"x"}`, http.Header{headerName: {headerValue}, "X-Other": {"y"}}},
		{"open", "open", `{"challenge":"f00d"}`, nil},
		{"empty token", "open", `{"challenge":""}`, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			resp, body := h.post("/webhooks/miitel/"+tc.route, []byte(tc.body), tc.hdr)
			var in struct{ Challenge string }
			_ = json.Unmarshal([]byte(tc.body), &in)
			if resp.StatusCode != http.StatusOK || string(body) != in.Challenge {
				t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, in.Challenge)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/plain" {
				t.Errorf("Content-Type %q, want text/plain", ct)
			}
			if n := h.redisKeys(); n != 0 {
				t.Errorf("challenge wrote %d redis keys", n)
			}
		})
	}
}

// TestChallengeWithRedisDown: the handshake never waits for Redis; a call does, and gets
// 503 with Retry-After. After Redis is back, the same process accepts again.
func TestChallengeWithRedisDown(t *testing.T) {
	h := newHarness(t)
	h.redis.Stop()

	resp, body := h.post("/webhooks/miitel/seed", []byte(`{"challenge":"abc123","params_key":"z&aH+&Kz8saC"}`), nil)
	if resp.StatusCode != http.StatusOK || string(body) != "abc123" {
		t.Fatalf("challenge with redis down: %d %q", resp.StatusCode, body)
	}

	seed := sample(t, "call_analysis_completed/seed_sample.json")
	resp, body = h.post("/webhooks/miitel/seed", seed, nil)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("call with redis down: %d %s", resp.StatusCode, body)
	}
	if ra := resp.Header.Get("Retry-After"); ra != "30" {
		t.Errorf("Retry-After %q, want 30", ra)
	}
	assertErrorBody(t, body, "unavailable", "the queue is unavailable; nothing of this request is acknowledged, send it again")

	if err := h.r.Ready(context.Background()); err == nil || !isRedisDown(err) {
		t.Errorf("Ready with redis down: %v", err)
	}
	if code := get(t, h, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz with redis down: %d", code)
	}

	h.redis.Restart()
	resp, body = h.post("/webhooks/miitel/seed", seed, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after redis restart: %d %s", resp.StatusCode, body)
	}
	if n := len(h.pending()); n != 1 {
		t.Errorf("after recovery %d tasks queued, want 1", n)
	}
	if err := h.r.Ready(context.Background()); err != nil {
		t.Errorf("Ready after recovery: %v", err)
	}
}

func get(t *testing.T, h *harness, path string) int {
	t.Helper()
	resp, err := h.http.Client().Get(h.http.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func assertErrorBody(t *testing.T, body []byte, code, msg string) {
	t.Helper()
	var got errorBody
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("error body %q is not JSON: %v", body, err)
	}
	if diff := cmp.Diff(errorBody{Error: msg, Code: code}, got); diff != "" {
		t.Errorf("error body (-want +got):\n%s", diff)
	}
}

// TestAuth covers every credential kind, rotation, and the 401/403 split.
func TestAuth(t *testing.T) {
	basic := func(u, p string) http.Header {
		return http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(u+":"+p))}}
	}
	seed := string(sample(t, "call_analysis_completed/seed_sample.json"))
	noKey := strings.Replace(seed, `"params_key": "z&aH+&Kz8saC"`, `"other": 1`, 1)
	wrongKey := strings.Replace(seed, `"params_key": "z&aH+&Kz8saC"`, `"params_key": "z&aH+&Kz8saD"`, 1)
	numKey := strings.Replace(seed, `"params_key": "z&aH+&Kz8saC"`, `"params_key": 1234`, 1)
	if noKey == seed || wrongKey == seed {
		t.Fatal("fixture edit did not apply")
	}
	tests := []struct {
		name       string
		route      string
		body       string
		hdr        http.Header
		wantStatus int
		wantCode   string
		wantWWW    []string
	}{
		{"bearer new", "bearer", seed, bearer(bearerNew), 200, "", nil},
		{"bearer old (rotation)", "bearer", seed, bearer(bearerOld), 200, "", nil},
		{"bearer missing", "bearer", seed, nil, 401, "unauthorized", []string{`Bearer realm="miitel-crm-sync"`}},
		{"bearer wrong", "bearer", seed, bearer("nope"), 403, "forbidden", nil},
		{"bearer prefix of valid", "bearer", seed, bearer(bearerNew[:10]), 403, "forbidden", nil},
		{"bearer wrong scheme", "bearer", seed, basic("x", bearerNew), 403, "forbidden", nil},
		{"bearer in custom header does not count", "bearer", seed, http.Header{headerName: {bearerNew}}, 401, "unauthorized", []string{`Bearer realm="miitel-crm-sync"`}},
		{"bearer one wrong one right", "bearer", seed, http.Header{"Authorization": {"Bearer nope", "Bearer " + bearerNew}}, 200, "", nil},
		{"basic", "basic", seed, basic(basicUser, basicPass), 200, "", nil},
		{"basic missing", "basic", seed, nil, 401, "unauthorized", []string{`Basic realm="miitel-crm-sync", charset="UTF-8"`}},
		{"basic wrong password", "basic", seed, basic(basicUser, "s3cret"), 403, "forbidden", nil},
		{"basic wrong user", "basic", seed, basic("admin", basicPass), 403, "forbidden", nil},
		{"basic not base64", "basic", seed, http.Header{"Authorization": {"Basic !!!"}}, 403, "forbidden", nil},
		{"header", "header", seed, http.Header{headerName: {headerValue}}, 200, "", nil},
		{"header name case-insensitive", "header", seed, http.Header{"x-webhook-key": {headerValue}}, 200, "", nil},
		{"header missing", "header", seed, nil, 401, "unauthorized", nil},
		{"header wrong", "header", seed, http.Header{headerName: {headerValue + "x"}}, 403, "forbidden", nil},
		{"payload key", "seed", seed, nil, 200, "", nil},
		{"payload key missing", "seed", noKey, nil, 401, "unauthorized", nil},
		{"payload key wrong", "seed", wrongKey, nil, 403, "forbidden", nil},
		{"payload key not a string", "seed", numKey, nil, 403, "forbidden", nil},
		{"malformed body on payload route hides the parser", "seed", `{"params_key": "z&aH+&Kz8saC"`, nil, 401, "unauthorized", nil},
		{"open route", "open", seed, nil, 200, "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			resp, body := h.post("/webhooks/miitel/"+tc.route, []byte(tc.body), tc.hdr)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantStatus, body)
			}
			if diff := cmp.Diff(tc.wantWWW, resp.Header.Values("WWW-Authenticate")); diff != "" {
				t.Errorf("WWW-Authenticate (-want +got):\n%s", diff)
			}
			wantTasks := 0
			if tc.wantStatus == 200 {
				wantTasks = 1
			} else {
				msg := map[string]string{"unauthorized": "credentials are required", "forbidden": "credentials are not valid"}[tc.wantCode]
				assertErrorBody(t, body, tc.wantCode, msg)
			}
			if n := len(h.pending()); n != wantTasks {
				t.Errorf("%d tasks queued, want %d", n, wantTasks)
			}
		})
	}
}

// TestIPAllowlist: the TCP peer decides unless it is a trusted proxy; X-Forwarded-For is
// walked from the right, skipping trusted hops, so a sender cannot prepend its way in.
func TestIPAllowlist(t *testing.T) {
	const miitelIP = "18.177.83.94"
	tests := []struct {
		name    string
		allow   []string
		proxies []string
		xff     []string
		want    int
	}{
		{"peer allowed", []string{"127.0.0.1/32"}, nil, nil, 200},
		{"single address form", []string{"127.0.0.1"}, nil, nil, 200},
		{"peer not allowed", []string{miitelIP + "/32", "35.73.236.241/32"}, nil, nil, 403},
		{"XFF spoof without trusted proxies", []string{miitelIP + "/32"}, nil, []string{miitelIP}, 403},
		{"XFF from trusted proxy", []string{miitelIP + "/32"}, []string{"127.0.0.1/32"}, []string{miitelIP}, 200},
		{"XFF spoofed left of real client", []string{miitelIP + "/32"}, []string{"127.0.0.1/32"}, []string{miitelIP + ", 203.0.113.9"}, 403},
		{"XFF spoof prepended before MiiTel", []string{miitelIP + "/32"}, []string{"127.0.0.1/32"}, []string{"203.0.113.9, " + miitelIP}, 200},
		{"XFF through two trusted hops", []string{miitelIP + "/32"}, []string{"127.0.0.1/32", "10.0.0.0/8"}, []string{miitelIP + ", 10.1.2.3"}, 200},
		{"XFF split over two header lines", []string{miitelIP + "/32"}, []string{"127.0.0.1/32", "10.0.0.0/8"}, []string{miitelIP, "10.1.2.3"}, 200},
		{"XFF garbage falls back to the proxy", []string{miitelIP + "/32"}, []string{"127.0.0.1/32"}, []string{"not-an-ip"}, 403},
		{"no allowlist", nil, nil, []string{"203.0.113.9"}, 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(o *Options) {
				o.Server.TrustedProxies = tc.proxies
				o.Routes[0].Auth.AllowCIDRs = tc.allow
			})
			hdr := http.Header{}
			for _, v := range tc.xff {
				hdr.Add("X-Forwarded-For", v)
			}
			resp, body := h.post("/webhooks/miitel/seed", sample(t, "call_analysis_completed/seed_sample.json"), hdr)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.want, body)
			}
			if tc.want == 403 {
				assertErrorBody(t, body, "ip_not_allowed", "source address is not allowed")
			}
		})
	}
}

// TestRejections: size, media type, malformed and incomplete bodies, unknown routes and
// methods each get their status and a JSON error naming the problem.
func TestRejections(t *testing.T) {
	seed := sample(t, "call_analysis_completed/seed_sample.json")
	big := edit(t, seed, func(m map[string]any) { m["padding"] = strings.Repeat("x", 20<<10) })
	tests := []struct {
		name        string
		path        string
		body        []byte
		hdr         http.Header
		chunked     bool
		wantStatus  int
		wantCode    string
		wantMessage string
	}{
		{"over the size limit", "/webhooks/miitel/open", big, nil, false, 413, "body_too_large", "request body exceeds 16384 bytes"},
		{"over the size limit, chunked", "/webhooks/miitel/open", big, nil, true, 413, "body_too_large", "request body exceeds 16384 bytes"},
		{"text/plain", "/webhooks/miitel/open", seed, http.Header{"Content-Type": {"text/plain"}}, false, 415, "unsupported_media_type", "content type must be application/json (charset utf-8)"},
		{"latin-1", "/webhooks/miitel/open", seed, http.Header{"Content-Type": {"application/json; charset=iso-8859-1"}}, false, 415, "unsupported_media_type", "content type must be application/json (charset utf-8)"},
		{"no content type", "/webhooks/miitel/open", seed, http.Header{"Content-Type": {""}}, false, 415, "unsupported_media_type", "content type must be application/json (charset utf-8)"},
		{"json without charset is fine", "/webhooks/miitel/open", seed, http.Header{"Content-Type": {"application/json"}}, false, 200, "", ""},
		{"415 after auth only", "/webhooks/miitel/bearer", seed, http.Header{"Content-Type": {"text/plain"}}, false, 401, "unauthorized", "credentials are required"},
		{"truncated JSON", "/webhooks/miitel/open", seed[:100], nil, false, 400, "malformed_json", "malformed JSON at byte 100: unexpected end of JSON input"},
		{"syntax error", "/webhooks/miitel/open", []byte(`{"call": {"id": x}}`), nil, false, 400, "malformed_json", "malformed JSON at byte 17: invalid character 'x' looking for beginning of value"},
		{"array", "/webhooks/miitel/open", []byte(`[1,2]`), nil, false, 400, "malformed_json", "request body must be a JSON object"},
		{"null", "/webhooks/miitel/open", []byte(`null`), nil, false, 400, "malformed_json", "request body must be a JSON object"},
		{"empty", "/webhooks/miitel/open", nil, nil, false, 400, "malformed_json", "request body is empty"},
		{"no call", "/webhooks/miitel/open", []byte(`{"params_key":"x"}`), nil, false, 400, "invalid_payload", "call is required"},
		{"challenge not a string", "/webhooks/miitel/open", []byte(`{"challenge":42}`), nil, false, 400, "invalid_payload", "challenge must be a string"},
		{"missing detail id", "/webhooks/miitel/open", edit(t, seed, func(m map[string]any) { delete(detail0(m), "id") }), nil, false, 400, "invalid_payload", "call.details[0].id is required"},
		{"unknown route", "/webhooks/miitel/nope", seed, nil, false, 404, "route_not_found", `unknown route "nope"`},
		{"other path", "/webhooks/other", seed, nil, false, 404, "not_found", "no such path"},
		{"trailing slash", "/webhooks/miitel/open/", seed, nil, false, 404, "not_found", "no such path"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(o *Options) { o.Server.MaxBodyBytes = 16 << 10 })
			var resp *http.Response
			var body []byte
			if tc.chunked {
				resp, body = h.postChunked(tc.path, tc.body)
			} else {
				resp, body = h.post(tc.path, tc.body, tc.hdr)
			}
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantStatus, body)
			}
			if tc.wantStatus != 200 {
				assertErrorBody(t, body, tc.wantCode, tc.wantMessage)
				if n := h.redisKeys(); n != 0 {
					t.Errorf("a rejected request wrote %d redis keys", n)
				}
			}
		})
	}
	t.Run("GET on a webhook route", func(t *testing.T) {
		h := newHarness(t)
		if code := get(t, h, "/webhooks/miitel/open"); code != http.StatusMethodNotAllowed {
			t.Errorf("status %d, want 405", code)
		}
	})
}

// postChunked sends a body without Content-Length, so only the reader limit can stop it.
func (h *harness) postChunked(path string, body []byte) (*http.Response, []byte) {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.http.URL+path, struct{ *bytes.Reader }{bytes.NewReader(body)})
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	resp, err := h.http.Client().Do(req)
	if err != nil {
		h.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	if req.ContentLength != -1 && req.ContentLength != 0 {
		h.t.Fatalf("request was not chunked (content length %d)", req.ContentLength)
	}
	return resp, buf.Bytes()
}
