package salesforce

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
)

// upsertItem is one record on its way into an upsert: its external id value, the fields
// every write carries and the create-only fields (nil when the id map knows the Task).
type upsertItem struct {
	value      string
	fields     map[string]any
	createOnly map[string]any
}

// upsertOut is what Salesforce answered for one record.
type upsertOut struct {
	id      string
	created bool
}

// body is what the record's upsert sends: with its create-only fields unless omitted.
func (it *upsertItem) body(omitCreateOnly bool) map[string]any {
	if omitCreateOnly || len(it.createOnly) == 0 {
		return it.fields
	}
	b := make(map[string]any, len(it.fields)+len(it.createOnly))
	for k, v := range it.fields {
		b[k] = v
	}
	for k, v := range it.createOnly {
		b[k] = v
	}
	return b
}

// upsert writes one record: through the batch of its object and field (one collection
// request for many concurrent deliveries), or alone on API versions without collections.
func (c *Connector) upsert(ctx context.Context, object, field string, it *upsertItem) (upsertOut, error) {
	if !c.collections {
		return c.upsertOne(ctx, object, field, it)
	}
	return c.batcher(object, field).Do(ctx, it)
}

// batcher returns the batch of an object and External ID field: records of different
// objects or fields cannot share a collection request (the URL names both).
func (c *Connector) batcher(object, field string) *crm.Batcher[*upsertItem, upsertOut] {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := object + "\x00" + field
	if b, ok := c.batchers[key]; ok {
		return b
	}
	b := crm.NewBatcher(c.base, crm.BatchOptions[*upsertItem, upsertOut]{
		Connection: c.name,
		Op:         "upsert " + object,
		MaxSize:    c.batch.MaxSize,
		Linger:     c.batch.Linger,
		// The request budget is taken once per batch; the collection request then goes
		// through the rate-limit transport without drawing again (crm.WithPrepaidBudget).
		Ready: func(ctx context.Context) error { return c.limiter.Wait(ctx, "requests") },
		Flush: func(ctx context.Context, items []*upsertItem) []crm.BatchResult[upsertOut] {
			return c.flush(ctx, object, field, items)
		},
		Metrics: c.m,
	})
	c.batchers[key] = b
	return b
}

// flush sends a batch and answers each record. A value that appears twice (the same call
// delivered through two routes of one connection) goes in a second request: Salesforce
// refuses both records of a collection that share an external id.
func (c *Connector) flush(ctx context.Context, object, field string, items []*upsertItem) []crm.BatchResult[upsertOut] {
	results := make([]crm.BatchResult[upsertOut], len(items))
	pending := make([]int, len(items))
	for i := range items {
		pending[i] = i
	}
	written := map[string]bool{}
	for len(pending) > 0 {
		seen := map[string]bool{}
		var round, later []int
		for _, i := range pending {
			if seen[items[i].value] {
				later = append(later, i)
				continue
			}
			seen[items[i].value] = true
			if written[items[i].value] {
				items[i].createOnly = nil // the first round just wrote this Task
			}
			round = append(round, i)
		}
		c.sendCollection(ctx, object, field, items, round, results, false)
		for _, i := range round {
			if results[i].Err == nil {
				written[items[i].value] = true
			}
		}
		pending = later
	}
	return results
}

// collectionResult is one UpsertResult of a collection upsert.
type collectionResult struct {
	ID      string `json:"id"`
	Success bool   `json:"success"`
	Created bool   `json:"created"`
	Errors  []struct {
		StatusCode string   `json:"statusCode"`
		Message    string   `json:"message"`
		Fields     []string `json:"fields"`
	} `json:"errors"`
}

// sendCollection upserts items[idx] in one collection request and fills their results.
// Records refused only for a create-only field (the Task existed after all) are sent once
// more, together and without their create-only fields; the other records are done.
func (c *Connector) sendCollection(ctx context.Context, object, field string, items []*upsertItem, idx []int, results []crm.BatchResult[upsertOut], omitCreateOnly bool) {
	fail := func(err error) {
		for _, i := range idx {
			results[i].Err = err
		}
	}
	api, err := c.api(ctx)
	if err != nil {
		fail(err)
		return
	}
	records := make([]map[string]any, len(idx))
	for k, i := range idx {
		records[k] = CollectionRecord(object, field, items[i].value, items[i].body(omitCreateOnly))
	}
	req := CollectionUpsertRequest(object, field, records)
	var out []collectionResult
	if _, err := api.Do(ctx, req, &out); err != nil {
		fail(c.recordKeyFailure(ctx, api, object, field, err))
		return
	}
	c.recordKeyFound(object, field)
	if len(out) != len(idx) {
		fail(&crm.Error{Class: crm.Transient, Op: req.Op, Msg: fmt.Sprintf("salesforce answered %d results for %d records", len(out), len(idx))})
		return
	}
	var again []int
	for k, i := range idx {
		r := out[k]
		if r.Success {
			results[i] = crm.BatchResult[upsertOut]{Value: upsertOut{id: r.ID, created: r.Created}}
			continue
		}
		if !omitCreateOnly && refusedCreateOnly(r, items[i].createOnly) {
			again = append(again, i)
			continue
		}
		results[i].Err = c.recordError(req.Op, r)
	}
	if len(again) > 0 {
		c.log.Warn("salesforce: tasks existed although the id map did not know them; updating them without create-only fields", "records", len(again))
		c.sendCollection(ctx, object, field, items, again, results, true)
	}
}

