package hubspot

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/hubspot/hubspotfake"
)

// batched builds a connector whose batches go when full: the linger is far longer than n
// concurrent deliveries take to join, so the tests' batch sizes are exact.
func (e *env) batched(t *testing.T, unique string, mut func(*Options)) *Connector {
	t.Helper()
	return e.connector(t, func(o *Options) {
		o.Connection.Batch = config.Batch{MaxSize: 100, Linger: time.Minute}
		o.Connection.HubSpot.UniqueProperty = unique
		o.RateLimitMaxWait = time.Minute
		if mut != nil {
			mut(o)
		}
	})
}

// numbered is the record of call i, from customer number i%numbers (0312340000 + n).
func numbered(i, numbers int) *mappers.Record {
	rec := record(fmt.Sprintf("d%04d", i), fmt.Sprintf("memo %d", i))
	n := i % numbers
	rec.Contact = &mappers.ContactLookup{E164: fmt.Sprintf("+8131234%04d", n), National: fmt.Sprintf("031234%04d", n),
		OnMultiple: "most_recent", OnNone: "unassociated"}
	return rec
}

// deliverAll delivers recs concurrently (as many asynq tasks at once) and returns each one's
// outcome, by index.
func deliverAll(c *Connector, recs []*mappers.Record) ([]crm.Result, []error) {
	res, errs := make([]crm.Result, len(recs)), make([]error, len(recs))
	var wg sync.WaitGroup
	for i, r := range recs {
		wg.Go(func() { res[i], errs[i] = c.Deliver(context.Background(), r) })
	}
	wg.Wait()
	return res, errs
}

func addContacts(f *hubspotfake.Server, numbers int) []string {
	ids := make([]string, numbers)
	for n := range numbers {
		ids[n] = f.AddContact(map[string]string{"phone": fmt.Sprintf("03-1234-%04d", n)})
	}
	return ids
}

// 200 first events of 200 calls from 200 customers, delivered at once: two searches for the
// 200 numbers, two batch creates of 100 with the associations inline, one owner lookup.
// Every delivery gets its own call, associated with its own caller; a second round of
// events updates them in two batch updates, without a create-only field and without
// blanking what the second event lacks.
func TestBurstLandsInFewRequests(t *testing.T) {
	e := newEnv(t)
	owner := e.fake.AddOwner("rep@example.com")
	contacts := addContacts(e.fake, 200)
	c := e.batched(t, "", nil)

	recs := make([]*mappers.Record, 200)
	for i := range recs {
		recs[i] = numbered(i, 200)
	}
	res, errs := deliverAll(c, recs)
	for i := range recs {
		if errs[i] != nil {
			t.Fatalf("%s: %v", recs[i].ExternalID.Value, errs[i])
		}
		if !res[i].Created || res[i].ContactID != contacts[i%200] || res[i].OwnerID != owner {
			t.Fatalf("%s: %+v, want created, contact %s, owner %s", recs[i].ExternalID.Value, res[i], contacts[i%200], owner)
		}
	}
	calls := e.fake.Calls()
	if len(calls) != 200 {
		t.Fatalf("%d calls in HubSpot, want 200", len(calls))
	}
	byExt := map[string]hubspotfake.Object{}
	for _, call := range calls {
		byExt[call.Properties["hs_call_external_id"]] = call
	}
	for i, r := range recs {
		call := byExt[r.ExternalID.Value]
		if call.ID != res[i].ID || !slices.Equal(call.Contacts, []string{contacts[i%200]}) || call.Properties["hs_call_body"] != fmt.Sprintf("memo %d", i) {
			t.Fatalf("%s: stored %+v, want id %s associated with %s", r.ExternalID.Value, call, res[i].ID, contacts[i%200])
		}
	}
	if got := e.fake.BatchInputs("POST /crm/v3/objects/calls/batch/create"); !slices.Equal(got, []int{100, 100}) {
		t.Errorf("batch creates carried %v inputs, want [100 100]", got)
	}
	if n := e.fake.Count("POST /crm/v3/objects/contacts/search"); n != 2 {
		t.Errorf("%d contact searches for 200 calls of 200 numbers, want 2", n)
	}
	if n := e.fake.Count("GET /crm/v3/owners"); n != 1 {
		t.Errorf("%d owner lookups, want 1", n)
	}
	// The account details are read once per connector, for the record links.
	if n := len(e.fake.Requests()); n != 6 {
		t.Errorf("%d requests in all, want 6 (1 owner, 2 searches, 2 creates, 1 account details)", n)
	}

	// The next event of every call: no disposition (create-only), no from number.
	for i := range recs {
		recs[i] = numbered(i, 200)
		recs[i].Fields = slices.DeleteFunc(recs[i].Fields, func(f mappers.Field) bool { return f.Name == "hs_call_from_number" })
		recs[i].Fields[2].Value = fmt.Sprintf("memo %d + transcript", i)
	}
	res, errs = deliverAll(c, recs)
	for i := range recs {
		if errs[i] != nil || res[i].Created {
			t.Fatalf("%s: %+v, %v; want an update", recs[i].ExternalID.Value, res[i], errs[i])
		}
	}
	if got := e.fake.BatchInputs("POST /crm/v3/objects/calls/batch/update"); !slices.Equal(got, []int{100, 100}) {
		t.Errorf("batch updates carried %v inputs, want [100 100]", got)
	}
	for _, r := range e.fake.Requests() {
		if r.Route == "POST /crm/v3/objects/calls/batch/update" && strings.Contains(r.Body, "hs_call_disposition") {
			t.Fatal("an update sent the create-only disposition")
		}
	}
	for _, call := range e.fake.Calls() {
		if call.Properties["hs_call_from_number"] != "+81312345678" || !strings.HasSuffix(call.Properties["hs_call_body"], "+ transcript") || call.Writes != 2 {
			t.Fatalf("call %s after the update: %v (writes %d)", call.ID, call.Properties, call.Writes)
		}
	}
	if n := e.fake.Count("POST /crm/v3/objects/calls/batch/create") + e.fake.Count("POST /crm/v4/associations/calls/contacts/batch/create"); n != 2 {
		t.Errorf("the updates sent %d creates or associations, want none", n-2)
	}
}

