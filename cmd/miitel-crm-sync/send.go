package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/time/rate"
)

// MiiTel's fixed request headers; an admin cannot change them, so neither can --header.
const (
	miitelUserAgent   = "MiiTel-Webhook/v1"
	miitelContentType = "application/json; charset=utf-8"
)

const sendDescription = `Sends MiiTel payload files to a receiver the way MiiTel's Outgoing Webhook does: POST over
HTTP/1.1 with user-agent MiiTel-Webhook/v1 and content-type application/json; charset=utf-8,
plus the additional headers (--header) and additional payload keys (--payload) an admin
configures in MiiTel. For smoke-testing an installation and for load tests.

--challenge sends MiiTel's setup handshake {"challenge": "<random hex>"} instead of files and
checks that the answer is 200 text/plain with exactly the token.

With no repetition flag every FILE is sent once and each answer is printed. --count N sends N
requests and --duration D keeps sending for D, cycling through the FILEs, at most --rate per
second over --concurrency connections; then it prints how many were accepted (2xx), rejected
(4xx) and failed (5xx, network error, wrong challenge echo) and the latency percentiles.
Exit status 1 when any request was rejected or failed.

Examples:
  miitel-crm-sync send --url http://localhost:8080/webhooks/miitel/default \
    examples/payloads/call_analysis_completed/seed_sample.json
  miitel-crm-sync send --url https://sync.example.com/webhooks/miitel/sales \
    --header 'Authorization: Bearer TOKEN' --challenge
  miitel-crm-sync send --url http://localhost:8080/webhooks/miitel/default --unique \
    --rate 50/s --concurrency 8 --duration 1m examples/payloads/call_analysis_completed/*.json`

// sendOptions are the parsed flags of one send run.
type sendOptions struct {
	url         string
	headers     http.Header
	payload     map[string]string
	challenge   bool
	unique      bool
	rate        rate.Limit // 0: unlimited
	concurrency int
	count       int
	duration    time.Duration
	timeout     time.Duration
	insecureTLS bool
	files       []string
	bodies      [][]byte // file contents, additional payload merged in
	repeat      bool     // --count or --duration given: summary only
}

func newSendCmd(env *environment, runF func(context.Context, *sendOptions) error) *cobra.Command {
	o := &sendOptions{headers: http.Header{}, payload: map[string]string{}}
	var rateFlag string
	cmd := &cobra.Command{
		Use:   "send --url URL [flags] FILE... | send --url URL --challenge",
		Short: "Send MiiTel payload files to a receiver, like MiiTel does (smoke and load tests)",
		Long:  sendDescription,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.complete(rateFlag, args); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), o)
			}
			s := &sender{opts: o, out: env.stdout, client: newMiiTelClient(o)}
			return s.run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.url, "url", "", "receiver URL, e.g. http://localhost:8080/webhooks/miitel/default (required)")
	f.Var(headerFlag{o.headers}, "header", "additional header `K:V`, repeatable (e.g. 'Authorization: Bearer TOKEN')")
	f.Var(payloadFlag{o.payload}, "payload", "additional payload key `K=V` added to every body, repeatable (e.g. params_key=SECRET)")
	f.BoolVar(&o.challenge, "challenge", false, "send the challenge handshake and check the echo (no FILEs)")
	f.BoolVar(&o.unique, "unique", false, "add a per-request payload key (mcs_send_seq) so repeated files are queued, not deduplicated (load tests)")
	f.StringVar(&rateFlag, "rate", "", "at most this many requests per second: N, N/s, N/m or N/h (default: unlimited)")
	f.IntVar(&o.concurrency, "concurrency", 1, "requests in flight at once")
	f.IntVar(&o.count, "count", 0, "send this many requests, cycling through the FILEs")
	f.DurationVar(&o.duration, "duration", 0, "keep sending for this long, cycling through the FILEs")
	f.DurationVar(&o.timeout, "timeout", 30*time.Second, "timeout of one request")
	f.BoolVar(&o.insecureTLS, "insecure-skip-verify", false, "accept any TLS certificate (self-signed test installations)")
	cmd.ValidArgsFunction = func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"json"}, cobra.ShellCompDirectiveFilterFileExt
	}
	return cmd
}

// headerFlag is --header K:V: MiiTel's "additional headers".
type headerFlag struct{ h http.Header }

func (f headerFlag) String() string { return "" }
func (f headerFlag) Type() string   { return "K:V" }
func (f headerFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, ":")
	k = strings.TrimSpace(k)
	if !ok || k == "" {
		return fmt.Errorf("want K:V, got %q", v)
	}
	switch http.CanonicalHeaderKey(k) {
	case "User-Agent", "Content-Type":
		return fmt.Errorf("MiiTel does not let an admin change %s", k)
	}
	f.h.Add(k, strings.TrimSpace(val))
	return nil
}

// payloadFlag is --payload K=V: MiiTel's "additional payload".
type payloadFlag struct{ m map[string]string }

