package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// runCLI runs a subcommand in-process and returns its exit code, stdout and stderr.
func runCLI(t *testing.T, getenv func(string) string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	code := run(context.Background(), &environment{stdout: &out, stderr: &errb, stdin: strings.NewReader(""), getenv: getenv}, args)
	return code, out.String(), errb.String()
}

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	return writeFile(t, "config.yaml", yaml)
}

func TestReplayListsShowsAndRequeuesDeadLetters(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	// The webhook and CRM secrets are not in the environment: replay needs only Redis.
	cfg := writeConfig(t, fmt.Sprintf(`redis: {url: %q}
routes: [{name: sales, connection: hs, auth: {bearer: [{env: ROUTE_TOKEN}]}}]
connections: [{name: hs, type: hubspot, hubspot: {private_app_token: {env: HUBSPOT_TOKEN}}}]
`, srv.URL()))

	// A dead-lettered task as the worker leaves it: archived with the failure reason.
	ev := &miitel.Event{Route: "sales", CallID: "call-1", Detail: miitel.Detail{ID: "detail-1"}, Kind: miitel.KindAnalysis, DedupeKey: "dk1"}
	task, err := tasks.NewCallEvent(ev, asynq.Queue("miitel"))
	if err != nil {
		t.Fatal(err)
	}
	c := asynq.NewClientFromRedisClient(rdb)
	if _, err := c.Enqueue(task); err != nil {
		t.Fatal(err)
	}
	in := asynq.NewInspectorFromRedisClient(rdb)
	if err := in.ArchiveTask("miitel", "dk1"); err != nil {
		t.Fatal(err)
	}

	code, out, stderr := runCLI(t, nil, "replay", "--config", cfg, "list")
	if code != 0 || !strings.Contains(out, "dk1") || !strings.Contains(out, "sales") || !strings.Contains(out, "detail-1") || !strings.Contains(out, "1 dead-lettered call(s)") {
		t.Fatalf("list: code %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	code, out, _ = runCLI(t, nil, "replay", "--config", cfg, "show", "dk1")
	if code != 0 || !strings.Contains(out, `"state": "archived"`) || !strings.Contains(out, `"call_id": "call-1"`) {
		t.Fatalf("show: code %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, nil, "replay", "--config", cfg, "stats")
	if code != 0 || !strings.Contains(out, "archived") {
		t.Fatalf("stats: code %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, nil, "replay", "--config", cfg, "run", "--all", "--route", "other")
	if code != 0 || !strings.Contains(out, "0 queued again") {
		t.Fatalf("run --all --route other must select nothing: code %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, nil, "replay", "--config", cfg, "run", "--all")
	if code != 0 || !strings.Contains(out, "dk1: queued again") {
		t.Fatalf("run --all: code %d\n%s", code, out)
	}
	info, err := in.GetTaskInfo("miitel", "dk1")
	if err != nil || info.State != asynq.TaskStatePending {
		t.Fatalf("after run: %+v %v, want pending", info, err)
	}
	if code, _, _ := runCLI(t, nil, "replay", "--config", cfg, "run", "nope"); code != 1 {
		t.Errorf("run of an unknown id: exit %d, want 1", code)
	}
}

func TestReplayUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"replay"},
		{"replay", "frobnicate"},
		{"replay", "run"},
		{"replay", "show"},
	} {
		cfg := writeConfig(t, "redis: {url: \"redis://127.0.0.1:1\"}\nroutes: [{name: a, auth: {insecure: true}}]\n")
		full := append([]string{args[0], "--config", cfg}, args[1:]...)
		if code, _, stderr := runCLI(t, nil, full...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage)\n%s", args, code, stderr)
		}
	}
	if code, _, stderr := runCLI(t, nil, "replay", "list"); code != 2 || !strings.Contains(stderr, "no Redis configured") {
		t.Errorf("replay without redis: exit %d\n%s", code, stderr)
	}
}

// run --all collects every dead-lettered call of the route, over several pages of the
// archive, before it runs any.
func TestReplayRunAllPagesThroughTheArchive(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	cfg := writeConfig(t, fmt.Sprintf("redis: {url: %q}\nroutes: [{name: sales, auth: {insecure: true}}, {name: other, auth: {insecure: true}}]\n", srv.URL()))
	c := asynq.NewClientFromRedisClient(rdb)
	const sales, other = archivePageSize + 3, 5
	for i := range sales + other {
		route := "sales"
		if i < other {
			route = "other"
		}
		ev := &miitel.Event{Route: route, CallID: "c", Detail: miitel.Detail{ID: fmt.Sprint(i)}, Kind: miitel.KindAnalysis, DedupeKey: fmt.Sprint("dk", i)}
		task, err := tasks.NewCallEvent(ev, asynq.Queue("miitel"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Enqueue(task); err != nil {
			t.Fatal(err)
		}
	}
	in := asynq.NewInspectorFromRedisClient(rdb)
	if n, err := in.ArchiveAllPendingTasks("miitel"); err != nil || n != sales+other {
		t.Fatalf("archived %d, %v", n, err)
	}
	code, out, stderr := runCLI(t, nil, "replay", "--config", cfg, "run", "--all", "--route", "sales")
	if code != 0 || !strings.Contains(out, fmt.Sprintf("%d queued again, 0 failed", sales)) {
		t.Fatalf("run --all --route sales: exit %d\n%s\n%s", code, tail(out, 300), stderr)
	}
	qi, err := in.GetQueueInfo("miitel")
	if err != nil || qi.Pending != sales || qi.Archived != other {
		t.Errorf("after the run: %+v %v; want %d pending and the other route's %d still archived", qi, err, sales, other)
	}
}
