package hubspotfake

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// The batch endpoints: calls batch/create, batch/update and batch/upsert, v4 associations
// batch/create. As HubSpot:
//   - inputs hold 1 to MaxBatchInputs items (associations: 1 to MaxAssociationInputs), else
//     400 for the whole request;
//   - two inputs naming the same record (id, or idProperty value) are a 400 for the whole
//     request ("Duplicate IDs found in batch input");
//   - an input that fails is answered per input in a 207 Multi-Status only when every input
//     carries a distinct objectWriteTraceId (errors[] name it in context.objectWriteTraceId);
//     without them a batch is all or nothing: the first failure is a 400 and nothing is
//     written;
//   - a create whose input carries a value a unique property already holds (or one that
//     appears twice in the request) is refused like any invalid input: alone in a 207 when
//     traced (Options.TakenUniqueRefusesBatch: a 409 for the whole request);
//   - results carry each input's objectWriteTraceId.

// MaxBatchInputs is the most inputs of a calls batch request.
const MaxBatchInputs = 100

// MaxAssociationInputs is the most inputs of a v4 associations batch/create (HubSpot's
// documented limit for batch association writes).
const MaxAssociationInputs = 2000

// MaxInValues is the most values the fake accepts in one IN / NOT_IN search filter.
// HubSpot documents no figure; the connector stays at or below it.
const MaxInValues = 100

// Fault is a per-input failure injected with FailCall: the category and message of the
// errors[] entry HubSpot answers for that input.
type Fault struct {
	Category string // e.g. VALIDATION_ERROR, INTERNAL_ERROR
	Message  string
}

type batchState struct {
	faults map[string][]Fault // external id / upsert id value -> next per-input failures
}

// FailCall makes the next n batch writes (create, update or upsert) of the call whose
// hs_call_external_id (or upsert id value) is value fail alone with f; the other inputs of
// the same request go through.
func (s *Server) FailCall(value string, n int, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.batch.faults == nil {
		s.batch.faults = map[string][]Fault{}
	}
	for range n {
		s.batch.faults[value] = append(s.batch.faults[value], f)
	}
}

// takeFault pops the next injected failure of value. Called with mu held.
func (s *Server) takeFault(value string) (Fault, bool) {
	fs := s.batch.faults[value]
	if value == "" || len(fs) == 0 {
		return Fault{}, false
	}
	s.batch.faults[value] = fs[1:]
	return fs[0], true
}

// BatchInputs returns, for every request received on route (e.g.
// "POST /crm/v3/objects/calls/batch/create"), the number of inputs it carried, in order.
func (s *Server) BatchInputs(route string) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for _, r := range s.requests {
		if r.Route != route {
			continue
		}
		var in struct {
			Inputs []json.RawMessage `json:"inputs"`
		}
		_ = json.Unmarshal([]byte(r.Body), &in)
		out = append(out, len(in.Inputs))
	}
	return out
}

// itemError is one input's failure.
type itemError struct {
	category, message string
	details           []map[string]any
}

// batchOutcome collects per-input answers and writes the response.
type batchOutcome struct {
	traced  bool // every input has a distinct objectWriteTraceId
	results []map[string]any
	errors  []map[string]any
	first   *itemError
}

func newOutcome(traceIDs []string) *batchOutcome {
	seen := map[string]bool{}
	traced := true
	for _, id := range traceIDs {
		if id == "" || seen[id] {
			traced = false
		}
		seen[id] = true
	}
	return &batchOutcome{traced: traced}
}

func (o *batchOutcome) fail(trace string, e itemError) {
	if o.first == nil {
		o.first = &e
	}
	entry := map[string]any{"status": "error", "category": e.category, "message": e.message,
		"context": map[string]any{"objectWriteTraceId": []string{trace}}, "errors": e.details, "links": map[string]any{}}
	if e.details == nil {
		entry["errors"] = []map[string]any{}
	}
	o.errors = append(o.errors, entry)
}

// allOrNothing reports whether the batch must be refused as a whole (an input failed and
// the inputs are not traced): then nothing may be written.
func (o *batchOutcome) allOrNothing() bool { return o.first != nil && !o.traced }