// One input HubSpot refuses (an invalid option) and one it fails alone (INTERNAL_ERROR) in
// a batch of 100: the refused delivery gets a permanent error with HubSpot's message, the
// failed one a transient error whose retry creates the call at once (the 207 said nothing
// was written: no wait for the search index), and the 98 others are done after one request.
func TestBatchPerItemFailuresAlone(t *testing.T) {
	for _, unique := range []string{"", "miitel_detail_id"} {
		t.Run("unique="+unique, func(t *testing.T) {
			e := newEnv(t)
			e.fake.DefineCallProperty("miitel_detail_id", true)
			c := e.batched(t, unique, func(o *Options) { o.SearchLag = time.Hour })
			recs := make([]*mappers.Record, 100)
			for i := range recs {
				recs[i] = numbered(i, 100)
				recs[i].Contact, recs[i].Owner = nil, nil
			}
			refused, failed := recs[37], recs[71]
			refused.Fields = append(refused.Fields, mappers.Field{Name: "hs_call_direction", Value: "SIDEWAYS"})
			e.fake.FailCall(failed.ExternalID.Value, 1, hubspotfake.Fault{Category: "INTERNAL_ERROR", Message: "try again"})

			_, errs := deliverAll(c, recs)
			for i, err := range errs {
				var ce *crm.Error
				switch i {
				case 37:
					if !errors.As(err, &ce) || ce.Class != crm.Permanent || ce.Code != "VALIDATION_ERROR" || !strings.Contains(ce.Msg, "SIDEWAYS") {
						t.Errorf("refused input: %v, want permanent VALIDATION_ERROR naming the value", err)
					}
				case 71:
					if !errors.As(err, &ce) || ce.Class != crm.Transient || ce.Code != "INTERNAL_ERROR" || ce.Status != http.StatusMultiStatus {
						t.Errorf("failed input: %v, want transient INTERNAL_ERROR (207)", err)
					}
				default:
					if err != nil {
						t.Errorf("%s: %v", recs[i].ExternalID.Value, err)
					}
				}
			}
			// With the unique property too, first events are batch creates.
			write := "POST /crm/v3/objects/calls/batch/create"
			if got := e.fake.BatchInputs(write); !slices.Equal(got, []int{100}) {
				t.Errorf("writes carried %v inputs, want one request of 100", got)
			}
			if n := len(e.fake.Calls()); n != 98 {
				t.Errorf("%d calls written, want 98", n)
			}
			// The task of the failed call is retried (on another replica, whose batches do
			// not linger, so a lone call goes at once): written now, once.
			retry := e.batched(t, unique, func(o *Options) { o.Connection.Batch.Linger = 0; o.SearchLag = time.Hour })
			if res, err := retry.Deliver(context.Background(), failed); err != nil || !res.Created {
				t.Fatalf("retry of the failed call: %+v, %v; want it created at once", res, err)
			}
			if n := len(e.fake.Calls()); n != 99 {
				t.Errorf("%d calls after the retry, want 99", n)
			}
			if n := e.fake.Count("POST /crm/v3/objects/calls/search"); n != 0 {
				t.Errorf("%d call searches: a refused input must not wait for the search index", n)
			}
		})
	}
}

