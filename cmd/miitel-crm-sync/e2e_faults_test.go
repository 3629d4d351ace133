package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce/salesforcefake"
)

// postRest sends every sample but the first to both routes and returns how many tasks the
// receiver queued.
func postRest(t *testing.T, s *stack) int {
	t.Helper()
	queued := 0
	for _, name := range samplePayloads[1:] {
		body := readSample(t, name)
		for _, route := range []string{hubspotRoute, salesforceRoute} {
			queued += s.post(t, route, body).Queued
		}
	}
	return queued
}

// Halfway through, the access tokens of both CRMs expire, HubSpot answers a storm of 429s
// and Salesforce reports its API allowance used up for a moment. Every call still ends in
// each CRM exactly once, and throttling does not use up the tasks' retries.
func TestE2EStormAndTokenExpiryEndWithEveryCallOnce(t *testing.T) {
	t.Parallel()
	// max_retry 3: should throttling or an expired token count as failed attempts beyond a
	// few, the calls end in the dead letter and waitDelivered fails.
	s := newStack(t, stackOptions{hubspotOAuth: true, maxRetry: 3})
	s.start(t, "serve")
	s.postBoth(t, readSample(t, samplePayloads[0]))
	s.waitDelivered(t)
	hsTokens, sfTokens := s.hs.TokenRequests(), s.sf.Count(salesforcefake.OpToken)

	const hsStorm, sfStorm = 4, 4
	s.hs.ExpireAccessTokens()
	s.hs.Inject429(hsStorm)
	s.sf.ExpireSessions()
	s.sf.Fail(sfStorm, salesforcefake.Fault{Status: 403, Code: "REQUEST_LIMIT_EXCEEDED", Message: "TotalRequests Limit exceeded."})
	if postRest(t, s) == 0 {
		t.Fatal("nothing queued")
	}
	s.waitDelivered(t)
	checkCalls(t, s, sampleCalls)

	// The faults really happened, and were got over the way the CRMs want it.
	if n := s.hs.TokenRequests(); n <= hsTokens {
		t.Errorf("HubSpot token endpoint: %d requests before the expiry, %d after; want a refresh", hsTokens, n)
	}
	if n := s.sf.Count(salesforcefake.OpToken); n <= sfTokens {
		t.Errorf("Salesforce token endpoint: %d requests before the expiry, %d after; want a new token", sfTokens, n)
	}
	for _, c := range []struct {
		conn, code string
		min        float64
	}{{"hs", "429", hsStorm}, {"sf", "403", sfStorm}} { // a 401 is resent at once with a new token: the token counts above show it
		if n := s.metric(t, "mcs_crm_http_responses_total", map[string]string{"connection": c.conn, "code": c.code}); n < c.min {
			t.Errorf("connection %s: %v responses with status %s, want at least %v", c.conn, n, c.code, c.min)
		}
	}
	if n := s.metric(t, "mcs_worker_tasks_total", map[string]string{"outcome": "throttled"}); n < 1 {
		t.Errorf("no task attempt was counted as throttled")
	}
	if n := s.metric(t, "mcs_worker_tasks_total", map[string]string{"outcome": "dead"}); n != 0 {
		t.Errorf("%v task attempts ended in the dead letter", n)
	}
}

// An admin revokes the app's access in both CRMs while calls keep coming. The calls wait
// (parked in asynq's retry set, their retries untouched, not dead-lettered), the connections
// are reported broken, and once an admin reconnects (`oauth connect` stores a new refresh
// token) every parked call is written exactly once.
func TestE2ERevokedRefreshTokenParksCallsUntilReconnected(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{hubspotOAuth: true, salesforceFlow: "refresh_token", maxRetry: 3})
	s.start(t, "serve")
	s.postBoth(t, readSample(t, samplePayloads[0]))
	s.waitDelivered(t)

	// Uninstalling the HubSpot app revokes its refresh and access tokens (the fake does
	// both). Revoking a Salesforce connected app's refresh token ends its sessions too; the
	// fake's revoke leaves sessions alone, so they are ended here.
	s.hs.RevokeRefreshTokens()
	s.sf.RevokeRefreshTokens()
	s.sf.ExpireSessions()
	queued := postRest(t, s)

	ctx := context.Background()
	in := s.inspector(t)
	hsStore, sfStore := crm.NewTokenStore(s.rdb, "hs"), crm.NewTokenStore(s.rdb, "sf")
	eventually(t, deliveryTimeout, "every call parked and both connections broken", func() (bool, string) {
		qi, err := in.GetQueueInfo(queueName)
		if err != nil {
			return false, err.Error()
		}
		if qi.Archived > 0 {
			t.Fatalf("%d call(s) dead-lettered while the connection was broken:\n%s", qi.Archived, deadLetters(in))
		}
		hsBroken, _ := hsStore.Broken(ctx)
		sfBroken, _ := sfStore.Broken(ctx)
		return qi.Retry == queued && hsBroken != nil && sfBroken != nil,
			fmt.Sprintf("%d of %d tasks in retry (pending %d active %d); broken: hubspot %v salesforce %v",
				qi.Retry, queued, qi.Pending, qi.Active, hsBroken != nil, sfBroken != nil)
	})
	parked, err := in.ListRetryTasks(queueName)
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range parked {
		if task.Retried >= task.MaxRetry {
			t.Errorf("task %s: retried %d of %d: a broken connection must not use up retries", task.ID, task.Retried, task.MaxRetry)
		}
		// Parked, not hammering the token endpoint: the next attempt is minutes away.
		if wait := time.Until(task.NextProcessAt); wait < time.Minute {
			t.Errorf("task %s: next attempt in %s, want it parked for minutes (%s)", task.ID, wait.Round(time.Millisecond), task.LastErr)
		}
	}
	for _, conn := range []string{"hs", "sf"} {
		if v := s.metric(t, "mcs_crm_connection_broken", map[string]string{"connection": conn}); v != 1 {
			t.Errorf("mcs_crm_connection_broken{connection=%q} = %v, want 1", conn, v)
		}
	}
	if n, m := len(s.hs.Calls()), len(s.sf.Tasks()); n != 1 || m != 1 {
		t.Errorf("while broken the CRMs got new activities: HubSpot %d calls, Salesforce %d Tasks; want the first call only", n, m)
	}

	// The admin reconnects, as `oauth connect hubspot|salesforce` does.
	if err := hsStore.SaveRefreshToken(ctx, s.hs.IssueRefreshToken()); err != nil {
		t.Fatal(err)
	}
	if err := sfStore.SaveRefreshToken(ctx, s.sf.IssueRefreshToken(salesforcefake.IntegrationUsername)); err != nil {
		t.Fatal(err)
	}
	// The parked calls would be attempted again when their wait (crm BrokenRetryAfter, 5
	// minutes) is over; run them now rather than wait, as an operator may.
	if n, err := in.RunAllRetryTasks(queueName); err != nil || n != queued {
		t.Fatalf("run parked tasks: %d, %v; want %d", n, err, queued)
	}
	s.waitDelivered(t)
	checkCalls(t, s, sampleCalls)
	for _, conn := range []string{"hs", "sf"} {
		if v := s.metric(t, "mcs_crm_connection_broken", map[string]string{"connection": conn}); v != 0 {
			t.Errorf("after reconnecting, mcs_crm_connection_broken{connection=%q} = %v, want 0", conn, v)
		}
	}
}