func (o *batchOutcome) write(w http.ResponseWriter, okStatus int, started time.Time) {
	if o.allOrNothing() {
		writeError(w, http.StatusBadRequest, o.first.category, o.first.message, o.first.details)
		return
	}
	resp := map[string]any{"status": "COMPLETE", "results": o.results, "startedAt": started.Format(time.RFC3339Nano),
		"completedAt": time.Now().UTC().Format(time.RFC3339Nano)}
	if o.results == nil {
		resp["results"] = []map[string]any{}
	}
	status := okStatus
	if len(o.errors) > 0 {
		resp["errors"], resp["numErrors"], status = o.errors, len(o.errors), http.StatusMultiStatus
	}
	writeJSON(w, status, resp)
}

// checkInputs answers 400 for a request whose size is out of bounds or that names a record
// twice; keys are the inputs' record keys ("" is not checked).
func checkInputs(w http.ResponseWriter, n, limit int, keys []string) bool {
	if n == 0 || n > limit {
		writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", fmt.Sprintf("inputs must hold 1 to %d items, got %d", limit, n), nil)
		return false
	}
	seen := map[string]bool{}
	var dups []string
	for _, k := range keys {
		if k != "" && seen[k] && !slices.Contains(dups, k) {
			dups = append(dups, k)
		}
		seen[k] = true
	}
	if len(dups) > 0 {
		writeError(w, http.StatusBadRequest, "VALIDATION_ERROR",
			fmt.Sprintf("Duplicate IDs found in batch input: [%s]. IDs must be unique", strings.Join(dups, ", ")), nil)
		return false
	}
	return true
}

func invalid(errs []propError) itemError {
	return itemError{category: "VALIDATION_ERROR", message: propErrorMessage(errs), details: propErrorDetails(errs)}
}

func traced(obj map[string]any, trace string) map[string]any {
	if trace != "" {
		obj["objectWriteTraceId"] = trace
	}
	return obj
}

