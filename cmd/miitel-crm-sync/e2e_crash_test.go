package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// holdProxy stands between the worker and a CRM fake and forwards everything. Armed, it
// holds the answer to the next CRM write it matches: the fake has stored the record and
// answered, and the worker has not heard the answer yet. The fake stays the judge of every
// request; the proxy only decides when the worker learns the outcome.
type holdProxy struct {
	url     string
	match   func(*http.Request) bool
	armed   atomic.Bool
	reached chan struct{} // closed once the held write is stored by the fake
	release chan struct{} // closed by the test: the answer goes on to the worker
	once    sync.Once
}

func newHoldProxy(t *testing.T, target string, match func(*http.Request) bool) *holdProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &holdProxy{url: "http://" + ln.Addr().String(), match: match,
		reached: make(chan struct{}), release: make(chan struct{})}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = log.New(io.Discard, "", 0) // answers to a killed worker go nowhere, as expected
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.URL.Path == "/services/oauth2/token" && resp.StatusCode == http.StatusOK {
			// Salesforce names the API host (instance_url) in the token response: point it
			// at the proxy so the API requests pass here too.
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			_ = resp.Body.Close()
			b = bytes.ReplaceAll(b, []byte(target), []byte(p.url))
			resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
			resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
		}
		if resp.StatusCode < 300 && p.match(resp.Request) && p.armed.CompareAndSwap(true, false) {
			close(p.reached)
			<-p.release
		}
		return nil
	}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: rp}}
	srv.Start()
	t.Cleanup(func() {
		p.let() // a held handler would keep Close waiting
		srv.Close()
	})
	return p
}

// let lets the held answer go.
func (p *holdProxy) let() { p.once.Do(func() { close(p.release) }) }

// workerProcess is `miitel-crm-sync worker` running as its own OS process (the test binary
// re-executed, see TestMain), so it can be killed like a crashed pod.
type workerProcess struct {
	name string
	cmd  *exec.Cmd
	logs *lockedBuffer
	done chan struct{}
	err  error
}

func (s *stack) startWorkerProcess(t *testing.T, name string) *workerProcess {
	t.Helper()
	w := &workerProcess{name: name, logs: &lockedBuffer{}, done: make(chan struct{})}
	w.cmd = exec.Command(os.Args[0], "worker", "--config", s.cfgPath)
	// The parent's MCS_* variables would override the config file; the child gets only ours.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MCS_") {
			w.cmd.Env = append(w.cmd.Env, kv)
		}
	}
	w.cmd.Env = append(w.cmd.Env, e2eExecEnv+"=1")
	for k, v := range s.env {
		w.cmd.Env = append(w.cmd.Env, k+"="+v)
	}
	w.cmd.Stdout, w.cmd.Stderr = w.logs, w.logs
	if err := w.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { w.err = w.cmd.Wait(); close(w.done) }()
	t.Cleanup(func() {
		select {
		case <-w.done:
		default:
			_ = w.cmd.Process.Kill()
			<-w.done
		}
		if t.Failed() {
			t.Logf("%s log (tail):\n%s", name, tail(w.logs.String(), 20000))
		}
	})
	return w
}

// kill SIGKILLs the worker: no shutdown, no deferred function, no ack.
func (w *workerProcess) kill(t *testing.T) {
	t.Helper()
	if err := w.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s: %v", w.name, err)
	}
	<-w.done
}

// stop asks the worker to shut down (SIGTERM, as Kubernetes does) and wants exit code 0.
func (w *workerProcess) stop(t *testing.T) {
	t.Helper()
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("stop %s: %v", w.name, err)
	}
	select {
	case <-w.done:
	case <-time.After(startTimeout):
		t.Fatalf("%s did not stop within %s", w.name, startTimeout)
	}
	if w.err != nil {
		t.Errorf("%s: %v", w.name, w.err)
	}
}

// waitHeld waits until the proxy holds the CRM's answer to the worker's write.
func waitHeld(t *testing.T, p *holdProxy, w *workerProcess) {
	t.Helper()
	select {
	case <-p.reached:
	case <-w.done:
		t.Fatalf("%s exited (%v) before writing to the CRM", w.name, w.err)
	case <-time.After(deliveryTimeout):
		t.Fatalf("%s did not write to the CRM within %s", w.name, deliveryTimeout)
	}
}

