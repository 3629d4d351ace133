package salesforce_test

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce/salesforcefake"
)

// batchWait is a linger no test waits out: a batch goes because it is full.
const batchWait = time.Hour

// batching returns a connector whose batches go only when full (max records), beside the
// env's own connector (same Redis, same fake) whose lone deliveries go at once.
func (e *env) batching(t *testing.T, max int) *salesforce.Connector {
	t.Helper()
	saved := e.conn
	e.conn.Batch = config.Batch{MaxSize: max, Linger: batchWait}
	defer func() { e.conn = saved }()
	return e.connector(t)
}

// bare is a call record without lookups: one request per batch, nothing else.
func bare(id string) *mappers.Record {
	r := callRecord(id)
	r.Owner, r.Contact = nil, nil
	return r
}

type outcome struct {
	res crm.Result
	err error
}

// deliverAll delivers the records concurrently, as the worker's tasks do, and returns each
// one's outcome by external id.
func deliverAll(t *testing.T, c *salesforce.Connector, recs []*mappers.Record) map[string]outcome {
	t.Helper()
	var mu sync.Mutex
	out := map[string]outcome{}
	var wg sync.WaitGroup
	for _, r := range recs {
		wg.Go(func() {
			res, err := c.Deliver(t.Context(), r)
			mu.Lock()
			defer mu.Unlock()
			out[r.ExternalID.Value] = outcome{res, err}
		})
	}
	wg.Wait()
	return out
}

func ids(prefix string, n int) []*mappers.Record {
	recs := make([]*mappers.Record, n)
	for i := range recs {
		recs[i] = bare(fmt.Sprintf("%s-%03d", prefix, i))
	}
	return recs
}

func sizes(colls []salesforcefake.Collection) []int {
	var s []int
	for _, c := range colls {
		s = append(s, len(c.Values))
	}
	return s
}

// 400 concurrent calls with the default batch size go as two collections of 200 (the
// vendor maximum), not 400 requests; each call gets its own Task and result. Nothing is read
// before the write.
func TestBatchesSplitAt200(t *testing.T) {
	e := setup(t, salesforce.FlowClientCredentials, salesforcefake.Options{})
	c := e.batching(t, 0) // max_size 0: Salesforce's 200
	got := deliverAll(t, c, ids("d", 400))
	seen := map[string]bool{}
	for id, o := range got {
		if o.err != nil || !o.res.Created || o.res.ID == "" || seen[o.res.ID] {
			t.Fatalf("%s: %+v %v, want a Task of its own", id, o.res, o.err)
		}
		seen[o.res.ID] = true
	}
	if diff := cmp.Diff([]int{200, 200}, sizes(e.fake.Collections())); diff != "" {
		t.Errorf("records per collection request (-want +got):\n%s", diff)
	}
	if n := len(e.fake.Tasks()); n != 400 {
		t.Errorf("%d tasks, want 400", n)
	}
	if n := e.fake.Count(salesforcefake.OpGetByExternal); n != 0 {
		t.Errorf("%d GETs, want none", n)
	}
	// The second event of every call is an update without the create-only field.
	got = deliverAll(t, c, ids("d", 400))
	for id, o := range got {
		if o.err != nil || o.res.Created {
			t.Fatalf("%s: %+v %v, want an update", id, o.res, o.err)
		}
	}
	for _, u := range e.fake.Upserts()[400:] {
		if _, ok := u.Body["TaskSubtype"]; ok || u.Status != 200 {
			t.Fatalf("update %s: status %d, body %v; want 200 without TaskSubtype", u.Value, u.Status, u.Body)
		}
	}
	if n := len(e.fake.Tasks()); n != 400 {
		t.Errorf("%d tasks after the updates, want 400", n)
	}
}

