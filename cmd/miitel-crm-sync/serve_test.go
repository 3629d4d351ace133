package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
)

// A part that cannot be built (here the worker: its route's mapping file is missing) fails
// the start with exit 2 and leaves nothing running: the receiver, built first, never
// listened, so its port is free for the next attempt.
func TestServeBuildFailureLeavesNothingRunning(t *testing.T) {
	addr := freeAddr(t)
	cfg := writeConfig(t, fmt.Sprintf("server: {listen: %q}\nroutes: [{name: sales, mapping: /no/such/mapping.yaml, auth: {insecure: true}}]\n", addr))
	code, _, stderr := runCLI(t, nil, "serve", "--config", cfg)
	if code != exitUsage || !strings.Contains(stderr, "mapping.yaml") {
		t.Fatalf("exit %d, want 2 naming the mapping file; stderr:\n%s", code, stderr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the receiver's port is still taken after the failed start: %v", err)
	}
	ln.Close()
}

// Logs are text for a person at a terminal and JSON for a collector; log.format overrides.
func TestLoggerFormatFollowsTheTerminal(t *testing.T) {
	for _, tc := range []struct {
		format   string
		terminal bool
		text     bool
	}{
		{"auto", true, true}, {"auto", false, false}, {"json", true, false}, {"text", false, true},
	} {
		var buf bytes.Buffer
		env := &environment{stderr: &buf, isTerminal: func(w io.Writer) bool { return w == &buf && tc.terminal }}
		log, text := newLogger(env, config.Log{Level: "info", Format: tc.format})
		log.Info("hello", "k", "v")
		isJSON := json.Valid(bytes.TrimSpace(buf.Bytes()))
		if text != tc.text || isJSON == tc.text {
			t.Errorf("format %s on a terminal %v: text %v, output %q", tc.format, tc.terminal, text, buf.String())
		}
	}
	// A bytes.Buffer (or a pipe, a file) is no terminal.
	if (&environment{}).terminal(&bytes.Buffer{}) {
		t.Error("a buffer is a terminal")
	}
}

// The start-up dump is readable in both formats: a nested object in JSON, one key=value
// line per section in text.
func TestStartupConfigDumpIsReadable(t *testing.T) {
	cfg, err := config.Load("", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log, _ := newLogger(&environment{stderr: &buf}, config.Log{Level: "info", Format: "json"})
	logStart(context.Background(), log, false, "serve", cfg)
	var line struct {
		Msg    string
		Config struct {
			Server map[string]any `json:"server"`
			Routes []map[string]any
		} `json:"config"`
	}
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil || line.Msg != "starting" || line.Config.Server["listen"] != ":8080" || line.Config.Routes[0]["name"] != "default" {
		t.Errorf("JSON start line: %v\n%s", err, buf.String())
	}

	buf.Reset()
	log, _ = newLogger(&environment{stderr: &buf}, config.Log{Level: "info", Format: "text"})
	logStart(context.Background(), log, true, "serve", cfg)
	text := buf.String()
	for _, want := range []string{`msg=starting command=serve version=dev config_file=""`, "msg=configuration section=server listen=:8080 ",
		"msg=configuration section=routes[0] name=default ", "msg=configuration section=connections count=0"} {
		if !strings.Contains(text, want) {
			t.Errorf("text start lacks %q:\n%s", want, text)
		}
	}
}

// The README's two commands: `serve` with nothing configured, then `send` of MiiTel's seed
// sample to the default route; the call lands in the dry run's output, and the log says
// the contact was assumed (the dry run asks no CRM), not found.
func TestREADMETwoCommands(t *testing.T) {
	addrs := freeAddrs(t, 2)
	addr := addrs[0]
	// The README's :8080 and the ops listener's :9090 may be taken on a shared machine.
	getenv := envOf(map[string]string{"MCS_SERVER_LISTEN": addr, "MCS_OPS_LISTEN": addrs[1]})
	out, logs := &lockedBuffer{}, &lockedBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, &environment{stdout: out, stderr: logs, stdin: strings.NewReader(""), getenv: getenv}, []string{"serve"})
	}()
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("serve exited %d:\n%s", code, tail(logs.String(), 3000))
		}
	}()
	url := "http://" + addr + "/webhooks/miitel/default"
	eventually(t, startTimeout, "serve answering", func() (bool, string) {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	code, stdout, stderr := runCLI(t, nil, "send", "--url", url, seedSample)
	if code != exitOK || !strings.Contains(stdout, "seed_sample.json -> 200 OK") {
		t.Fatalf("send: exit %d\n%s\n%s", code, stdout, stderr)
	}
	eventually(t, deliveryTimeout, "the call in the dry-run output", func() (bool, string) {
		o := out.String()
		return strings.Contains(o, "--- dry-run: create calls") && strings.Contains(o, "POST https://api.hubapi.com/crm/v3/objects/calls") &&
			strings.Contains(logs.String(), `"msg":"call delivered"`), tail(o, 500)
	})
	if l := logs.String(); !strings.Contains(l, `"contact":"assumed (dry run)"`) || strings.Contains(l, "contact_found") {
		t.Errorf("the delivered line does not say the lookups were assumed:\n%s", tail(l, 2000))
	}
	if l := logs.String(); !strings.Contains(l, `"msg":"starting","command":"serve","version":"dev","config":{"log":{"level":"info","format":"auto"}`) {
		t.Errorf("the start line's config is not a nested object:\n%s", tail(l, 2000))
	}
}