// waitBlockedWrite waits until, with Redis writes paused, a client is blocked on one of the
// writes the worker makes once it has the CRM's answer and before it acknowledges the task
// (id map: SET; written lengths: HSET in MULTI; ledger: SET). asynq's own background writes
// are scripts and sorted sets, never these.
func waitBlockedWrite(t *testing.T, rdb *redis.Client) {
	t.Helper()
	eventually(t, deliveryTimeout, "worker blocked on its first write after the CRM's answer", func() (bool, string) {
		list, err := rdb.ClientList(context.Background()).Result()
		if err != nil {
			return false, err.Error()
		}
		for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
			f := map[string]string{}
			for _, kv := range strings.Fields(line) {
				k, v, _ := strings.Cut(kv, "=")
				f[k] = v
			}
			if strings.Contains(f["flags"], "b") && (f["cmd"] == "set" || f["cmd"] == "hset" || f["cmd"] == "exec") {
				return true, ""
			}
		}
		return false, list
	})
}

// skipAhead makes Redis look as it will once the killed worker's claims have run out, so the
// test need not wait for them. Each is a timeout the real system waits out:
//   - asynq leases a running task for 30s (the worker extends the lease while alive); its
//     recoverer requeues a task only when the lease expired 30s ago or more, and looks at
//     server start and then every minute. The lease score is moved two minutes back, so the
//     next worker's start-up recovery finds the task.
//   - the per-call lock expires after queue.task_timeout; it must have an expiry (else a
//     crash would block the call forever), then it is dropped.
//   - the HubSpot id map searches for a call whose create was interrupted only once the
//     search index has caught up (30s); a pending marker is dated five minutes back.
func skipAhead(t *testing.T, s *stack, taskID, route, detail string) {
	t.Helper()
	ctx := context.Background()
	lease := "asynq:{" + queueName + "}:lease"
	if _, err := s.rdb.ZScore(ctx, lease, taskID).Result(); err != nil {
		t.Fatalf("task %s has no lease: %v", taskID, err)
	}
	past := float64(time.Now().Add(-2 * time.Minute).Unix())
	if err := s.rdb.ZAddXX(ctx, lease, redis.Z{Score: past, Member: taskID}).Err(); err != nil {
		t.Fatal(err)
	}

	lock := "mcs:lock:" + route + ":" + detail
	ttl, err := s.rdb.PTTL(ctx, lock).Result()
	if err != nil || ttl <= 0 {
		t.Fatalf("the killed worker's lock on the call: ttl %v, %v; want a lock that expires", ttl, err)
	}
	if err := s.rdb.Del(ctx, lock).Err(); err != nil {
		t.Fatal(err)
	}

	keys, err := s.rdb.Keys(ctx, "mcs:crm:*:idmap:*"+detail).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		var e map[string]any
		b, err := s.rdb.Get(ctx, k).Bytes()
		if err != nil || json.Unmarshal(b, &e) != nil {
			t.Fatalf("id map entry %s: %v %s", k, err, b)
		}
		if _, pending := e["p"]; !pending {
			continue
		}
		e["p"] = time.Now().Add(-5 * time.Minute).UTC().Format(time.RFC3339Nano)
		b, _ = json.Marshal(e)
		if err := s.rdb.SetArgs(ctx, k, b, redis.SetArgs{KeepTTL: true}).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// A worker killed between the CRM write and the task's acknowledgement loses nothing and
// duplicates nothing: a fresh worker recovers the task and the CRM ends with exactly one
// activity, complete. Killed while the CRM's answer is on its way (the record exists, the
// worker does not know), or after it heard the answer but before it recorded anything
// (Redis writes paused); on a create, and on the update by the later minutes event.
func TestE2EWorkerKilledMidTaskLosesAndDuplicatesNothing(t *testing.T) {
	t.Parallel()
	isHubSpotCreate := func(r *http.Request) bool {
		return r.Method == http.MethodPost && r.URL.Path == "/crm/v3/objects/calls/batch/create"
	}
	isHubSpotUpdate := func(r *http.Request) bool {
		return r.Method == http.MethodPost && r.URL.Path == "/crm/v3/objects/calls/batch/update"
	}
	isSalesforceUpsert := func(r *http.Request) bool {
		return r.Method == http.MethodPatch && strings.Contains(r.URL.Path, "/sobjects/Task/"+externalIDField)
	}
	for _, c := range []struct {
		name  string
		route string
		write func(*http.Request) bool
		// update: the analysis is delivered first; the worker dies on the minutes' update.
		update bool
		// heard: killed after the worker read the answer, not while it was held.
		heard bool
	}{
		{"hubspot/create/answer_held", hubspotRoute, isHubSpotCreate, false, false},
		{"hubspot/create/answer_heard", hubspotRoute, isHubSpotCreate, false, true},
		{"hubspot/update/answer_heard", hubspotRoute, isHubSpotUpdate, true, true},
		{"salesforce/create/answer_held", salesforceRoute, isSalesforceUpsert, false, false},
		{"salesforce/create/answer_heard", salesforceRoute, isSalesforceUpsert, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var proxy *holdProxy
			via := func(fake string) string { proxy = newHoldProxy(t, fake, c.write); return proxy.url }
			o := stackOptions{hubspotVia: via}
			if c.route == salesforceRoute {
				o = stackOptions{salesforceVia: via}
			}
			s := newStack(t, o)
			s.start(t, "receiver")
			ctx := context.Background()
			in := s.inspector(t)

			analysis := readSample(t, "call_analysis_completed/sample1.json")
			want := sampleCalls[0]
			w1 := s.startWorkerProcess(t, "worker-1")
			body := analysis
			if c.update {
				s.post(t, c.route, analysis)
				s.waitDelivered(t)
				body = minutesFor(t, analysis)
				want.body = append(append([]string{}, want.body...), "参加者が3分間待つことに合意したこと")
			}
			proxy.armed.Store(true)
			s.post(t, c.route, body)
			waitHeld(t, proxy, w1)
			if c.heard {
				// Pause Redis writes (reads go on), let the answer reach the worker and wait
				// until the worker is stuck on its first write after it.
				if err := s.rdb.Do(ctx, "CLIENT", "PAUSE", "60000", "WRITE").Err(); err != nil {
					t.Fatal(err)
				}
				proxy.let()
				waitBlockedWrite(t, s.rdb)
			}
			w1.kill(t)
			if c.heard {
				if err := s.rdb.Do(ctx, "CLIENT", "UNPAUSE").Err(); err != nil {
					t.Fatal(err)
				}
			}
			proxy.let()

			// The CRM has the write, the queue does not know: the task is still running.
			if n := s.crmRecords(t, c.route); n != 1 {
				t.Fatalf("after the kill the CRM holds %d records, want the 1 written", n)
			}
			active, err := in.ListActiveTasks(queueName)
			if err != nil || len(active) != 1 {
				t.Fatalf("after the kill: %d active tasks (%v), want the killed worker's 1", len(active), err)
			}
			skipAhead(t, s, active[0].ID, c.route, want.detail)

			w2 := s.startWorkerProcess(t, "worker-2")
			s.waitDelivered(t)
			if c.route == hubspotRoute {
				checkHubSpot(t, s, []wantCall{want})
				if n := s.hs.Count("POST /crm/v3/objects/calls/batch/create"); n != 1 {
					t.Errorf("HubSpot got %d creates, want 1", n)
				}
				if n := s.hs.Count("POST /crm/v3/objects/calls/search"); !c.update && n != 1 {
					t.Errorf("HubSpot got %d call searches, want 1: the recovered task finds the call the killed one created", n)
				}
			} else {
				checkSalesforce(t, s, []wantCall{want})
				created := 0
				for _, u := range s.sf.Upserts() {
					if u.Created {
						created++
					}
				}
				if created != 1 {
					t.Errorf("Salesforce created %d Tasks, want 1", created)
				}
			}
			w2.stop(t)
		})
	}
}

// crmRecords counts the activities the route's CRM holds.
func (s *stack) crmRecords(t *testing.T, route string) int {
	t.Helper()
	if route == hubspotRoute {
		return len(s.hs.Calls())
	}
	return len(s.sf.Tasks())
}