// batch.max_size bounds the records per request; 1 turns batching off, each call still one
// request (no GET before it).
func TestBatchMaxSize(t *testing.T) {
	for _, tt := range []struct {
		max   int
		calls int
		want  []int
	}{{1, 3, []int{1, 1, 1}}, {5, 10, []int{5, 5}}} {
		t.Run(fmt.Sprint("max_size=", tt.max), func(t *testing.T) {
			e := setup(t, salesforce.FlowClientCredentials, salesforcefake.Options{})
			for id, o := range deliverAll(t, e.batching(t, tt.max), ids("m", tt.calls)) {
				if o.err != nil {
					t.Fatalf("%s: %v", id, o.err)
				}
			}
			if diff := cmp.Diff(tt.want, sizes(e.fake.Collections())); diff != "" {
				t.Errorf("records per request (-want +got):\n%s", diff)
			}
			if n := e.fake.Count(salesforcefake.OpAPI); n != len(tt.want) {
				t.Errorf("%d API requests, want %d", n, len(tt.want))
			}
		})
	}
}

// Records of different objects or External ID fields go in different requests.
func TestBatchesByObjectAndField(t *testing.T) {
	e := setup(t, salesforce.FlowClientCredentials, salesforcefake.Options{ExternalIDFields: []string{extField, "Other_Id__c"}})
	recs := ids("a", 2)
	for _, r := range ids("b", 2) {
		r.ExternalID.Field = "Other_Id__c"
		recs = append(recs, r)
	}
	for id, o := range deliverAll(t, e.batching(t, 2), recs) {
		if o.err != nil {
			t.Fatalf("%s: %v", id, o.err)
		}
	}
	var fields []string
	for _, c := range e.fake.Collections() {
		fields = append(fields, fmt.Sprintf("%s:%d", c.Field, len(c.Values)))
	}
	slices.Sort(fields)
	if diff := cmp.Diff([]string{extField + ":2", "Other_Id__c:2"}, fields); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

// One bad record among good ones: each call gets its own outcome. The validation failure is
// Permanent (dead letter, with Salesforce's code and field), the locked row Transient, the
// stale cached contact Transient with the cache forgotten; the good calls are done and were
// sent once.
func TestBadRecordAmongGoodOnes(t *testing.T) {
	e := setup(t, salesforce.FlowClientCredentials, salesforcefake.Options{})
	stale := e.fake.AddContact(salesforcefake.Person{LastName: "Merged", Phone: "0398765432"})
	c := e.connector(t)
	// Cache the contact, then merge it away in Salesforce.
	warm := bare("warm")
	warm.Contact = &mappers.ContactLookup{National: "0398765432", Field: "WhoId"}
	deliver(t, c, warm)
	e.fake.Delete(stale)

	recs := ids("g", 3)
	long := bare("bad-long")
	long.Fields[0].Value = strings.Repeat("x", 256)
	locked := bare("bad-locked")
	e.fake.FailRecord("bad-locked", 1, salesforcefake.Fault{Code: "UNABLE_TO_LOCK_ROW", Message: "unable to obtain exclusive access to this record"})
	staleRec := bare("bad-stale")
	staleRec.Contact = &mappers.ContactLookup{National: "0398765432", Field: "WhoId"}
	got := deliverAll(t, e.batching(t, 6), append(recs, long, locked, staleRec))

	for _, r := range recs {
		if o := got[r.ExternalID.Value]; o.err != nil || !o.res.Created {
			t.Errorf("%s: %+v %v, want created", r.ExternalID.Value, o.res, o.err)
		}
	}
	for _, tt := range []struct {
		id    string
		class crm.Class
		code  string
		msg   string
	}{
		{"bad-long", crm.Permanent, "STRING_TOO_LONG", "[Subject]"},
		{"bad-locked", crm.Transient, "UNABLE_TO_LOCK_ROW", "exclusive access"},
		{"bad-stale", crm.Transient, "ENTITY_IS_DELETED", "WhoId"},
	} {
		var ce *crm.Error
		err := got[tt.id].err
		if !errors.As(err, &ce) || ce.Class != tt.class || ce.Code != tt.code || !strings.Contains(ce.Msg, tt.msg) {
			t.Errorf("%s: %v, want %v %s mentioning %q", tt.id, err, tt.class, tt.code, tt.msg)
		}
		if errors.Is(err, asynq.SkipRetry) != (tt.class == crm.Permanent) {
			t.Errorf("%s: SkipRetry = %v for class %v", tt.id, errors.Is(err, asynq.SkipRetry), tt.class)
		}
	}
	if diff := cmp.Diff([]int{1, 6}, sizes(e.fake.Collections())); diff != "" {
		t.Fatalf("records per request (-want +got):\n%s", diff)
	}
	// The retries: each bad call alone, nothing resent for the good ones.
	if _, err := c.Deliver(t.Context(), locked); err != nil {
		t.Errorf("locked row retry: %v", err)
	}
	res, err := c.Deliver(t.Context(), staleRec)
	if err != nil || res.ContactID != "" {
		t.Errorf("stale contact retry = %+v, %v; want delivered unassociated after a fresh search", res, err)
	}
	if n := len(e.fake.Tasks()); n != 6 { // warm, 3 good, locked, stale
		t.Errorf("%d tasks, want 6", n)
	}
	for _, c := range e.fake.Collections()[2:] {
		if len(c.Values) != 1 || !strings.HasPrefix(c.Values[0], "bad-") {
			t.Errorf("retry request carried %v, want one bad call", c.Values)
		}
	}
}

// A record refused only for its create-only field (its Task existed although the id map did
// not know it) goes again alone without it; the batch's other records are not resent.
func TestCreateOnlyRefusalResendsThatRecordAlone(t *testing.T) {
	e := setup(t, salesforce.FlowClientCredentials, salesforcefake.Options{})
	first := deliver(t, e.connector(t), bare("exists"))
	// The id map entry is lost (Redis restored from an older snapshot, say).
	if err := e.rdb.FlushDB(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	got := deliverAll(t, e.batching(t, 3), []*mappers.Record{bare("new-1"), bare("exists"), bare("new-2")})
	if o := got["exists"]; o.err != nil || o.res.Created || o.res.ID != first.ID {
		t.Errorf("existing task: %+v %v, want an update of %s", o.res, o.err, first.ID)
	}
	for _, id := range []string{"new-1", "new-2"} {
		if o := got[id]; o.err != nil || !o.res.Created {
			t.Errorf("%s: %+v %v, want created", id, o.res, o.err)
		}
	}
	colls := e.fake.Collections()
	if diff := cmp.Diff([][]string{{"exists"}, {"new-1", "exists", "new-2"}, {"exists"}}, valuesOf(colls), sortInner); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
	last := e.fake.Upserts()[len(e.fake.Upserts())-1]
	if _, ok := last.Body["TaskSubtype"]; ok || last.Status != 200 {
		t.Errorf("resend: status %d body %v, want an update without TaskSubtype", last.Status, last.Body)
	}
	if n := len(e.fake.Tasks()); n != 3 {
		t.Errorf("%d tasks, want 3", n)
	}
}

var sortInner = cmp.Transformer("sort", func(in []string) []string {
	out := slices.Clone(in)
	slices.Sort(out)
	return out
})

func valuesOf(colls []salesforcefake.Collection) [][]string {
	var v [][]string
	for _, c := range colls {
		v = append(v, c.Values)
	}
	return v
}

// The same call in two routes of one connection can meet in one batch; Salesforce refuses a
// collection that names an external id twice, so the second goes in a request of its own.
func TestSameExternalIDTwiceInABatch(t *testing.T) {
	e := setup(t, salesforce.FlowClientCredentials, salesforcefake.Options{})
	c := e.batching(t, 3)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i, id := range []string{"twice", "twice", "once"} {
		wg.Go(func() { _, errs[i] = c.Deliver(t.Context(), bare(id)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("delivery %d: %v", i, err)
		}
	}
	if diff := cmp.Diff([]int{2, 1}, sizes(e.fake.Collections())); diff != "" {
		t.Errorf("records per request (-want +got):\n%s", diff)
	}
	if n := len(e.fake.Tasks()); n != 2 {
		t.Errorf("%d tasks, want 2 (one per external id)", n)
	}
}

// failingTransport fails the next fail API requests (those match accepts, default every
// /services/data request) with a network error.
type failingTransport struct {
	next  http.RoundTripper
	match func(*http.Request) bool
	mu    sync.Mutex
	fail  int
}

func (f *failingTransport) arm(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = n
}

func (f *failingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	f.mu.Lock()
	fail := f.fail > 0 && strings.Contains(r.URL.Path, "/services/data/") && (f.match == nil || f.match(r))
	if fail {
		f.fail--
	}
	f.mu.Unlock()
	if fail {
		if r.Body != nil {
			_ = r.Body.Close()
		}
		return nil, errors.New("connection reset by peer")
	}
	return f.next.RoundTrip(r)
}

// A failure of the whole request is every record's, classified once: a malformed request
// Permanent, REQUEST_LIMIT_EXCEEDED Throttled (no attempt burns), a 5xx or the network
// Transient; a 401 gets a new token and the batch goes through.
func TestWholeRequestFailure(t *testing.T) {
	for _, tt := range []struct {
		name    string
		fault   *salesforcefake.Fault
		network bool
		class   crm.Class
		code    string
		ok      bool
	}{
		{name: "malformed", fault: &salesforcefake.Fault{Status: 400, Code: "JSON_PARSER_ERROR"}, class: crm.Permanent, code: "JSON_PARSER_ERROR"},
		{name: "request limit", fault: &salesforcefake.Fault{Status: 403, Code: "REQUEST_LIMIT_EXCEEDED"}, class: crm.Throttled, code: "REQUEST_LIMIT_EXCEEDED"},
		{name: "503", fault: &salesforcefake.Fault{Status: 503, Code: "SERVER_UNAVAILABLE"}, class: crm.Transient, code: "SERVER_UNAVAILABLE"},
		{name: "network", network: true, class: crm.Transient},
		{name: "session expired", fault: &salesforcefake.Fault{Status: 401, Code: "INVALID_SESSION_ID"}, ok: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := setup(t, salesforce.FlowClientCredentials, salesforcefake.Options{})
			ft := &failingTransport{next: e.fake.Client().Transport}
			e.client = &http.Client{Transport: ft}
			deliver(t, e.connector(t), bare("warm")) // the token is fetched; the next API request is the batch
			c := e.batching(t, 3)
			switch {
			case tt.network:
				ft.arm(1)
			default:
				e.fake.Fail(1, *tt.fault)
			}
			tokens := e.fake.Count(salesforcefake.OpToken)
			for id, o := range deliverAll(t, c, ids("w", 3)) {
				if tt.ok {
					if o.err != nil {
						t.Errorf("%s: %v", id, o.err)
					}
					continue
				}
				var ce *crm.Error
				if !errors.As(o.err, &ce) || ce.Class != tt.class || ce.Code != tt.code {
					t.Errorf("%s: %v, want %v %q", id, o.err, tt.class, tt.code)
				}
			}
			if tt.ok && e.fake.Count(salesforcefake.OpToken) != tokens+1 {
				t.Errorf("token requests %d -> %d, want one new token", tokens, e.fake.Count(salesforcefake.OpToken))
			}
			wantTasks := 1
			if tt.ok {
				wantTasks = 4
			}
			if n := len(e.fake.Tasks()); n != wantTasks {
				t.Errorf("%d tasks, want %d", n, wantTasks)
			}
		})
	}
}