// A batch whose answer is lost (the connection drops after HubSpot wrote every call): every
// delivery fails transient and keeps its pending marker; their retries (once the search
// index may hold the calls) find all 100 by hs_call_external_id in one search and adopt
// them. One call per detail.
func TestLostBatchAnswerDuplicatesNothing(t *testing.T) {
	e := newEnv(t)
	c := e.batched(t, "", func(o *Options) {
		o.HTTPClient = &http.Client{Transport: &dropAfter{match: isCreate}}
		o.SearchLag = time.Nanosecond // the fake's index has no lag here
	})
	recs := make([]*mappers.Record, 100)
	for i := range recs {
		recs[i] = numbered(i, 100)
		recs[i].Contact, recs[i].Owner = nil, nil
	}
	_, errs := deliverAll(c, recs)
	for i, err := range errs {
		if crm.ClassOf(err) != crm.Transient {
			t.Fatalf("%s: %v, want transient (outcome unknown)", recs[i].ExternalID.Value, err)
		}
	}
	if n := len(e.fake.Calls()); n != 100 {
		t.Fatalf("HubSpot holds %d calls, want the 100 the lost batch wrote", n)
	}
	res, errs := deliverAll(c, recs)
	for i, err := range errs {
		if err != nil || res[i].Created {
			t.Fatalf("retry of %s: %+v, %v; want the call adopted", recs[i].ExternalID.Value, res[i], err)
		}
	}
	if n := len(e.fake.Calls()); n != 100 {
		t.Errorf("after the retries HubSpot holds %d calls, want 100", n)
	}
	if n := e.fake.Count("POST /crm/v3/objects/calls/search"); n != 1 {
		t.Errorf("%d call searches, want 1 for the 100 retries", n)
	}
	if got := e.fake.BatchInputs("POST /crm/v3/objects/calls/batch/create"); !slices.Equal(got, []int{100}) {
		t.Errorf("creates carried %v inputs, want the lost [100] only", got)
	}
}

// The same call delivered through two routes of one connection at once: one batch cannot
// carry its unique value twice (HubSpot refuses the whole batch), so the second goes in a
// request of its own; both deliveries succeed and HubSpot holds one call.
func TestBatchUpsertSameCallTwice(t *testing.T) {
	e := newEnv(t)
	e.fake.DefineCallProperty("miitel_detail_id", true)
	c := e.batched(t, "miitel_detail_id", nil)
	// Straight into one flush: the three inputs share a batch.
	items := []*writeItem{{key: "d1", props: map[string]string{"hs_timestamp": "2026-03-04T05:06:07.000Z"}},
		{key: "d1", props: map[string]string{"hs_timestamp": "2026-03-04T05:06:07.000Z", "hs_call_title": "again"}},
		{key: "d2", props: map[string]string{"hs_timestamp": "2026-03-04T05:06:07.000Z"}}}
	b := batchOp{op: "hubspot: upsert calls", path: PathBatchUpsert, dedupe: true,
		input: func(it *writeItem, trace string) map[string]any {
			return UpsertCallInput("miitel_detail_id", it.key, it.props, trace)
		},
		created: func(n bool) bool { return n }}
	out := c.flushWrites(context.Background(), b, items)
	for i, r := range out {
		if r.Err != nil {
			t.Fatalf("item %d: %v", i, r.Err)
		}
	}
	if out[0].Value.id != out[1].Value.id || !out[0].Value.created || out[1].Value.created {
		t.Errorf("results %+v: want the second write to update the first's call", out)
	}
	if got := e.fake.BatchInputs("POST /crm/v3/objects/calls/batch/upsert"); !slices.Equal(got, []int{2, 1}) {
		t.Errorf("upserts carried %v inputs, want [2 1]", got)
	}
	if n := len(e.fake.Calls()); n != 2 {
		t.Errorf("%d calls, want 2", n)
	}
}

