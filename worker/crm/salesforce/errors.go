package salesforce

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
)

// apiError is one element of the error array every Salesforce REST failure carries:
// [{"message": "...", "errorCode": "STRING_TOO_LONG", "fields": ["Subject"]}].
type apiError struct {
	Message   string   `json:"message"`
	ErrorCode string   `json:"errorCode"`
	Fields    []string `json:"fields"`
}

func decodeErrors(body []byte) []apiError {
	var errs []apiError
	if json.Unmarshal(body, &errs) == nil {
		return errs
	}
	// A few endpoints answer with a single object instead of an array.
	var one apiError
	if json.Unmarshal(body, &one) == nil && one.ErrorCode != "" {
		return []apiError{one}
	}
	return nil
}

// parseError is crm.API.ParseError: the first error's code, and every message with the
// fields it names, so the dead letter shows all the CRM objected to.
func parseError(body []byte) (code, msg string) {
	errs := decodeErrors(body)
	if len(errs) == 0 {
		return "", crm.Snippet(strings.TrimSpace(string(body[:min(len(body), 1024)])), 300)
	}
	parts := make([]string, 0, len(errs))
	for _, e := range errs {
		m := e.Message
		if len(errs) > 1 {
			m = e.ErrorCode + ": " + m
		}
		if len(e.Fields) > 0 {
			m += " [" + strings.Join(e.Fields, ", ") + "]"
		}
		parts = append(parts, m)
	}
	return errs[0].ErrorCode, strings.Join(parts, "; ")
}

// hasCode reports whether a Salesforce error body names code.
func hasCode(body []byte, code string) bool {
	for _, e := range decodeErrors(body) {
		if e.ErrorCode == code {
			return true
		}
	}
	return false
}

// adjust refines crm.Classify with what only Salesforce's answers say:
//
//	403 REQUEST_LIMIT_EXCEEDED  the org's rolling 24-hour API allowance (or the concurrent
//	                            long-request limit) is used up: Throttled for limitWait,
//	                            not a failure, nothing we send sooner can succeed
//	403 API_DISABLED_FOR_ORG,   the org or the integration user cannot use the API at all:
//	    API_CURRENTLY_DISABLED  Broken until an admin acts
//	400 UNABLE_TO_LOCK_ROW      another transaction holds the record: Transient
//	300                         the external id matched several Tasks: Permanent
//	401                         still INVALID_SESSION_ID after one fresh token: Transient
func adjust(limitWait time.Duration) func(e *crm.Error, resp *http.Response, body []byte) {
	return func(e *crm.Error, resp *http.Response, body []byte) {
		switch {
		case resp.StatusCode == http.StatusForbidden && hasCode(body, "REQUEST_LIMIT_EXCEEDED"):
			e.Class, e.Code, e.After = crm.Throttled, "REQUEST_LIMIT_EXCEEDED", limitWait
		case resp.StatusCode == http.StatusForbidden && (hasCode(body, "API_DISABLED_FOR_ORG") || hasCode(body, "API_CURRENTLY_DISABLED")):
			e.Class, e.After = crm.Broken, limitWait
		case hasCode(body, "UNABLE_TO_LOCK_ROW"):
			e.Class = crm.Transient
		case resp.StatusCode == http.StatusMultipleChoices:
			e.Class, e.Code = crm.Permanent, "MULTIPLE_CHOICES"
			e.Msg = "the external id matches several records: " + e.Msg
		}
	}
}

// onUnauthorized is crm.AuthTransport.OnUnauthorized: Salesforce ends sessions without
// notice (timeout, logout, admin revoke) and its tokens carry no expiry, so a 401
// INVALID_SESSION_ID means "get a new token and send once more".
func onUnauthorized(_ *http.Response, body []byte) crm.Reauth {
	if bytes.Contains(body, []byte("INVALID_SESSION_ID")) {
		return crm.DropTokenAndRetry
	}
	return crm.DropToken
}
