package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// A call posted to a receiver while no worker runs is in the call status at once: the
// receiver's enqueue script recorded it, so `status` says it is pending (received, waiting
// for a worker), not that MiiTel never sent it; a re-send shows as a duplicate.
func TestE2EStatusAtReceiptWithoutWorker(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.start(t, "receiver")
	body := withIDs(t, readSample(t, "call_analysis_completed/sample1.json"), "ack-pending", "ack-pending-d")
	s.post(t, salesforceRoute, body)
	if got := s.post(t, salesforceRoute, body); got.Duplicates != 1 {
		t.Fatalf("re-send: %+v, want a duplicate", got)
	}
	code, out, stderr := runCLI(t, s.getenv, "status", "--config", s.cfgPath, "ack-pending")
	if code != 0 || !strings.Contains(out, "state:     pending") {
		t.Fatalf("status of a call queued with no worker: exit %d\n%s\n%s", code, out, stderr)
	}
	code, out, _ = runCLI(t, s.getenv, "status", "--config", s.cfgPath, "--json", "ack-pending")
	if code != 0 || !strings.Contains(out, `"duplicates": 1`) {
		t.Errorf("status --json does not count the re-send as a duplicate:\n%s", out)
	}
}

// go-redis's own lines (here: failed dials to a Redis that is down) reach the process's
// JSON log as JSON records at warn, with component redis, never as plain text. The
// receiver runs as its own OS process: go-redis's logger is process-wide, set in main.
func TestRedisClientLogsAreJSON(t *testing.T) {
	addrs := freeAddrs(t, 3) // listen, ops, and a dead Redis
	listen, ops := addrs[0], addrs[1]
	cfg := writeConfig(t, fmt.Sprintf(`log: {level: info, format: json}
server: {listen: %q}
redis: {url: "redis://%s", dial_timeout: 200ms}
ops: {listen: %q}
routes: [{name: open, auth: {insecure: true}}]
`, listen, addrs[2], ops))
	cmd := exec.Command(os.Args[0], "receiver", "--config", cfg)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MCS_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, e2eExecEnv+"=1")
	logs := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	// /readyz makes the receiver dial Redis; go-redis logs the failed dials.
	eventually(t, startTimeout, "a go-redis dial failure in the log", func() (bool, string) {
		if resp, err := http.Get("http://" + ops + "/readyz"); err == nil {
			resp.Body.Close()
		}
		return strings.Contains(logs.String(), "failed to dial"), tail(logs.String(), 2000)
	})
	var found bool
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		line := sc.Text()
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("a log line is not JSON: %q", line)
			continue
		}
		if msg, _ := rec["msg"].(string); strings.Contains(msg, "failed to dial") {
			found = true
			if rec["level"] != "WARN" || rec["component"] != "redis" || !strings.HasPrefix(msg, "redis client: ") {
				t.Errorf("go-redis record %v, want level WARN, component redis", rec)
			}
		}
	}
	if !found {
		t.Errorf("no JSON record of the failed dial:\n%s", logs.String())
	}
}