// Lookups of many numbers in one search, each answered by its own policy: several contacts
// on one number (most recent, or skip), one on another, none on a third; a contact found by
// its mobile number.
func TestContactSearchBatchPolicies(t *testing.T) {
	e := newEnv(t)
	old := e.fake.AddContact(map[string]string{"phone": "03-1234-0001", "lastmodifieddate": "2025-01-01T00:00:00Z"})
	recent := e.fake.AddContact(map[string]string{"phone": "+81 3-1234-0001", "lastmodifieddate": "2026-01-01T00:00:00Z"})
	single := e.fake.AddContact(map[string]string{"mobilephone": "090-0000-0002"})
	c := e.batched(t, "", nil)
	lookup := func(e164, national, multiple string) *mappers.ContactLookup {
		return &mappers.ContactLookup{E164: e164, National: national, OnMultiple: multiple, OnNone: "unassociated"}
	}
	items := []*mappers.ContactLookup{
		lookup("+81312340001", "0312340001", "most_recent"),
		lookup("+81312340001", "0312340001", "skip"),
		lookup("+819000000002", "09000000002", "most_recent"),
		lookup("+81312349999", "0312349999", "most_recent"),
	}
	got := make([]string, len(items))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	// The four lookups make one batch: it is due when all four are in.
	c.searches = crm.NewBatcher(context.Background(), crm.BatchOptions[*contactItem, contactOut]{
		MaxSize: len(items), Linger: time.Minute, Flush: c.flushSearch,
	})
	for i, l := range items {
		wg.Go(func() {
			id, err := c.contact(context.Background(), l)
			mu.Lock()
			defer mu.Unlock()
			got[i] = id
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if want := []string{recent, "", single, ""}; !slices.Equal(got, want) {
		t.Errorf("contacts %v, want %v (old %s)", got, want, old)
	}
	if n := e.fake.Count("POST /crm/v3/objects/contacts/search"); n != 1 {
		t.Errorf("%d searches, want 1 for the 4 lookups", n)
	}
}

// A search whose matches span pages: every page is read, each counted against the search
// budget; each number gets its contact.
func TestContactSearchPages(t *testing.T) {
	e := newEnv(t)
	ids := addContacts(e.fake, 100)
	for n := range 100 { // a second contact per number: 200 matches, and 100 more
		e.fake.AddContact(map[string]string{"mobilephone": fmt.Sprintf("03-1234-%04d", n), "lastmodifieddate": "2020-01-01T00:00:00Z"})
		if n%2 == 0 {
			e.fake.AddContact(map[string]string{"phone": fmt.Sprintf("031234%04d", n), "lastmodifieddate": "2019-01-01T00:00:00Z"})
		}
	}
	c := e.batched(t, "", nil)
	items := make([]*contactItem, 100)
	for n := range items {
		items[n] = &contactItem{forms: []string{fmt.Sprintf("031234%04d", n), fmt.Sprintf("31234%04d", n)}}
	}
	out := c.flushSearch(context.Background(), items)
	for n, r := range out {
		want := 2 + 1 - n%2
		if r.Err != nil || len(r.Value.ids) != want || r.Value.ids[0] != ids[n] {
			t.Fatalf("number %d: %+v, want %d matches, newest %s first", n, r, want, ids[n])
		}
	}
	if n := e.fake.Count("POST /crm/v3/objects/contacts/search"); n != 2 {
		t.Errorf("%d search requests for 250 matches, want 2 pages", n)
	}
}
