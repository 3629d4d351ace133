package hubspot

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/hubspot/hubspotfake"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
)

const (
	routeCreate    = "POST " + PathBatchCreate
	routeUpsert    = "POST " + PathBatchUpsert
	routeUpdate    = "POST " + PathBatchUpdate
	routeAssociate = "POST " + PathBatchAssociate
	routeProperty  = "GET /crm/v3/properties/calls/{name}"
	dispBusy       = "9d9162e7-6cf3-4944-bf63-4dff82258764"
	dispConnected  = "f240bbac-87c9-4f6e-bf70-924b57d47db7"
)

// 200 first events with the unique property: one read of the property, then two batch
// creates of 100 carrying it and the contact associations inline; no upsert and no v4
// association batch. The next 200 events are upserted by the property in two batches,
// without the create-only disposition and without an association (the contact is the
// same).
func TestUniqueFirstEventsCreatedWithAssociationsInline(t *testing.T) {
	e := newEnv(t)
	e.fake.DefineCallProperty(uniqueProp, true)
	contacts := addContacts(e.fake, 200)
	c := e.batched(t, uniqueProp, nil)
	recs := make([]*mappers.Record, 200)
	for i := range recs {
		recs[i] = numbered(i, 200)
		recs[i].Owner = nil
	}
	res, errs := deliverAll(c, recs)
	for i := range recs {
		if errs[i] != nil || !res[i].Created || res[i].ContactID != contacts[i] {
			t.Fatalf("%s: %+v, %v; want created, contact %s", recs[i].ExternalID.Value, res[i], errs[i], contacts[i])
		}
	}
	byExt := map[string]hubspotfake.Object{}
	for _, call := range e.fake.Calls() {
		byExt[call.Properties[ExternalIDProperty]] = call
	}
	for i, r := range recs {
		call := byExt[r.ExternalID.Value]
		if call.ID != res[i].ID || call.Properties[uniqueProp] != r.ExternalID.Value || !slices.Equal(call.Contacts, []string{contacts[i]}) {
			t.Fatalf("%s: stored %+v, want id %s keyed by %s, associated with %s", r.ExternalID.Value, call, res[i].ID, uniqueProp, contacts[i])
		}
	}
	if len(byExt) != 200 {
		t.Fatalf("%d calls, want 200", len(byExt))
	}
	want := map[string][]int{routeCreate: {100, 100}, routeUpsert: nil, routeAssociate: nil}
	for route, w := range want {
		if got := e.fake.BatchInputs(route); !slices.Equal(got, w) {
			t.Errorf("%s carried %v inputs, want %v", route, got, w)
		}
	}
	if n := e.fake.Count(routeProperty); n != 1 {
		t.Errorf("%d reads of the property for 200 concurrent first events, want 1", n)
	}

	for i := range recs {
		recs[i] = numbered(i, 200)
		recs[i].Owner = nil
		recs[i].Fields[2].Value = fmt.Sprintf("memo %d + transcript", i)
		recs[i].Fields[7].Value = dispBusy // create-only: not sent again
	}
	res, errs = deliverAll(c, recs)
	for i := range recs {
		if errs[i] != nil || res[i].Created {
			t.Fatalf("%s: %+v, %v; want an update", recs[i].ExternalID.Value, res[i], errs[i])
		}
	}
	if got := e.fake.BatchInputs(routeUpsert); !slices.Equal(got, []int{100, 100}) {
		t.Errorf("upserts carried %v inputs, want [100 100]", got)
	}
	if n := e.fake.Count(routeCreate) + e.fake.Count(routeAssociate); n != 2 {
		t.Errorf("the later events sent %d creates or associations, want none", n-2)
	}
	for _, call := range e.fake.Calls() {
		if call.Properties["hs_call_disposition"] != dispConnected || !strings.HasSuffix(call.Properties["hs_call_body"], "+ transcript") || call.Writes != 2 {
			t.Fatalf("call %s after the upsert: %v (writes %d)", call.ID, call.Properties, call.Writes)
		}
	}
}

