package salesforce

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
)

// Doc sections the fixes point to.
const (
	DocRecordKey       = "docs/crm-salesforce.md#1-the-external-id-field-on-task"
	DocIntegrationUser = "docs/crm-salesforce.md#2-the-integration-user"
)

// fieldInfo is one field of a describe.
type fieldInfo struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	Length     int    `json:"length"`
	ExternalID bool   `json:"externalId"`
	Unique     bool   `json:"unique"`
	Createable bool   `json:"createable"`
	Updateable bool   `json:"updateable"`
}

// describeResult is the part of an object's describe the connector reads.
type describeResult struct {
	Name       string      `json:"name"`
	Createable bool        `json:"createable"`
	Updateable bool        `json:"updateable"`
	Fields     []fieldInfo `json:"fields"`
}

func (c *Connector) describe(ctx context.Context, api *crm.API, object string) (*describeResult, error) {
	var d describeResult
	if _, err := api.Do(ctx, DescribeRequest(object), &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// field finds a field by name; Salesforce field names are case-insensitive.
func (d *describeResult) field(name string) *fieldInfo {
	for i := range d.Fields {
		if strings.EqualFold(d.Fields[i].Name, name) {
			return &d.Fields[i]
		}
	}
	return nil
}

// keyFix is what an admin does when the org lacks a usable record key field.
func keyFix(object, field string) string {
	where := object
	if object == "Task" || object == "Event" {
		where = "Activity (" + object + ")"
	}
	return fmt.Sprintf("in Setup > Object Manager > %s > Fields & Relationships, create the Text(255) field %s with Unique and External ID ticked, "+
		"visible and editable for the integration user (or set external_id_field to the field you have); see %s", where, field, DocRecordKey)
}

// keyProblem says why field cannot be object's upsert key, "" when it can: it must exist
// (be visible to the integration user) and be an External ID.
func keyProblem(d *describeResult, object, field string) (problem, fix string) {
	f := d.field(field)
	switch {
	case f == nil:
		return fmt.Sprintf("%s.%s does not exist (or the integration user cannot see it)", object, field), keyFix(object, field)
	case !f.ExternalID:
		return fmt.Sprintf("%s.%s is not an External ID", object, f.Name),
			fmt.Sprintf("edit the field %s on %s: tick External ID and Unique; see %s", f.Name, object, DocRecordKey)
	}
	return "", ""
}

func recordKeyReason(object, field string) string { return "record_key " + object + "." + field }

// recordKeyFailure turns a failed upsert into a Broken error when Salesforce refused it
// because the External ID field is missing: 404 NOT_FOUND on the one-record upsert (and, per
// CRM.md, on the collection), or 400 INVALID_FIELD naming the field. The Task describe
// confirms it, since a 404 can have other causes: a field that turns out to exist leaves the
// failure Transient. Every other error is returned as it is.
//
// Broken rather than Permanent: every call of the connection would otherwise go to the dead
// letter until an admin creates the field; waiting loses nothing and the first attempt after
// the fix delivers them all.
func (c *Connector) recordKeyFailure(ctx context.Context, api *crm.API, object, field string, err error) error {
	var ce *crm.Error
	if !errors.As(err, &ce) {
		return err
	}
	switch {
	case ce.Status == http.StatusNotFound:
	case ce.Status == http.StatusBadRequest && ce.Code == "INVALID_FIELD" && strings.Contains(strings.ToLower(ce.Msg), strings.ToLower(field)):
	default:
		return err
	}
	var problem, fix string
	d, derr := c.describe(ctx, api, object)
	var de *crm.Error
	switch {
	case derr == nil:
		if problem, fix = keyProblem(d, object, field); problem == "" {
			re := *ce
			re.Class = crm.Transient
			re.Msg = ce.Msg + " (yet the " + object + " describe shows the External ID field " + field + "; retrying)"
			return &re
		}
	case errors.As(derr, &de) && de.Status == http.StatusNotFound:
		problem = object + " is not accessible to the integration user"
		fix = "give the integration user's permission set Read, Create and Edit on " + object + "; see " + DocIntegrationUser
	default:
		problem = fmt.Sprintf("salesforce answered %s to the upsert by %s.%s (the describe that would confirm a missing field failed: %v)", ce.Code, object, field, derr)
		fix = keyFix(object, field)
	}
	if c.broken.Set(recordKeyReason(object, field), problem) {
		c.log.Error("salesforce: connection broken: the record key field is not usable; calls wait (not counted as failures) until it is fixed",
			"object", object, "field", field, "reason", problem, "fix", fix, "status", ce.Status, "code", ce.Code)
	}
	// Not wrapping ce: it is Permanent, and its asynq.SkipRetry would archive the call.
	return &crm.Error{Class: crm.Broken, Op: ce.Op, Status: ce.Status, Code: ce.Code, Msg: problem + "; fix: " + fix, After: RecordKeyWait}
}

// recordKeyFound clears the broken mark of a record key once an upsert by it went through.
func (c *Connector) recordKeyFound(object, field string) {
	if c.broken.Clear(recordKeyReason(object, field)) {
		c.log.Info("salesforce: the record key field works again; delivering", "object", object, "field", field)
	}
}
