package salesforce_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce/salesforcefake"
)

func brokenGauge(t *testing.T, e *env) float64 {
	t.Helper()
	m, err := crm.NewMetrics(e.reg)
	if err != nil {
		t.Fatal(err)
	}
	return testutil.ToFloat64(m.Broken.WithLabelValues("sf"))
}

// wantBroken asserts the record key failure of a delivery: Broken (parked with a long wait,
// not counted as a failed attempt, never the dead letter), naming the field and the fix.
func wantBroken(t *testing.T, err error) {
	t.Helper()
	var ce *crm.Error
	if !errors.As(err, &ce) || ce.Class != crm.Broken || !ce.Throttled() || ce.After != salesforce.RecordKeyWait {
		t.Fatalf("Deliver = %v, want Broken waiting %s", err, salesforce.RecordKeyWait)
	}
	if errors.Is(err, asynq.SkipRetry) {
		t.Fatal("a missing record key field must not send the call to the dead letter")
	}
	for _, want := range []string{extField, "External ID", salesforce.DocRecordKey} {
		if !strings.Contains(ce.Msg, want) {
			t.Errorf("message %q lacks %q", ce.Msg, want)
		}
	}
}

// An org set up without the External ID field (or with another name than the connection's)
// no longer dead-letters every call: the calls wait, the connection reads broken with an
// error log that says why and how to fix it, and the first attempt after the admin created
// the field delivers and clears the gauge.
func TestMissingRecordKeyBreaksTheConnectionUntilCreated(t *testing.T) {
	for _, version := range []string{"", "45.0"} { // the collection, and the one-record upsert
		t.Run("api_version="+version, func(t *testing.T) {
			e := setup(t, salesforce.FlowClientCredentials, salesforcefake.Options{NoExternalIDFields: true})
			e.conn.Salesforce.APIVersion = version
			c := e.connector(t)
			_, err := c.Deliver(t.Context(), callRecord("d-1"))
			wantBroken(t, err)
			if g := brokenGauge(t, e); g != 1 {
				t.Errorf("mcs_crm_connection_broken = %v, want 1", g)
			}
			if n := e.fake.Count(salesforcefake.OpDescribe); n != 1 {
				t.Errorf("%d describes, want 1 (confirming the field is missing)", n)
			}
			logs := e.logs.String()
			if strings.Count(logs, "connection broken") != 1 || !strings.Contains(logs, `"level":"ERROR"`) || !strings.Contains(logs, salesforce.DocRecordKey) {
				t.Errorf("want one error log with the fix, got:\n%s", logs)
			}
			// Later calls wait too; the news is logged once.
			_, err = c.Deliver(t.Context(), callRecord("d-2"))
			wantBroken(t, err)
			if n := strings.Count(e.logs.String(), "connection broken"); n != 1 {
				t.Errorf("%d broken logs after two calls, want 1", n)
			}

			e.fake.AddExternalIDField(extField, true)
			for _, id := range []string{"d-1", "d-2"} {
				if res := deliver(t, c, callRecord(id)); !res.Created {
					t.Errorf("%s after the field was created: %+v, want created", id, res)
				}
			}
			if g := brokenGauge(t, e); g != 0 {
				t.Errorf("mcs_crm_connection_broken = %v after recovery, want 0", g)
			}
			if !strings.Contains(e.logs.String(), "works again") {
				t.Error("no log says delivery resumed")
			}
			if n := len(e.fake.Tasks()); n != 2 {
				t.Errorf("%d tasks, want 2", n)
			}
		})
	}
}

// A field that exists but is not marked External ID is as unusable as a missing one.
func TestRecordKeyNotAnExternalID(t *testing.T) {
	e := setup(t, salesforce.FlowClientCredentials, salesforcefake.Options{NoExternalIDFields: true, CustomTaskFields: map[string]int{extField: 255}})
	_, err := e.connector(t).Deliver(t.Context(), callRecord("d-1"))
	var ce *crm.Error
	if !errors.As(err, &ce) || ce.Class != crm.Broken || !strings.Contains(ce.Msg, "is not an External ID") {
		t.Fatalf("Deliver = %v, want Broken: not an External ID", err)
	}
}

// Salesforce does not document what the collection endpoint answers for a missing field. A
// 400 INVALID_FIELD naming it is recognised too, when the describe confirms; a 404 for
// another reason (the describe shows the field) stays an ordinary, retried failure.
func TestRecordKeyAnswerIsConfirmedByTheDescribe(t *testing.T) {
	t.Run("400 INVALID_FIELD, field missing", func(t *testing.T) {
		e := setup(t, salesforce.FlowClientCredentials, salesforcefake.Options{NoExternalIDFields: true})
		c := e.connector(t)
		deliverTokenOnly(t, e, c)
		e.fake.Fail(1, salesforcefake.Fault{Status: 400, Code: "INVALID_FIELD", Message: "Field name provided, " + extField + " does not match an External ID, Salesforce Id, or indexed field for Task"})
		_, err := c.Deliver(t.Context(), bare("d-1"))
		wantBroken(t, err)
	})
	t.Run("404, field present", func(t *testing.T) {
		e := setup(t, salesforce.FlowClientCredentials, salesforcefake.Options{})
		c := e.connector(t)
		deliver(t, c, bare("warm"))
		e.fake.Fail(1, salesforcefake.Fault{Status: 404, Code: "NOT_FOUND", Message: "The requested resource does not exist"})
		_, err := c.Deliver(t.Context(), bare("d-1"))
		if crm.ClassOf(err) != crm.Transient {
			t.Fatalf("Deliver = %v, want Transient", err)
		}
		if g := brokenGauge(t, e); g != 0 {
			t.Errorf("broken gauge %v, want 0", g)
		}
		deliver(t, c, bare("d-1"))
	})
	// Salesforce said the field is missing and the describe cannot say otherwise: waiting is
	// the safe side (nothing is lost; dead-lettering would be).
	t.Run("describe unavailable", func(t *testing.T) {
		e := setup(t, salesforce.FlowClientCredentials, salesforcefake.Options{NoExternalIDFields: true})
		ft := &failingTransport{next: e.fake.Client().Transport, match: func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/describe") }}
		ft.arm(1)
		e.client = &http.Client{Transport: ft}
		_, err := e.connector(t).Deliver(t.Context(), bare("d-1"))
		wantBroken(t, err)
		if !strings.Contains(err.Error(), "describe that would confirm") {
			t.Errorf("message %q does not say the describe failed", err)
		}
	})
}

// deliverTokenOnly makes the connector fetch its token, so the next API request of a test is
// the upsert (the org may not be able to take a delivery yet).
func deliverTokenOnly(t *testing.T, e *env, c *salesforce.Connector) {
	t.Helper()
	res := c.Check(t.Context(), crm.CheckOptions{})
	if res[0].Name != crm.CheckToken || res[0].Status != crm.CheckPass {
		t.Fatalf("token: %+v", res[0])
	}
	_ = e
}