// A first event whose call HubSpot holds already (written by an attempt whose id-map entry
// is gone: a lost answer, a worker killed before recording it, a lost Redis) among 99 new
// ones, for both shapes of HubSpot's refusal of a taken unique value: that input alone in a
// 207 (as every traced input is answered), or the whole request (409). One call per detail
// either way; the existing call is updated without its create-only field and associated
// with its contact; the new ones are created with theirs.
func TestUniqueCreateRefusedAsExistingUpdatesIt(t *testing.T) {
	for _, whole := range []bool{false, true} {
		t.Run(fmt.Sprintf("whole request refused %v", whole), func(t *testing.T) {
			e := &env{fake: hubspotfake.New(t, hubspotfake.Options{TakenUniqueRefusesBatch: whole}), rdb: redistest.Start(t).Client()}
			e.fake.AddPrivateAppToken(pat)
			e.fake.DefineCallProperty(uniqueProp, true)
			contacts := addContacts(e.fake, 100)
			recs := make([]*mappers.Record, 100)
			for i := range recs {
				recs[i] = numbered(i, 100)
				recs[i].Owner = nil
			}
			// Call 37 was written by another worker whose id map is not this one's.
			before := (&env{fake: e.fake, rdb: redistest.Start(t).Client()}).connector(t, withUnique)
			first := deliver(t, before, recs[37])
			recs[37] = numbered(37, 100)
			recs[37].Owner = nil
			recs[37].Fields[2].Value = "memo 37, second event"
			recs[37].Fields[7].Value = dispBusy

			// A short linger: the fallbacks' batches are not full, and wait it out.
			c := e.batched(t, uniqueProp, func(o *Options) { o.Connection.Batch.Linger = 200 * time.Millisecond })
			res, errs := deliverAll(c, recs)
			for i := range recs {
				if errs[i] != nil || res[i].Created != (i != 37) || res[i].ContactID != contacts[i] {
					t.Fatalf("%s: %+v, %v; want created %v, contact %s", recs[i].ExternalID.Value, res[i], errs[i], i != 37, contacts[i])
				}
			}
			if res[37].ID != first.ID {
				t.Errorf("call 37 is %s, want the existing %s", res[37].ID, first.ID)
			}
			calls := e.fake.Calls()
			if len(calls) != 100 {
				t.Fatalf("%d calls, want 100 (one per detail)", len(calls))
			}
			for _, call := range calls {
				ext := call.Properties[ExternalIDProperty]
				var i int
				fmt.Sscanf(ext, "d%04d", &i)
				if call.Properties[uniqueProp] != ext || call.Properties["hs_call_disposition"] != dispConnected || !slices.Equal(call.Contacts, []string{contacts[i]}) {
					t.Errorf("%s: %v associated with %v; want its create-time disposition and contact %s", ext, call.Properties, call.Contacts, contacts[i])
				}
				if i == 37 && call.Properties["hs_call_body"] != "memo 37, second event" {
					t.Errorf("the existing call was not updated: %v", call.Properties)
				}
			}
			// Inputs sent per route (the earlier worker's create included): per input, the
			// refused call alone is upserted and associated; whole request, every call is,
			// and the 99 the upserts created get their create-only field.
			upserts, updates, assocs := 1, 0, 1
			if whole {
				// The creates of one batch normally; if a slow join split them, the request
				// holding call 37 was refused whole.
				k := 0
				for _, r := range e.fake.Requests() {
					if r.Route == routeCreate && strings.Contains(r.Body, `"d0037"`) {
						k = strings.Count(r.Body, `"objectWriteTraceId"`)
					}
				}
				upserts, updates, assocs = k, k-1, k
			}
			for route, w := range map[string]int{routeCreate: 1 + 100, routeUpsert: upserts, routeUpdate: updates, routeAssociate: assocs} {
				got := e.fake.BatchInputs(route)
				if sum(got) != w {
					t.Errorf("%s carried %v inputs, want %d in all", route, got, w)
				}
			}
			for _, r := range e.fake.Requests() {
				if r.Route == routeUpsert && strings.Contains(r.Body, "hs_call_disposition") {
					t.Error("the upsert of a call HubSpot said exists sent the create-only disposition")
				}
			}
		})
	}
}

func sum(v []int) (n int) {
	for _, x := range v {
		n += x
	}
	return n
}