// POST /crm/v3/objects/calls/batch/create
func (s *Server) batchCreate(w http.ResponseWriter, r *http.Request, body []byte) {
	var in struct {
		Inputs []struct {
			Properties         map[string]json.RawMessage `json:"properties"`
			Associations       []association              `json:"associations"`
			ObjectWriteTraceID string                     `json:"objectWriteTraceId"`
		} `json:"inputs"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", "Invalid input JSON on line 1: "+err.Error(), nil)
		return
	}
	if !checkInputs(w, len(in.Inputs), MaxBatchInputs, nil) {
		return
	}
	started := time.Now().UTC()
	traces := make([]string, len(in.Inputs))
	for i, item := range in.Inputs {
		traces[i] = item.ObjectWriteTraceID
	}
	out := newOutcome(traces)
	type ok struct {
		props    map[string]string
		contacts []string
		trace    string
	}
	var good []ok
	batchUnique := map[string]bool{} // unique property values within this batch
	for _, item := range in.Inputs {
		props, errs := decodeProps(item.Properties)
		errs = append(errs, s.validateCallProps(props, true, "")...)
		for k, v := range props {
			if s.callProps[k] && v != "" {
				if batchUnique[k+"\x00"+v] {
					errs = append(errs, propError{k, "DUPLICATE_UNIQUE_VALUE", fmt.Sprintf("%s=%q appears twice in the batch", k, v)})
				}
				batchUnique[k+"\x00"+v] = true
			}
		}
		if s.o.TakenUniqueRefusesBatch && slices.ContainsFunc(errs, func(e propError) bool { return e.Code == "DUPLICATE_UNIQUE_VALUE" }) {
			writeError(w, http.StatusConflict, "CONFLICT", propErrorMessage(errs), propErrorDetails(errs))
			return
		}
		if len(errs) > 0 {
			out.fail(item.ObjectWriteTraceID, invalid(errs))
			continue
		}
		if f, bad := s.takeFault(props[ExternalIDProperty]); bad {
			out.fail(item.ObjectWriteTraceID, itemError{category: f.Category, message: f.Message})
			continue
		}
		contacts, msg := s.validateAssociations(item.Associations)
		if msg != "" {
			out.fail(item.ObjectWriteTraceID, itemError{category: "VALIDATION_ERROR", message: msg})
			continue
		}
		good = append(good, ok{props, contacts, item.ObjectWriteTraceID})
	}
	if !out.allOrNothing() {
		for _, g := range good {
			c := s.storeCall(g.props)
			c.Contacts = g.contacts
			out.results = append(out.results, traced(s.objectJSON(c, nil), g.trace))
		}
	}
	out.write(w, http.StatusCreated, started)
}

// POST /crm/v3/objects/calls/batch/update
func (s *Server) batchUpdate(w http.ResponseWriter, r *http.Request, body []byte) {
	var in struct {
		Inputs []struct {
			ID                 string                     `json:"id"`
			IDProperty         string                     `json:"idProperty"`
			Properties         map[string]json.RawMessage `json:"properties"`
			ObjectWriteTraceID string                     `json:"objectWriteTraceId"`
		} `json:"inputs"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", "Invalid input JSON on line 1: "+err.Error(), nil)
		return
	}
	keys := make([]string, len(in.Inputs))
	traces := make([]string, len(in.Inputs))
	for i, item := range in.Inputs {
		keys[i], traces[i] = item.IDProperty+"\x00"+item.ID, item.ObjectWriteTraceID
	}
	if !checkInputs(w, len(in.Inputs), MaxBatchInputs, keys) {
		return
	}
	started := time.Now().UTC()
	out := newOutcome(traces)
	type ok struct {
		c     *Object
		props map[string]string
		trace string
	}
	var good []ok
	for _, item := range in.Inputs {
		if item.IDProperty != "" && item.IDProperty != "hs_object_id" && !s.callProps[item.IDProperty] {
			writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", s.nonUniqueMessage(item.IDProperty), nil)
			return
		}
		c := s.findCall(item.ID, item.IDProperty)
		if c == nil {
			out.fail(item.ObjectWriteTraceID, itemError{category: "OBJECT_NOT_FOUND", message: "Could not find object with id " + item.ID})
			continue
		}
		props, errs := decodeProps(item.Properties)
		errs = append(errs, s.validateCallProps(props, false, c.ID)...)
		if len(errs) > 0 {
			out.fail(item.ObjectWriteTraceID, invalid(errs))
			continue
		}
		if f, bad := s.takeFault(c.Properties[ExternalIDProperty]); bad {
			out.fail(item.ObjectWriteTraceID, itemError{category: f.Category, message: f.Message})
			continue
		}
		good = append(good, ok{c, props, item.ObjectWriteTraceID})
	}
	if !out.allOrNothing() {
		for _, g := range good {
			s.updateStored(g.c, g.props)
			out.results = append(out.results, traced(s.objectJSON(g.c, nil), g.trace))
		}
	}
	out.write(w, http.StatusOK, started)
}

