package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce/salesforcefake"
)

// withIDs is a copy of a MiiTel body whose call and (single) detail carry new ids, so one
// sample can stand for several calls of a test.
func withIDs(t *testing.T, body []byte, callID, detailID string) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	call := m["call"].(map[string]any)
	call["id"] = callID
	call["details"].([]any)[0].(map[string]any)["id"] = detailID
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// adminGet is GET on the admin API of the stack's ops listener.
func (s *stack) adminGet(t *testing.T, path, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+s.ops+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// callState is the state the admin API reports for a call id ("" when it has no record).
func (s *stack) callState(t *testing.T, id string) string {
	t.Helper()
	code, body := s.adminGet(t, "/admin/calls/"+id, adminReadOnly)
	if code != http.StatusOK {
		return ""
	}
	var out struct {
		Details []struct {
			State string `json:"state"`
		} `json:"details"`
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil || len(out.Details) == 0 {
		return ""
	}
	return out.Details[0].State
}

// "My call is not in the CRM": a written call, a retrying one, one parked on a revoked grant,
// a dead one and one MiiTel never sent, as `status` and the admin API describe them; then
// the dead one is fixed and replayed by selector, idempotently, and a stored payload is
// backfilled.
func TestE2EStatusReplayAndBackfill(t *testing.T) {
	// A 10-minute backoff keeps the retrying call in retry, between attempts, for the whole
	// test; no other call here needs a second attempt.
	s := newStack(t, stackOptions{hubspotOAuth: true, maxRetry: 25, retryMax: 10 * time.Minute})
	s.start(t, "serve")
	analysis := readSample(t, "call_analysis_completed/sample1.json")

	const (
		written, retrying, dead, parked, never = "op-written", "op-retrying", "op-dead", "op-parked", "op-never-sent"
	)
	// The retrying call's record is refused as locked for longer than the test looks; the
	// dead one by a validation rule (permanent).
	s.sf.FailRecord(retrying+"-d", 1000, salesforcefake.Fault{Status: http.StatusBadRequest, Code: "UNABLE_TO_LOCK_ROW", Message: "unable to obtain exclusive access to this record"})
	s.sf.FailRecord(dead+"-d", 1, salesforcefake.Fault{Status: http.StatusBadRequest, Code: "FIELD_CUSTOM_VALIDATION_EXCEPTION", Message: "Subject must mention the product"})
	s.hs.RevokeRefreshTokens() // the HubSpot connection's grant is gone: its calls park
	for _, id := range []string{written, retrying, dead} {
		s.post(t, salesforceRoute, withIDs(t, analysis, id, id+"-d"))
	}
	s.post(t, hubspotRoute, withIDs(t, analysis, parked, parked+"-d"))

	for id, want := range map[string]string{written: "done", retrying: "retry", dead: "dead", parked: "parked"} {
		eventually(t, startTimeout, id+" "+want, func() (bool, string) {
			got := s.callState(t, id)
			return got == want, got
		})
	}

	// The admin API needs a credential; the webhook port serves none of it.
	if code, _ := s.adminGet(t, "/admin/calls/"+written, ""); code != http.StatusUnauthorized {
		t.Errorf("admin API without a credential: %d, want 401", code)
	}
	if resp, err := http.Get("http://" + s.listen + "/admin/calls/" + written); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("the webhook port answers /admin: %d, want 404", resp.StatusCode)
		}
	}

	// status describes each.
	task := s.salesforceTasks(t)[written+"-d"]
	if task == nil {
		t.Fatalf("the written call is not in Salesforce")
	}
	var taskID string
	for _, tk := range s.sf.Tasks() {
		if tk[externalIDField] == written+"-d" {
			taskID = fmt.Sprint(tk["Id"])
		}
	}
	status := func(args ...string) (int, string, string) {
		return runCLI(t, s.getenv, append([]string{"status", "--config", s.cfgPath}, args...)...)
	}
	code, out, stderr := status(written)
	link := s.sf.URL + "/lightning/r/Task/" + taskID + "/view"
	if code != 0 || !strings.Contains(out, "state:     done") || !strings.Contains(out, link) || !strings.Contains(out, "contact:   found") {
		t.Errorf("status of the written call (want done and %s):\n%s%s", link, out, stderr)
	}
	code, out, _ = status(retrying + "-d")
	if code != 0 || !strings.Contains(out, "state:     retry") || !strings.Contains(out, "next attempt") || !strings.Contains(out, "UNABLE_TO_LOCK_ROW") {
		t.Errorf("status of the retrying call:\n%s", out)
	}
	code, out, _ = status(parked)
	if code != 0 || !strings.Contains(out, "state:     parked") || !strings.Contains(out, "connection is broken") {
		t.Errorf("status of the parked call:\n%s", out)
	}
	code, out, _ = status(dead)
	if code != 0 || !strings.Contains(out, "state:     dead") || !strings.Contains(out, "FIELD_CUSTOM_VALIDATION_EXCEPTION") {
		t.Errorf("status of the dead call:\n%s", out)
	}
	deadStatus := out
	code, _, stderr = status(never)
	if code != 1 || !strings.Contains(stderr, "MiiTel has not sent this call") {
		t.Errorf("status of a call MiiTel never sent: exit %d\n%s", code, stderr)
	}
	code, out, _ = status("--since", "1h", "--state", "dead", "--rep", repEmail)
	if code != 0 || !strings.Contains(out, dead+"-d") || strings.Contains(out, written+"-d") || !strings.Contains(out, "1 call detail(s)") {
		t.Errorf("status --state dead --rep:\n%s", out)
	}
	if code, body := s.adminGet(t, "/admin/calls?state=dead&since=1h", adminReadOnly); code != http.StatusOK || !strings.Contains(body, dead+"-d") || strings.Contains(body, written+"-d") {
		t.Errorf("GET /admin/calls?state=dead: %d %s", code, body)
	}

	// Fix the cause (the validation fault is used up), then replay by selector.
	replayCLI := func(args ...string) (int, string, string) {
		return runCLI(t, s.getenv, append([]string{"replay", "--config", s.cfgPath}, args...)...)
	}
	before := s.sf.Count("collection")
	// The command status prints for a dead call works as printed: a dry run of that call.
	hint := regexp.MustCompile("`miitel-crm-sync replay ([^`]*)`").FindStringSubmatch(deadStatus)
	if hint == nil {
		t.Fatalf("status of the dead call names no replay command:\n%s", deadStatus)
	}
	code, out, stderr = replayCLI(strings.Fields(hint[1])...)
	if code != 0 || !strings.Contains(out, dead+"-d") || !strings.Contains(out, "would_send") || !strings.Contains(out, "1 selected") {
		t.Errorf("status's hint %q: exit %d\n%s%s", hint[0], code, out, stderr)
	}
	code, out, stderr = replayCLI("--class", "permanent", "--dry-run")
	if code != 0 || !strings.Contains(out, dead+"-d") || !strings.Contains(out, "would_send") || !strings.Contains(out, "dry run, nothing sent") {
		t.Errorf("replay --dry-run: exit %d\n%s%s", code, out, stderr)
	}
	if n := s.sf.Count("collection"); n != before || s.callState(t, dead) != "dead" {
		t.Errorf("a dry run sent something (collections %d -> %d) or moved the call (%s)", before, n, s.callState(t, dead))
	}
	// The archived task is gone (asynq keeps at most 10,000 for 90 days): our dead letter
	// still has the call.
	if err := s.inspector(t).DeleteTask(queueName, deadTaskID(t, s, dead+"-d")); err != nil {
		t.Fatalf("delete the archived task: %v", err)
	}
	code, out, stderr = replayCLI("--code", "FIELD_CUSTOM_VALIDATION_EXCEPTION")
	if code != 0 || !strings.Contains(out, "1 queued again") {
		t.Fatalf("replay --code: exit %d\n%s%s", code, out, stderr)
	}
	code, out, _ = replayCLI("--code", "FIELD_CUSTOM_VALIDATION_EXCEPTION") // while it is queued, or after it was delivered
	if code != 0 || strings.Contains(out, "1 queued again") {
		t.Errorf("a second replay queued again:\n%s", out)
	}
	eventually(t, startTimeout, "the replayed call written", func() (bool, string) {
		got := s.callState(t, dead)
		return got == "done", got
	})
	if n := len(s.salesforceTasks(t)); n != 2 { // written and the replayed one; salesforceTasks fails on duplicates
		t.Errorf("%d Tasks, want 2", n)
	}

	// Backfill: a stored payload MiiTel sent while the service was down goes through the
	// receiver's checks; sending the file twice queues it once.
	lines := string(withIDs(t, analysis, "op-backfill", "op-backfill-d")) + "\n" + `{"challenge":"abc"}` + "\n" + `{"call":{}}` + "\n"
	file := filepath.Join(t.TempDir(), "calls.jsonl")
	if err := os.WriteFile(file, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, _ = replayCLI("--from-file", file, "--route", salesforceRoute, "--dry-run")
	if code != 0 || !strings.Contains(out, "dry run, nothing queued: 3 line(s), 1 call detail(s) pass") || !strings.Contains(out, "1 invalid line(s)") || !strings.Contains(out, "line 3:") {
		t.Errorf("backfill --dry-run:\n%s", out)
	}
	if st := s.callState(t, "op-backfill"); st != "" {
		t.Errorf("a backfill dry run queued the call: state %q", st)
	}
	code, out, _ = replayCLI("--from-file", file, "--route", salesforceRoute)
	if code != 0 || !strings.Contains(out, "queued 1, 0 duplicate(s)") || !strings.Contains(out, "1 challenge(s) skipped, 1 invalid line(s)") || !strings.Contains(out, "line 3:") {
		t.Errorf("backfill:\n%s", out)
	}
	code, out, _ = replayCLI("--from-file", file, "--route", salesforceRoute)
	if code != 0 || !strings.Contains(out, "queued 0, 1 duplicate(s)") {
		t.Errorf("backfill again:\n%s", out)
	}
	eventually(t, startTimeout, "the backfilled call written", func() (bool, string) {
		got := s.callState(t, "op-backfill")
		return got == "done", got
	})
}

// deadTaskID is the task id of the archived task of a detail.
func deadTaskID(t *testing.T, s *stack, detailID string) string {
	t.Helper()
	tasks, err := s.inspector(t).ListArchivedTasks(queueName)
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range tasks {
		if strings.Contains(string(ti.Payload), detailID) {
			return ti.ID
		}
	}
	t.Fatalf("no archived task for %s", detailID)
	return ""
}
