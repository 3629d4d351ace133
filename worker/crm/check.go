package crm

import (
	"context"
	"fmt"
	"strings"
)

// A connection check (`miitel-crm-sync check`, and the same check when a worker starts)
// verifies, before the first call, what would otherwise surface as a stream of failed
// deliveries: the credentials get a token, the needed scopes or permissions are granted, the
// record key the upserts use exists and is unique, and the owner lookup works. Every line
// names the fix when it fails.

// CheckStatus is the outcome of one check line.
type CheckStatus int

const (
	// CheckPass: verified.
	CheckPass CheckStatus = iota
	// CheckFail: verified to be wrong; calls would fail until an admin acts (the Fix says how).
	CheckFail
	// CheckUnknown: could not be verified (the CRM was unreachable, answered 5xx, or the
	// check depends on one that failed). A worker starts anyway; calls retry.
	CheckUnknown
	// CheckSkipped: nothing to verify (e.g. no owner e-mail given).
	CheckSkipped
)

func (s CheckStatus) String() string {
	switch s {
	case CheckPass:
		return "pass"
	case CheckFail:
		return "FAIL"
	case CheckUnknown:
		return "unknown"
	case CheckSkipped:
		return "skip"
	}
	return fmt.Sprintf("status(%d)", int(s))
}

// MarshalText makes the status read as its name in JSON (the /readyz detail, `check --json`).
func (s CheckStatus) MarshalText() ([]byte, error) { return []byte(strings.ToLower(s.String())), nil }

// Check names of the lines every connector reports (a connector may add its own).
const (
	CheckToken       = "token"        // the credentials get an access token
	CheckPermissions = "permissions"  // scopes / object permissions needed to write
	CheckRecordKey   = "record_key"   // the upsert key field exists and is unique / External ID
	CheckOwnerLookup = "owner_lookup" // the owner lookup answers for a configured e-mail
)

// CheckResult is one line of a connection check.
type CheckResult struct {
	Connection string      `json:"connection"`
	Name       string      `json:"check"`
	Status     CheckStatus `json:"status"`
	// Detail says what was found, e.g. "Task.MiiTel_Detail_Id__c is an External ID, unique".
	Detail string `json:"detail,omitempty"`
	// Fix is, for a failure, exactly what the admin does: which field to create, which scope to
	// add, and the doc section that explains it.
	Fix string `json:"fix,omitempty"`
}

// CheckOptions say what a check verifies beyond the connection itself.
type CheckOptions struct {
	// RecordKeys are the external-id fields in use for this connection: the connection's own
	// (Salesforce external_id_field, HubSpot unique_property) and any a route's mapping names
	// instead. Each is verified.
	RecordKeys []string
	// OwnerEmail, when set, is looked up as a rep's e-mail (config connections[].check.owner_email).
	OwnerEmail string
}

// Checker is implemented by connectors that can verify their connection. The check only
// reads; it never writes to the CRM.
type Checker interface {
	Check(ctx context.Context, o CheckOptions) []CheckResult
}

// Failed reports whether any line failed (CheckFail); CheckUnknown is not a failure.
func Failed(results []CheckResult) bool {
	for _, r := range results {
		if r.Status == CheckFail {
			return true
		}
	}
	return false
}
