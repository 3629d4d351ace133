package hubspot

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
)

// Batched delivery. Every request a delivery makes to write its call goes through a
// crm.Batcher, which groups what concurrent deliveries submit into one HubSpot batch request
// and answers each delivery for its own input:
//
//   - with the unique property (unique.go): batch/create for first events (the unique
//     property set, the contact association inline), batch/upsert by it for later events
//     and for a first event whose call exists already;
//   - calls without one, through the crm.IDMap protocol: batch/create for new calls (with
//     their contact association inline) and batch/update for known ones;
//   - call -> contact associations made after an upsert or a changed contact: v4
//     associations batch/create;
//   - contact lookups: one contacts search with IN filters for many numbers;
//   - after an interrupted create, the id map's search by hs_call_external_id: one calls
//     search for the external ids of every delivery recovering at once (a batch whose
//     answer was lost).
//
// Each input carries a distinct objectWriteTraceId, so HubSpot answers a failing input
// alone in a 207 Multi-Status (errors[] naming its trace id) instead of failing the batch:
// that delivery gets its own classified error, the others their results. A failure of the
// whole request (network, 5xx, 429 after the resend) is every input's. Each batch takes its
// request budget once (Ready) before it goes, so throttling never reaches HubSpot.

// writeItem is one call write on its way into a batch.
type writeItem struct {
	key     string            // upsert: the unique property value; update: the call id; create: the external id
	props   map[string]string // the properties to send
	contact string            // create: the contact to associate inline ("" none)
}

// writeOut is what HubSpot answered for one write.
type writeOut struct {
	id      string
	created bool
}

// assocItem is one call -> contact association.
type assocItem struct{ call, contact string }

// contactItem is one contact lookup: the phone forms to match and the policy.
type contactItem struct {
	forms []string
}

// contactOut lists the contacts whose phone or mobile matches, most recently modified first.
type contactOut struct {
	ids []string
}

// batchOp describes one batch write endpoint.
type batchOp struct {
	op, path string
	// input renders one item as a batch input.
	input func(it *writeItem, trace string) map[string]any
	// dedupe: two items with the same key cannot share a request (HubSpot refuses the
	// batch); the later goes in a second request.
	dedupe bool
	// created tells whether a result means the call was created.
	created func(newFlag bool) bool
}

func (c *Connector) batchSize() int {
	n := c.batch.MaxSize
	if n <= 0 || n > config.HubSpotMaxBatch {
		n = config.HubSpotMaxBatch
	}
	return n
}

// newBatchers builds the connector's batchers on its long-lived context.
func (c *Connector) newBatchers(ctx context.Context) {
	requests := func(ctx context.Context) error { return c.limiter.Wait(ctx, "requests") }
	writer := func(b batchOp) *crm.Batcher[*writeItem, writeOut] {
		return crm.NewBatcher(ctx, crm.BatchOptions[*writeItem, writeOut]{
			Connection: c.name, Op: strings.TrimPrefix(b.op, "hubspot: "), MaxSize: c.batchSize(), Linger: c.batch.Linger,
			Ready: requests, Metrics: c.m,
			Flush: func(ctx context.Context, items []*writeItem) []crm.BatchResult[writeOut] {
				return c.flushWrites(ctx, b, items)
			},
		})
	}
	c.upserts = writer(batchOp{op: "hubspot: upsert calls", path: PathBatchUpsert, dedupe: true,
		input: func(it *writeItem, trace string) map[string]any {
			return UpsertCallInput(c.unique, it.key, it.props, trace)
		},
		created: func(newFlag bool) bool { return newFlag }})
	// Creates are deduplicated too: with the unique property, two creates of one call in
	// one request would be refused together; apart, the second is refused as existing.
	c.creates = writer(batchOp{op: "hubspot: create calls", path: PathBatchCreate, dedupe: true,
		input: func(it *writeItem, trace string) map[string]any {
			return CreateCallInput(it.props, it.contact, trace)
		},
		created: func(bool) bool { return true }})
	c.updates = writer(batchOp{op: "hubspot: update calls", path: PathBatchUpdate, dedupe: true,
		input: func(it *writeItem, trace string) map[string]any {
			return UpdateCallInput(it.key, it.props, trace)
		},
		created: func(bool) bool { return false }})
	c.assocs = crm.NewBatcher(ctx, crm.BatchOptions[assocItem, struct{}]{
		Connection: c.name, Op: "associate calls", MaxSize: c.batchSize(), Linger: c.batch.Linger, Ready: requests, Metrics: c.m,
		Flush: c.flushAssociations,
	})
	c.finds = crm.NewBatcher(ctx, crm.BatchOptions[string, string]{
		Connection: c.name, Op: "search calls", MaxSize: min(c.batchSize(), maxInValues), Linger: c.batch.Linger,
		Ready:   func(ctx context.Context) error { return c.limiter.Wait(ctx, "search", "requests") },
		Metrics: c.m,
		Flush:   c.flushFind,
	})
	c.searches = crm.NewBatcher(ctx, crm.BatchOptions[*contactItem, contactOut]{
		Connection: c.name, Op: "search contacts", MaxSize: min(c.batchSize(), maxNumbersPerSearch), Linger: c.batch.Linger,
		// A search draws on the search budget (5/s) and on the 10-second one.
		Ready:   func(ctx context.Context) error { return c.limiter.Wait(ctx, "search", "requests") },
		Metrics: c.m,
		Flush:   c.flushSearch,
	})
}

