package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce/salesforcefake"
)

// batchCalls makes n MiiTel requests of one call detail each, the analysis sample with a
// new detail (and call) id per request, and returns them with their detail ids.
func batchCalls(t *testing.T, n int) ([][]byte, []string) {
	t.Helper()
	sample := readSample(t, samplePayloads[0])
	orig := sampleCalls[0].detail
	if !bytes.Contains(sample, []byte(orig)) {
		t.Fatalf("%s does not hold detail %s", samplePayloads[0], orig)
	}
	bodies, ids := make([][]byte, n), make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("%s%012d", orig[:len(orig)-12], i)
		bodies[i] = bytes.ReplaceAll(sample, []byte(orig), []byte(ids[i]))
	}
	return bodies, ids
}

// 400 calls through receiver -> Redis -> worker -> Salesforce, in collections of up to 200,
// with one call an org's validation rule refuses and one whose row is locked once. The
// refused call goes to the dead letter alone, without a retry; the locked one is retried
// alone; no other call is sent twice or lost. 400 records plus the one retry go in three
// requests: the linger (10s) is far longer than 200 tasks take to join a batch, so a batch
// goes when it is full, and only the retried record can be left over for a third.
func TestE2ESalesforceCollectionsBadRecordAlone(t *testing.T) {
	t.Parallel()
	const n = 400
	s := newStack(t, stackOptions{workerConcurrency: 200, salesforceBatch: "{max_size: 200, linger: 10s}"})
	bodies, ids := batchCalls(t, n)
	refused, locked := ids[37], ids[311]
	s.sf.FailRecord(refused, 1, salesforcefake.Fault{Code: "FIELD_CUSTOM_VALIDATION_EXCEPTION", Message: "Calls to this number need a reason (validation rule)"})
	s.sf.FailRecord(locked, 1, salesforcefake.Fault{Code: "UNABLE_TO_LOCK_ROW", Message: "unable to obtain exclusive access to this record"})
	s.start(t, "serve")
	for _, b := range bodies {
		if a := s.post(t, salesforceRoute, b); a.Queued != 1 {
			t.Fatalf("queued %d, want 1", a.Queued)
		}
	}

	in := s.inspector(t)
	eventually(t, deliveryTimeout, "every call delivered or dead-lettered", func() (bool, string) {
		qi, err := in.GetQueueInfo(queueName)
		if err != nil {
			return false, err.Error()
		}
		return qi.Pending+qi.Active+qi.Scheduled+qi.Retry == 0 && qi.Archived == 1,
			fmt.Sprintf("pending %d active %d scheduled %d retry %d archived %d", qi.Pending, qi.Active, qi.Scheduled, qi.Retry, qi.Archived)
	})

	// The dead letter holds the refused call alone, on its first attempt, with its reason.
	archived, err := in.ListArchivedTasks(queueName)
	if err != nil || len(archived) != 1 {
		t.Fatalf("archived: %d tasks, %v; want 1", len(archived), err)
	}
	if a := archived[0]; a.Retried != 0 || !strings.Contains(a.LastErr, "FIELD_CUSTOM_VALIDATION_EXCEPTION") || !strings.Contains(string(a.Payload), refused) {
		t.Errorf("dead letter: retried %d, %q; want the refused call, not retried, with Salesforce's code", a.Retried, a.LastErr)
	}
	// Exactly one retry (the locked call) and one dead letter; every other attempt delivered.
	for outcome, want := range map[string]float64{"delivered": n - 1, "retry": 1, "dead": 1, "throttled": 0} {
		if got := s.metric(t, "mcs_worker_tasks_total", map[string]string{"outcome": outcome}); got != want {
			t.Errorf("mcs_worker_tasks_total{outcome=%q} = %v, want %v", outcome, got, want)
		}
	}

	// Every call but the refused one is in Salesforce exactly once.
	tasks := s.salesforceTasks(t)
	if len(tasks) != n-1 {
		t.Errorf("Salesforce holds %d Tasks, want %d", len(tasks), n-1)
	}
	for _, id := range ids {
		if _, ok := tasks[id]; ok == (id == refused) {
			t.Errorf("detail %s: in Salesforce %v", id, ok)
		}
	}
	// One collection request per up to 200 records: each good record sent once, the locked
	// one twice (its retry), the refused one once.
	colls := s.sf.Collections()
	var sizes []int
	sent := map[string]int{}
	for _, c := range colls {
		sizes = append(sizes, len(c.Values))
		for _, v := range c.Values {
			sent[v]++
		}
	}
	slices.Sort(sizes)
	if !slices.Equal(sizes, []int{1, 200, 200}) {
		t.Errorf("records per collection request %v, want [1 200 200]", sizes)
	}
	for _, id := range ids {
		want := 1
		if id == locked {
			want = 2
		}
		if sent[id] != want {
			t.Errorf("detail %s sent %d times, want %d", id, sent[id], want)
		}
	}
	if n := s.sf.Count(salesforcefake.OpGetByExternal) + s.sf.Count(salesforcefake.OpUpsert); n != 0 {
		t.Errorf("%d GETs or one-record upserts, want none", n)
	}
}