func (f payloadFlag) String() string { return "" }
func (f payloadFlag) Type() string   { return "K=V" }
func (f payloadFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("want K=V, got %q", v)
	}
	if k == "call" || k == "challenge" {
		return fmt.Errorf("%q is not an additional payload key", k)
	}
	f.m[k] = val
	return nil
}

// complete checks the flags together and reads the files.
func (o *sendOptions) complete(rateFlag string, files []string) error {
	var err error
	o.files = files

	u, perr := url.Parse(o.url)
	switch {
	case o.url == "":
		return usagef("--url is required")
	case perr != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return usagef("--url %q is not an http(s) URL", o.url)
	case o.challenge && len(o.files) > 0:
		return usagef("--challenge sends its own body: give no FILE")
	case !o.challenge && len(o.files) == 0:
		return usagef("give at least one FILE to send, or --challenge")
	case o.count < 0 || o.duration < 0:
		return usagef("--count and --duration must not be negative")
	case o.count > 0 && o.duration > 0:
		return usagef("give --count or --duration, not both")
	case o.concurrency < 1:
		return usagef("--concurrency must be at least 1")
	case o.timeout <= 0:
		return usagef("--timeout must be positive")
	}
	if o.rate, err = parseRate(rateFlag); err != nil {
		return usagef("--rate: %v", err)
	}
	o.repeat = o.count > 0 || o.duration > 0
	if !o.repeat {
		o.count = max(1, len(o.files))
	}
	for _, f := range o.files {
		b, err := os.ReadFile(f)
		if err != nil {
			return usagef("%v", err)
		}
		if len(o.payload) > 0 || o.unique {
			// Both add top-level keys: --payload here, once, --unique per request (withKey).
			if b, err = mergePayload(b, o.payload); err != nil {
				return usagef("%s: %v", f, err)
			}
		}
		o.bodies = append(o.bodies, b)
	}
	return nil
}

// parseRate reads "N", "N/s", "N/m" or "N/h"; "" and 0 mean unlimited.
func parseRate(s string) (rate.Limit, error) {
	if s == "" {
		return 0, nil
	}
	num, unit, _ := strings.Cut(s, "/")
	n, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not N, N/s, N/m or N/h", s)
	}
	per := map[string]float64{"": 1, "s": 1, "m": 60, "h": 3600}
	d, ok := per[strings.TrimSpace(unit)]
	if !ok {
		return 0, fmt.Errorf("%q: unit must be s, m or h", s)
	}
	return rate.Limit(n / d), nil
}

// mergePayload adds additional payload keys at the top level of a JSON object body, as
// MiiTel merges an admin's additional payload into every request. The result is compact
// JSON ending in the object's closing brace, which withKey relies on.
func mergePayload(body []byte, payload map[string]string) ([]byte, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		return nil, errors.New("--payload and --unique need a JSON object body")
	}
	for k, v := range payload {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		top[k] = b
	}
	return json.Marshal(top)
}

// withKey returns obj, a compact JSON object as mergePayload leaves it, with one more
// string member. It splices instead of decoding: --unique adds a key to every request of a
// load test, and decoding and re-encoding a body with a long transcript each time would
// make the sender, not the receiver, the bottleneck. key and value need no JSON escaping.
func withKey(obj []byte, key, value string) []byte {
	b := make([]byte, 0, len(obj)+len(key)+len(value)+6)
	b = append(b, obj[:len(obj)-1]...) // without the closing brace
	if len(obj) > 2 {                  // not {}
		b = append(b, ',')
	}
	b = append(append(append(append(append(b, '"'), key...), `":"`...), value...), `"}`...)
	return b
}

// newMiiTelClient speaks HTTP/1.1 only, like MiiTel, with one idle connection per worker.
func newMiiTelClient(o *sendOptions) *http.Client {
	tr := &http.Transport{
		ForceAttemptHTTP2:   false,
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{}, // no h2
		MaxIdleConnsPerHost: o.concurrency,
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: o.insecureTLS}, //nolint:gosec // opt-in flag for test installations
	}
	return &http.Client{Transport: tr, Timeout: o.timeout}
}

// outcome classes of one request.
const (
	classAccepted = "accepted"
	classRejected = "rejected"
	classFailed   = "failed"
)

type sendResult struct {
	name    string // file name or "challenge"
	class   string
	status  int
	latency time.Duration
	detail  string // response body excerpt or error
}

type sender struct {
	opts   *sendOptions
	out    io.Writer
	client *http.Client
	runID  string

	mu      sync.Mutex
	results []sendResult
}

func (s *sender) run(ctx context.Context) error {
	o := s.opts
	s.runID = randomHex(4)
	var limiter *rate.Limiter
	if o.rate > 0 {
		limiter = rate.NewLimiter(o.rate, 1)
	}
	sendCtx := ctx
	if o.duration > 0 {
		var cancel context.CancelFunc
		sendCtx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}

	jobs := make(chan int)
	var wg sync.WaitGroup
	for range o.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				// Requests use the parent ctx: the --duration deadline stops new requests,
				// it does not cut the ones in flight.
				s.record(s.sendOne(ctx, i))
			}
		}()
	}
	start := time.Now()
	for i := 0; o.count == 0 || i < o.count; i++ {
		if limiter != nil {
			if err := limiter.Wait(sendCtx); err != nil {
				break // duration over or interrupted
			}
		}
		select {
		case jobs <- i:
			continue
		case <-sendCtx.Done():
		}
		break
	}
	close(jobs)
	wg.Wait()
	return s.summarize(time.Since(start), ctx.Err())
}