// POST /crm/v3/objects/calls/batch/upsert. Upsert inputs carry no associations.
func (s *Server) batchUpsert(w http.ResponseWriter, r *http.Request, body []byte) {
	var in struct {
		Inputs []struct {
			ID                 string                     `json:"id"`
			IDProperty         string                     `json:"idProperty"`
			Properties         map[string]json.RawMessage `json:"properties"`
			ObjectWriteTraceID string                     `json:"objectWriteTraceId"`
			Associations       json.RawMessage            `json:"associations"`
		} `json:"inputs"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", "Invalid input JSON on line 1: "+err.Error(), nil)
		return
	}
	keys := make([]string, len(in.Inputs))
	traces := make([]string, len(in.Inputs))
	for i, item := range in.Inputs {
		keys[i], traces[i] = item.IDProperty+"\x00"+item.ID, item.ObjectWriteTraceID
		if len(item.Associations) > 0 {
			writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", "Invalid input JSON: Unrecognized field \"associations\" in upsert input", nil)
			return
		}
		if unique, ok := s.callProps[item.IDProperty]; !ok || !unique {
			writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", s.nonUniqueMessage(item.IDProperty), nil)
			return
		}
	}
	if !checkInputs(w, len(in.Inputs), MaxBatchInputs, keys) {
		return
	}
	started := time.Now().UTC()
	out := newOutcome(traces)
	type ok struct {
		existing *Object
		id, prop string
		props    map[string]string
		trace    string
	}
	var good []ok
	for _, item := range in.Inputs {
		props, errs := decodeProps(item.Properties)
		existing := s.findCall(item.ID, item.IDProperty)
		selfID := ""
		if existing != nil {
			selfID = existing.ID
		}
		if v, ok := props[item.IDProperty]; ok && v != item.ID {
			errs = append(errs, propError{item.IDProperty, "INVALID_OPTION", "idProperty value in properties differs from id"})
		}
		errs = append(errs, s.validateCallProps(props, existing == nil, selfID)...)
		if len(errs) > 0 {
			out.fail(item.ObjectWriteTraceID, invalid(errs))
			continue
		}
		if f, bad := s.takeFault(item.ID); bad {
			out.fail(item.ObjectWriteTraceID, itemError{category: f.Category, message: f.Message})
			continue
		}
		good = append(good, ok{existing, item.ID, item.IDProperty, props, item.ObjectWriteTraceID})
	}
	if !out.allOrNothing() {
		for _, g := range good {
			var obj map[string]any
			if g.existing == nil {
				g.props[g.prop] = g.id
				obj = s.objectJSON(s.storeCall(g.props), nil)
				obj["new"] = true
			} else {
				s.updateStored(g.existing, g.props)
				obj = s.objectJSON(g.existing, nil)
				obj["new"] = false
			}
			out.results = append(out.results, traced(obj, g.trace))
		}
	}
	out.write(w, http.StatusOK, started)
}

// POST /crm/v4/associations/{calls}/{contacts}/batch/create: 201, or 207 with the inputs
// that failed (their call or contact does not exist, a wrong type) in errors[].
func (s *Server) batchAssociate(w http.ResponseWriter, r *http.Request, body []byte) {
	var in struct {
		Inputs []struct {
			From  struct{ ID string } `json:"from"`
			To    struct{ ID string } `json:"to"`
			Types []assocType         `json:"types"`
		} `json:"inputs"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", "Invalid input JSON on line 1: "+err.Error(), nil)
		return
	}
	if !checkInputs(w, len(in.Inputs), MaxAssociationInputs, nil) {
		return
	}
	started := time.Now().UTC()
	results, errs := []map[string]any{}, []map[string]any{}
	for _, item := range in.Inputs {
		msg := ""
		if len(item.Types) == 0 {
			msg = "association from " + item.From.ID + " has no types"
		}
		for _, t := range item.Types {
			if t.AssociationCategory != "HUBSPOT_DEFINED" || t.AssociationTypeID != 194 {
				msg = fmt.Sprintf("invalid association type %s/%d from calls to contacts", t.AssociationCategory, t.AssociationTypeID)
			}
		}
		c, okCall := s.calls[item.From.ID]
		_, okContact := s.contacts[item.To.ID]
		switch {
		case msg != "":
		case !okCall:
			msg = "call " + item.From.ID + " not found"
		case !okContact:
			msg = "contact " + item.To.ID + " not found"
		}
		if msg != "" {
			errs = append(errs, map[string]any{"status": "error", "category": "VALIDATION_ERROR", "message": msg,
				"context": map[string]any{"fromObjectId": []string{item.From.ID}, "toObjectId": []string{item.To.ID}},
				"errors":  []map[string]any{}, "links": map[string]any{}})
			continue
		}
		if !slices.Contains(c.Contacts, item.To.ID) {
			c.Contacts = append(c.Contacts, item.To.ID)
		}
		results = append(results, map[string]any{"fromObjectTypeId": "0-48", "fromObjectId": item.From.ID,
			"toObjectTypeId": "0-1", "toObjectId": item.To.ID, "labels": []string{}})
	}
	resp := map[string]any{"status": "COMPLETE", "results": results, "startedAt": started.Format(time.RFC3339Nano),
		"completedAt": time.Now().UTC().Format(time.RFC3339Nano)}
	status := http.StatusCreated
	if len(errs) > 0 {
		resp["errors"], resp["numErrors"], status = errs, len(errs), http.StatusMultiStatus
	}
	writeJSON(w, status, resp)
}

// ExternalIDProperty is the call property holding the calling system's id.
const ExternalIDProperty = "hs_call_external_id"