// stackConnector builds the Salesforce connector from the stack's config and Redis, as
// `check` does. Until the CLI has its check command, the test calls the connector's.
func stackConnector(t *testing.T, s *stack) *salesforce.Connector {
	t.Helper()
	cfg, err := config.LoadFor(s.cfgPath, s.getenv, config.Role{Worker: true})
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(cfg.Connections, func(c config.Connection) bool { return c.Name == "sf" })
	c, err := salesforce.New(crm.Options{Connection: cfg.Connections[i], Redis: s.rdb, Context: t.Context(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// An org set up with another field name than the connection's (here: none at all). The
// check says so with the fix; the calls wait in the retry set with their retries untouched
// and the connection reads broken, instead of each going to the dead letter; once the admin
// creates the field, every call lands exactly once and the gauge is back to 0.
func TestE2ESalesforceMissingRecordKeyParksCallsUntilCreated(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{maxRetry: 3, salesforceFake: func(o *salesforcefake.Options) {
		o.ExternalIDFields, o.NoExternalIDFields = nil, true
	}})

	var recordKey *crm.CheckResult
	for _, r := range stackConnector(t, s).Check(t.Context(), crm.CheckOptions{}) {
		if r.Name == crm.CheckRecordKey {
			recordKey = &r
		}
	}
	if recordKey == nil || recordKey.Status != crm.CheckFail || !strings.Contains(recordKey.Fix, externalIDField) ||
		!strings.Contains(recordKey.Fix, "External ID") || !strings.Contains(recordKey.Fix, salesforce.DocRecordKey) {
		t.Fatalf("record_key check = %+v, want FAIL with the field to create and %s", recordKey, salesforce.DocRecordKey)
	}

	s.start(t, "serve")
	queued := 0
	for _, name := range samplePayloads {
		queued += s.post(t, salesforceRoute, readSample(t, name)).Queued
	}
	s.waitParkedBroken(t, "sf", queued, salesforce.DocRecordKey)
	in := s.inspector(t)
	if n := len(s.sf.Tasks()); n != 0 {
		t.Fatalf("%d Tasks written without the field", n)
	}

	// The admin creates the field. The parked calls would be attempted again when their
	// wait is over (salesforce.RecordKeyWait); run them now, as an operator may.
	s.sf.AddExternalIDField(externalIDField, true)
	if n, err := in.RunAllRetryTasks(queueName); err != nil || n != queued {
		t.Fatalf("run parked tasks: %d, %v; want %d", n, err, queued)
	}
	s.waitDelivered(t)
	checkSalesforce(t, s, sampleCalls)
	if v := s.metric(t, "mcs_crm_connection_broken", map[string]string{"connection": "sf"}); v != 0 {
		t.Errorf("after the field was created, mcs_crm_connection_broken = %v, want 0", v)
	}
}

// One collection request of 20 records carries a record the org's validation rule refuses
// and one whose row is locked: the refused one goes to the dead letter alone and the locked
// one is retried alone, each with its own error in the call status and the dead letter; the
// other 18 are done from that one request, and the retry goes out as a collection of one.
func TestE2ESalesforceCollectionPartialFailureItemByItem(t *testing.T) {
	t.Parallel()
	const n = 20
	// A retry waits 5s (retry_base = retry_max), long enough to read the status in between.
	s := newStack(t, stackOptions{workerConcurrency: n, salesforceBatch: "{max_size: 20, linger: 1s}", retryMax: 5 * time.Second})
	bodies, ids := batchCalls(t, n)
	refused, locked := ids[4], ids[13]
	s.sf.FailRecord(refused, 1, salesforcefake.Fault{Code: "FIELD_CUSTOM_VALIDATION_EXCEPTION", Message: "Calls to this number need a reason (validation rule)"})
	s.sf.FailRecord(locked, 1, salesforcefake.Fault{Code: "UNABLE_TO_LOCK_ROW", Message: "unable to obtain exclusive access to this record"})
	s.start(t, "receiver")
	for _, b := range bodies {
		s.post(t, salesforceRoute, b)
	}
	// Every call is queued before the worker starts, so its 20 tasks fill one collection.
	w := s.startWorkerProcess(t, "worker")
	in := s.inspector(t)
	eventually(t, deliveryTimeout, "one call dead, one waiting for its retry, the others done", func() (bool, string) {
		qi, err := in.GetQueueInfo(queueName)
		if err != nil {
			return false, err.Error()
		}
		return qi.Pending+qi.Active+qi.Scheduled == 0 && qi.Retry == 1 && qi.Archived == 1,
			fmt.Sprintf("pending %d active %d scheduled %d retry %d archived %d", qi.Pending, qi.Active, qi.Scheduled, qi.Retry, qi.Archived)
	})
	colls := s.sf.Collections()
	if len(colls) != 1 || len(colls[0].Values) != n || !slices.Contains(colls[0].Values, refused) || !slices.Contains(colls[0].Values, locked) {
		t.Fatalf("collection requests before the retry: %+v; want one carrying all %d records", colls, n)
	}
	if got := len(s.sf.Tasks()); got != n-2 {
		t.Errorf("after the first collection Salesforce holds %d Tasks, want %d", got, n-2)
	}

	status := func(id string) string {
		t.Helper()
		code, out, stderr := runCLI(t, s.getenv, "status", "--config", s.cfgPath, id)
		if code != 0 {
			t.Fatalf("status %s: exit %d: %s", id, code, stderr)
		}
		return out
	}
	if out := status(locked); !strings.Contains(out, "state:     retry") || !strings.Contains(out, "error:     transient UNABLE_TO_LOCK_ROW") ||
		strings.Contains(out, "FIELD_CUSTOM_VALIDATION_EXCEPTION") {
		t.Errorf("status of the locked call (want retry with its own transient UNABLE_TO_LOCK_ROW):\n%s", out)
	}
	if out := status(refused); !strings.Contains(out, "state:     dead") || !strings.Contains(out, "error:     permanent FIELD_CUSTOM_VALIDATION_EXCEPTION") ||
		strings.Contains(out, "UNABLE_TO_LOCK_ROW") {
		t.Errorf("status of the refused call (want dead with its own permanent FIELD_CUSTOM_VALIDATION_EXCEPTION):\n%s", out)
	}
	for _, id := range []string{ids[0], ids[19]} {
		if out := status(id); !strings.Contains(out, "state:     done") || strings.Contains(out, "error:") {
			t.Errorf("status of a good call of the same collection (want done, no error):\n%s", out)
		}
	}
	code, out, stderr := runCLI(t, s.getenv, "replay", "list", "--config", s.cfgPath)
	if code != 0 || !strings.Contains(out, "1 dead-lettered call(s)") {
		t.Fatalf("replay list: exit %d\n%s%s", code, out, stderr)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, locked) {
			t.Errorf("the locked call is in the dead letter: %s", line)
		}
		if strings.Contains(line, refused) && !strings.Contains(line, "FIELD_CUSTOM_VALIDATION_EXCEPTION") {
			t.Errorf("the dead letter shows the refused call without its own error: %s", line)
		}
	}
	if !strings.Contains(out, refused) {
		t.Errorf("the refused call is not in the dead letter:\n%s", out)
	}

	// The retry: the locked record alone, once; then every call but the refused one is in
	// Salesforce exactly once.
	eventually(t, deliveryTimeout, "the locked call delivered", func() (bool, string) {
		qi, err := in.GetQueueInfo(queueName)
		if err != nil {
			return false, err.Error()
		}
		return qi.Pending+qi.Active+qi.Scheduled+qi.Retry == 0, fmt.Sprintf("pending %d active %d scheduled %d retry %d", qi.Pending, qi.Active, qi.Scheduled, qi.Retry)
	})
	colls = s.sf.Collections()
	if len(colls) != 2 || !slices.Equal(colls[1].Values, []string{locked}) {
		t.Errorf("collection requests %+v; want the first, then the locked record alone", colls)
	}
	tasks := s.salesforceTasks(t)
	for _, id := range ids {
		if _, ok := tasks[id]; ok == (id == refused) {
			t.Errorf("detail %s: in Salesforce %v", id, ok)
		}
	}
	if out := status(locked); !strings.Contains(out, "state:     done") {
		t.Errorf("status of the locked call after its retry (want done):\n%s", out)
	}
	w.stop(t)
}

// waitParkedBroken waits until all queued calls wait in retry on connection, marked broken
// for a missing record key, and checks none was dead-lettered or used up its retries, and
// each is parked for minutes with the fix (a link to doc) as its last error.
func (s *stack) waitParkedBroken(t *testing.T, connection string, queued int, doc string) {
	t.Helper()
	in := s.inspector(t)
	eventually(t, deliveryTimeout, "every call parked and the connection broken", func() (bool, string) {
		qi, err := in.GetQueueInfo(queueName)
		if err != nil {
			return false, err.Error()
		}
		if qi.Archived > 0 {
			t.Fatalf("%d call(s) dead-lettered for a missing record key:\n%s", qi.Archived, deadLetters(in))
		}
		broken := s.metric(t, "mcs_crm_connection_broken", map[string]string{"connection": connection})
		return qi.Retry == queued && broken == 1, fmt.Sprintf("%d of %d in retry, broken %v", qi.Retry, queued, broken)
	})
	parked, err := in.ListRetryTasks(queueName)
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range parked {
		if task.Retried >= task.MaxRetry {
			t.Errorf("task %s: retried %d of %d: a missing record key must not use up retries", task.ID, task.Retried, task.MaxRetry)
		}
		if wait := time.Until(task.NextProcessAt); wait < time.Minute || !strings.Contains(task.LastErr, doc) {
			t.Errorf("task %s: next attempt in %s, %q; want it parked for minutes with the fix", task.ID, wait.Round(time.Second), task.LastErr)
		}
	}
}