func (s *sender) record(r sendResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.results = append(s.results, r)
	if !s.opts.repeat {
		fmt.Fprintf(s.out, "%s -> %s (%s) %s\n", r.name, statusText(r), r.latency.Round(10*time.Microsecond), r.detail)
	}
}

func statusText(r sendResult) string {
	if r.status == 0 {
		return "no response"
	}
	return fmt.Sprintf("%d %s", r.status, http.StatusText(r.status))
}

// sendOne sends request number i: the next file in turn, or a fresh challenge.
func (s *sender) sendOne(ctx context.Context, i int) sendResult {
	o := s.opts
	var body []byte
	var name, token string
	if o.challenge {
		token = randomHex(16)
		top := map[string]string{"challenge": token}
		for k, v := range o.payload {
			top[k] = v
		}
		body, _ = json.Marshal(top)
		name = "challenge " + token
	} else {
		body = o.bodies[i%len(o.bodies)]
		name = filepath.Base(o.files[i%len(o.files)])
		if o.unique {
			body = withKey(body, "mcs_send_seq", s.runID+"-"+strconv.Itoa(i))
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.url, bytes.NewReader(body))
	if err != nil {
		return sendResult{name: name, class: classFailed, detail: err.Error()}
	}
	for k, vs := range o.headers {
		req.Header[k] = vs
	}
	req.Header.Set("User-Agent", miitelUserAgent)
	req.Header.Set("Content-Type", miitelContentType)

	start := time.Now()
	resp, err := s.client.Do(req)
	if err != nil {
		return sendResult{name: name, class: classFailed, latency: time.Since(start), detail: err.Error()}
	}
	respBody, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	r := sendResult{name: name, status: resp.StatusCode, latency: time.Since(start), detail: excerpt(respBody)}
	switch {
	case err != nil:
		r.class, r.detail = classFailed, "reading response: "+err.Error()
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		r.class = classAccepted
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		r.class = classRejected
	default:
		r.class = classFailed
	}
	if o.challenge && r.class == classAccepted {
		mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		switch {
		case resp.StatusCode != http.StatusOK:
			r.class, r.detail = classFailed, "challenge answered with a status other than 200"
		case mt != "text/plain":
			r.class, r.detail = classFailed, fmt.Sprintf("challenge answered with content type %q, want text/plain", resp.Header.Get("Content-Type"))
		case string(respBody) != token:
			r.class, r.detail = classFailed, fmt.Sprintf("challenge echo wrong: got %q", excerpt(respBody))
		default:
			r.detail = "echoed the token"
		}
	}
	return r
}

func excerpt(b []byte) string {
	const n = 300
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = strings.ToValidUTF8(s[:n], "") + "..." // drop a rune cut in half
	}
	return s
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b)
}

// summarize prints the counts and latency percentiles; any rejected or failed request
// makes the command fail.
func (s *sender) summarize(elapsed time.Duration, interrupted error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	counts := map[string]int{}
	lat := make([]time.Duration, 0, len(s.results))
	for _, r := range s.results {
		counts[r.class]++
		if r.status != 0 {
			lat = append(lat, r.latency)
		}
	}
	n := len(s.results)
	perSec := 0.0
	if elapsed > 0 {
		perSec = float64(n) / elapsed.Seconds()
	}
	fmt.Fprintf(s.out, "sent %d requests in %s (%.1f/s): accepted %d, rejected %d, failed %d\n",
		n, elapsed.Round(time.Millisecond), perSec, counts[classAccepted], counts[classRejected], counts[classFailed])
	if len(lat) > 0 {
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		r := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
		fmt.Fprintf(s.out, "latency p50 %s p90 %s p99 %s max %s\n",
			r(percentile(lat, 50)), r(percentile(lat, 90)), r(percentile(lat, 99)), r(lat[len(lat)-1]))
	}
	if s.opts.repeat {
		// A few distinct problems, so a load test that fails says why.
		seen := map[string]bool{}
		for _, r := range s.results {
			if r.class == classAccepted {
				continue
			}
			line := fmt.Sprintf("  %s: %s %s", r.class, statusText(r), r.detail)
			if !seen[line] && len(seen) < 5 {
				seen[line] = true
				fmt.Fprintln(s.out, line)
			}
		}
	}
	if bad := counts[classRejected] + counts[classFailed]; bad > 0 {
		return fmt.Errorf("%d of %d requests rejected or failed", bad, n)
	}
	if interrupted != nil && n == 0 {
		return interrupted
	}
	return nil
}

// percentile is the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, p int) time.Duration {
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 * n)
	return sorted[max(0, rank-1)]
}