// refusedCreateOnly reports whether every error of a refused record is Salesforce refusing
// to update one of its create-only fields (INVALID_FIELD_FOR_INSERT_UPDATE naming it): then
// the Task exists and the same record without them goes through.
func refusedCreateOnly(r collectionResult, createOnly map[string]any) bool {
	if len(createOnly) == 0 || len(r.Errors) == 0 {
		return false
	}
	for _, e := range r.Errors {
		if e.StatusCode != "INVALID_FIELD_FOR_INSERT_UPDATE" {
			return false
		}
		names := false
		for name := range createOnly {
			if slices.Contains(e.Fields, name) || strings.Contains(e.Message, name) {
				names = true
			}
		}
		if !names {
			return false
		}
	}
	return true
}

// recordError classifies the errors[] of one refused record like a one-record upsert's
// error array: validation is Permanent (the call's dead letter names Salesforce's code,
// message and fields), a locked row Transient, several Tasks with the external id
// Permanent; a stale cached WhoId or OwnerId is handled by Deliver (staleLookup).
func (c *Connector) recordError(op string, r collectionResult) *crm.Error {
	if len(r.Errors) == 0 {
		return &crm.Error{Class: crm.Transient, Op: op, Msg: "salesforce refused the record without saying why"}
	}
	parts := make([]string, 0, len(r.Errors))
	for _, e := range r.Errors {
		m := e.Message
		if len(r.Errors) > 1 {
			m = e.StatusCode + ": " + m
		}
		if len(e.Fields) > 0 {
			m += " [" + strings.Join(e.Fields, ", ") + "]"
		}
		parts = append(parts, m)
	}
	code := r.Errors[0].StatusCode
	e := &crm.Error{Class: crm.Permanent, Op: op, Code: code, Msg: crm.Snippet(strings.Join(parts, "; "), 2000)}
	switch code {
	case "UNABLE_TO_LOCK_ROW", "UNKNOWN_EXCEPTION", "ALL_OR_NONE_OPERATION_ROLLED_BACK":
		e.Class = crm.Transient
	case "REQUEST_LIMIT_EXCEEDED":
		e.Class, e.After = crm.Throttled, c.limitWait
	case "DUPLICATE_EXTERNAL_ID":
		if strings.Contains(e.Msg, "more than one record") {
			e.Msg = "the external id matches several records: " + e.Msg
		} else {
			e.Class = crm.Transient // twice in one request: flush keeps that from happening
		}
	}
	return e
}

// upsertOne is the one-record upsert of API versions before 46.0: 201 created, 200 or 204
// updated. A refused create-only field is retried without it, as in a collection.
func (c *Connector) upsertOne(ctx context.Context, object, field string, it *upsertItem) (upsertOut, error) {
	api, err := c.api(ctx)
	if err != nil {
		return upsertOut{}, err
	}
	send := func(body map[string]any) (upsertOut, error) {
		var out struct {
			ID      string `json:"id"`
			Created bool   `json:"created"`
		}
		status, err := api.Do(ctx, UpsertRequest(object, field, it.value, body), &out)
		if err != nil {
			return upsertOut{}, err
		}
		return upsertOut{id: out.ID, created: status == http.StatusCreated || (status == http.StatusOK && out.Created)}, nil
	}
	out, err := send(it.body(false))
	if err != nil && len(it.createOnly) > 0 && refusesCreateOnly(err, it.createOnly) {
		c.log.Warn("salesforce: task existed although the id map did not know it; updating without create-only fields", "external_id", it.value)
		out, err = send(it.body(true))
	}
	if err != nil {
		return upsertOut{}, c.recordKeyFailure(ctx, api, object, field, err)
	}
	c.recordKeyFound(object, field)
	return out, nil
}