// batchAnswer is a calls batch response: 200/201, or 207 with per-input errors.
type batchAnswer struct {
	Results []struct {
		ID                 string            `json:"id"`
		New                bool              `json:"new"`
		ObjectWriteTraceID string            `json:"objectWriteTraceId"`
		Properties         map[string]string `json:"properties"`
	} `json:"results"`
	Errors []batchError `json:"errors"`
}

// batchError is one errors[] entry (HubSpot's StandardError).
type batchError struct {
	Status   string              `json:"status"`
	Category string              `json:"category"`
	Message  string              `json:"message"`
	Context  map[string][]string `json:"context"`
	Errors   []struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"errors"`
}

// flushWrites sends a batch of writes, in as many requests as duplicate keys need (normally
// one), and answers each item.
func (c *Connector) flushWrites(ctx context.Context, b batchOp, items []*writeItem) []crm.BatchResult[writeOut] {
	results := make([]crm.BatchResult[writeOut], len(items))
	pending := make([]int, len(items))
	for i := range items {
		pending[i] = i
	}
	for len(pending) > 0 {
		var round, later []int
		seen := map[string]bool{}
		for _, i := range pending {
			if b.dedupe && seen[items[i].key] {
				later = append(later, i)
				continue
			}
			seen[items[i].key] = true
			round = append(round, i)
		}
		c.sendWrites(ctx, b, items, round, results)
		pending = later
	}
	return results
}

func (c *Connector) sendWrites(ctx context.Context, b batchOp, items []*writeItem, idx []int, results []crm.BatchResult[writeOut]) {
	inputs := make([]map[string]any, len(idx))
	byTrace := make(map[string]int, len(idx))
	for k, i := range idx {
		trace := strconv.Itoa(k)
		byTrace[trace] = i
		inputs[k] = b.input(items[i], trace)
	}
	var out batchAnswer
	req := BatchRequest(b.op, b.path, inputs)
	if _, err := c.api.Do(ctx, req, &out); err != nil {
		for _, i := range idx {
			results[i].Err = err
		}
		return
	}
	answered := map[int]bool{}
	for _, r := range out.Results {
		if i, ok := byTrace[r.ObjectWriteTraceID]; ok && r.ID != "" {
			results[i] = crm.BatchResult[writeOut]{Value: writeOut{id: r.ID, created: b.created(r.New)}}
			answered[i] = true
		}
	}
	var unattributed *batchError
	for k := range out.Errors {
		e := &out.Errors[k]
		named := false
		for _, trace := range e.Context["objectWriteTraceId"] {
			if i, ok := byTrace[trace]; ok && !answered[i] {
				results[i].Err, answered[i], named = itemFailure(b.op, e), true, true
			}
		}
		if !named && unattributed == nil {
			unattributed = e
		}
	}
	for _, i := range idx {
		if answered[i] {
			continue
		}
		if unattributed != nil {
			// An error HubSpot did not tie to an input: the inputs left without a result
			// are the ones it speaks of.
			results[i].Err = itemFailure(b.op, unattributed)
			continue
		}
		results[i].Err = &crm.Error{Class: crm.Transient, Op: b.op, Status: http.StatusMultiStatus,
			Msg: "hubspot answered the batch without a result or an error for this input"}
	}
}

// itemFailure classifies one input's errors[] entry. The error's Status is 207: the input
// was answered and refused, so nothing was written for it (crm.IDMap drops its pending
// marker). Validation and conflicts are permanent (the call's dead letter carries HubSpot's
// message); a missing record is crm.ErrNotFound; anything else is retried.
func itemFailure(op string, e *batchError) *crm.Error {
	msg := e.Message
	for _, d := range e.Errors {
		if d.Code != "" && !strings.Contains(msg, d.Code) {
			msg += " [" + d.Code + "]"
		}
	}
	ce := &crm.Error{Class: crm.Transient, Op: op, Status: http.StatusMultiStatus, Code: e.Category, Msg: crm.Snippet(msg, 2000)}
	switch e.Category {
	case "VALIDATION_ERROR", "CONFLICT", "INVALID_PARAMS", "PROPERTY_DOESNT_EXIST":
		ce.Class = crm.Permanent
	case "OBJECT_NOT_FOUND":
		ce.Class, ce.Err = crm.Permanent, crm.ErrNotFound
	case "RATE_LIMITS":
		ce.Class = crm.Throttled
	}
	return ce
}

// flushAssociations creates call -> contact associations in one v4 batch request.
func (c *Connector) flushAssociations(ctx context.Context, items []assocItem) []crm.BatchResult[struct{}] {
	results := make([]crm.BatchResult[struct{}], len(items))
	const op = "hubspot: associate calls"
	seen := map[assocItem]bool{}
	var inputs []map[string]any
	for _, it := range items {
		if seen[it] {
			continue
		}
		seen[it] = true
		inputs = append(inputs, AssociateInput(it.call, it.contact))
	}
	var out struct {
		Results []struct {
			From string `json:"fromObjectId"`
			To   string `json:"toObjectId"`
		} `json:"results"`
		Errors []batchError `json:"errors"`
	}
	req := BatchRequest(op, PathBatchAssociate, inputs)
	if _, err := c.api.Do(ctx, req, &out); err != nil {
		for i := range results {
			results[i].Err = err
		}
		return results
	}
	done := map[assocItem]bool{}
	for _, r := range out.Results {
		done[assocItem{r.From, r.To}] = true
	}
	failed := map[assocItem]*batchError{}
	var unattributed *batchError
	for k := range out.Errors {
		e := &out.Errors[k]
		from, to := e.Context["fromObjectId"], e.Context["toObjectId"]
		if len(from) == 1 && len(to) == 1 {
			failed[assocItem{from[0], to[0]}] = e
		} else if unattributed == nil {
			unattributed = e
		}
	}
	for i, it := range items {
		if done[it] {
			continue
		}
		e := failed[it]
		if e == nil {
			e = unattributed
		}
		if e == nil {
			results[i].Err = &crm.Error{Class: crm.Transient, Op: op, Status: http.StatusMultiStatus, Msg: "hubspot answered without this association"}
			continue
		}
		// A refused association names a contact that was deleted or merged (or a call
		// that is gone): Deliver drops the cached contact and the task looks it up again.
		results[i].Err = &crm.Error{Class: crm.Permanent, Op: op, Status: http.StatusBadRequest, Code: e.Category,
			Msg: crm.Snippet("association refused: "+e.Message, 2000)}
	}
	return results
}

// Contact search limits: HubSpot takes at most 5 filter groups (OR-ed); the fake, like the
// connector, at most maxInValues values in one IN filter (HubSpot documents no figure). A
// search carries one IN filter per phone property and chunk of forms: two chunks, so 4
// groups and up to 2*maxInValues forms, i.e. maxNumbersPerSearch numbers of up to two forms.
const (
	maxInValues         = 100
	maxNumbersPerSearch = maxInValues
	searchPageSize      = 200
	// searchMaxResults is HubSpot's cap on one query's results (paging further is a 400).
	searchMaxResults = 10000
)

var phoneProperties = []string{"hs_searchable_calculated_phone_number", "hs_searchable_calculated_mobile_number"}

// ContactBatchSearchRequest is POST /crm/v3/objects/contacts/search for many phone forms at
// once (at most 2*maxInValues): IN filters on both calculated phone properties, newest
// modification first, a page of searchPageSize from after.
func ContactBatchSearchRequest(forms []string, after string) crm.Request {
	var groups []map[string]any
	for start := 0; start < len(forms); start += maxInValues {
		chunk := forms[start:min(start+maxInValues, len(forms))]
		for _, prop := range phoneProperties {
			groups = append(groups, map[string]any{"filters": []map[string]any{{"propertyName": prop, "operator": "IN", "values": chunk}}})
		}
	}
	body := map[string]any{
		"filterGroups": groups,
		"sorts":        []map[string]string{{"propertyName": "lastmodifieddate", "direction": "DESCENDING"}},
		"properties":   append([]string{"lastmodifieddate"}, phoneProperties...),
		"limit":        searchPageSize,
	}
	if after != "" {
		body["after"] = after
	}
	return crm.Request{Op: "hubspot: search contacts", Method: "POST", Path: "/crm/v3/objects/contacts/search", Body: body}
}

// flushSearch looks up every item's numbers in one search (more pages when many contacts
// match) and answers each item with the contacts matching its forms.
func (c *Connector) flushSearch(ctx context.Context, items []*contactItem) []crm.BatchResult[contactOut] {
	results := make([]crm.BatchResult[contactOut], len(items))
	var forms []string
	seen := map[string]bool{}
	for _, it := range items {
		for _, f := range it.forms {
			if !seen[f] {
				seen[f] = true
				forms = append(forms, f)
			}
		}
	}
	matches := map[string][]string{} // form -> contact ids
	rank := map[string]int{}         // contact id -> place in the search's order (newest first)
	err := c.searchPages(ctx, func(after string) crm.Request { return ContactBatchSearchRequest(forms, after) },
		func(total int, hits []searchHit) error {
			if total > searchMaxResults {
				return &crm.Error{Class: crm.Transient, Op: "hubspot: search contacts",
					Msg: fmt.Sprintf("%d contacts match %d numbers, over HubSpot's %d results per search", total, len(forms), searchMaxResults)}
			}
			for _, r := range hits {
				if _, ok := rank[r.ID]; !ok {
					rank[r.ID] = len(rank)
				}
				for _, p := range phoneProperties {
					if v := r.Properties[p]; seen[v] {
						matches[v] = append(matches[v], r.ID)
					}
				}
			}
			return nil
		})
	if err != nil {
		for i := range results {
			results[i].Err = err
		}
		return results
	}
	for i, it := range items {
		// Results come newest first; a contact matching on both properties or on two
		// forms counts once, at its place in the search's order.
		var ids []string
		dup := map[string]bool{}
		for _, f := range it.forms {
			for _, id := range matches[f] {
				if !dup[id] {
					dup[id] = true
					ids = append(ids, id)
				}
			}
		}
		slices.SortStableFunc(ids, func(a, b string) int { return rank[a] - rank[b] })
		results[i].Value = contactOut{ids: ids}
	}
	return results
}

// searchHit is one search result with the properties asked for.
type searchHit struct {
	ID         string            `json:"id"`
	Properties map[string]string `json:"properties"`
}

// searchPages sends the search built by page (after: "" first) and every further page,
// handing each page's results and total to visit, until the last page or HubSpot's cap on
// one query's results. Every page is one search request (the first one's budget taken by
// the batch's Ready).
func (c *Connector) searchPages(ctx context.Context, page func(after string) crm.Request, visit func(total int, hits []searchHit) error) error {
	after, fetched := "", 0
	for {
		var out struct {
			Total   int         `json:"total"`
			Results []searchHit `json:"results"`
			Paging  struct {
				Next struct {
					After string `json:"after"`
				} `json:"next"`
			} `json:"paging"`
		}
		if _, err := c.api.Do(ctx, page(after), &out); err != nil {
			return err
		}
		if err := visit(out.Total, out.Results); err != nil {
			return err
		}
		fetched += len(out.Results)
		after = out.Paging.Next.After
		if after == "" || len(out.Results) == 0 || fetched >= min(out.Total, searchMaxResults) {
			return nil
		}
	}
}

// CallBatchSearchRequest is POST /crm/v3/objects/calls/search for up to maxInValues
// external ids: one IN filter on hs_call_external_id.
func CallBatchSearchRequest(externalIDs []string, after string) crm.Request {
	body := map[string]any{
		"filterGroups": []map[string]any{{"filters": []map[string]any{{"propertyName": ExternalIDProperty, "operator": "IN", "values": externalIDs}}}},
		"properties":   []string{ExternalIDProperty},
		"sorts":        []map[string]string{{"propertyName": "hs_createdate", "direction": "ASCENDING"}},
		"limit":        searchPageSize,
	}
	if after != "" {
		body["after"] = after
	}
	return crm.Request{Op: "hubspot: search calls", Method: "POST", Path: "/crm/v3/objects/calls/search", Body: body}
}

// flushFind looks for the calls carrying the items' external ids; "" for none found. Were
// there several for one id (should never be), the oldest is adopted.
func (c *Connector) flushFind(ctx context.Context, items []string) []crm.BatchResult[string] {
	results := make([]crm.BatchResult[string], len(items))
	ids := slices.Compact(slices.Sorted(slices.Values(items)))
	found := map[string]string{}
	err := c.searchPages(ctx, func(after string) crm.Request { return CallBatchSearchRequest(ids, after) },
		func(_ int, hits []searchHit) error {
			for _, r := range hits {
				if ext := r.Properties[ExternalIDProperty]; found[ext] == "" {
					found[ext] = r.ID
				}
			}
			return nil
		})
	if err != nil {
		for i := range results {
			results[i].Err = err
		}
		return results
	}
	for i, ext := range items {
		results[i].Value = found[ext]
	}
	return results
}
