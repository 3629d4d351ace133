package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// Flags may come before or after the positional arguments, as in every cobra CLI.
func TestFlagsAfterArguments(t *testing.T) {
	srv, seen := fakeReceiver(t, ok200)
	code, stdout, stderr := runCLI(t, nil, "send", seedSample, "--url", srv.URL+"/webhooks/miitel/x", "--header", "Authorization: Bearer t")
	if code != exitOK || len(seen()) != 1 || seen()[0].Auth != "Bearer t" || !strings.Contains(stdout, "seed_sample.json -> 200 OK") {
		t.Errorf("send FILE --url URL: exit %d, %d requests\n%s\n%s", code, len(seen()), stdout, stderr)
	}

	code, stdout, stderr = runCLI(t, nil, "mapping", "preview", multiDetail, "--builtin", "salesforce", "--route", "sales")
	if code != exitOK || strings.Count(stdout, `"object": "Task"`) != 3 {
		t.Errorf("mapping preview FILE --builtin NAME: exit %d\n%s", code, stderr)
	}

	// A parent's persistent flag goes before or after the subcommand.
	cfg := writeConfig(t, "routes: [{name: a, auth: {insecure: true}}]\n")
	for _, args := range [][]string{{"replay", "--config", cfg, "stats"}, {"replay", "stats", "--config", cfg}} {
		if code, _, stderr := runCLI(t, nil, args...); code != exitUsage || !strings.Contains(stderr, "miitel-crm-sync replay stats: no Redis configured") {
			t.Errorf("%v: exit %d, stderr %q; want the config read (no Redis in it)", args, code, stderr)
		}
	}
}

// The gh layout: a command's NewCmd only parses flags into its options; run gets them.
func TestSendCmdParsesFlagsIntoOptions(t *testing.T) {
	var got *sendOptions
	env := &environment{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, getenv: func(string) string { return "" }}
	cmd := newSendCmd(env, func(_ context.Context, o *sendOptions) error { got = o; return nil })
	cmd.SetArgs([]string{seedSample, "--url", "http://127.0.0.1:1/x", "--count", "3", "--payload", "params_key=k", "--rate", "120/m"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if got == nil || got.url != "http://127.0.0.1:1/x" || got.count != 3 || got.rate != 2 || got.payload["params_key"] != "k" ||
		len(got.files) != 1 || len(got.bodies) != 1 || !got.repeat {
		t.Errorf("options = %+v", got)
	}
}

// --help prints on stdout and exits 0, at every level, and spells flags as they are typed.
func TestHelpOnStdout(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"help"}, {"-h"}, {"serve", "--help"}, {"check", "--help"}, {"config", "--help"},
		{"mapping", "--help"}, {"mapping", "validate", "--help"}, {"replay", "run", "--help"},
		{"oauth", "connect", "--help"}, {"help", "send"},
	} {
		code, stdout, stderr := runCLI(t, nil, args...)
		if code != exitOK || stderr != "" || !strings.Contains(stdout, "Usage:") {
			t.Errorf("%v: exit %d, stderr %q, stdout:\n%s", args, code, stderr, stdout)
		}
		if m := regexp.MustCompile(`(^|\s)-[a-z]{2,}`).FindString(stdout); m != "" {
			t.Errorf("%v: help spells a flag with one dash: %q", args, m)
		}
	}
	_, stdout, _ := runCLI(t, nil, "serve", "--help")
	if !strings.Contains(stdout, "--config string") {
		t.Errorf("serve --help does not show --config:\n%s", stdout)
	}
	_, stdout, _ = runCLI(t, nil, "--help")
	for _, c := range []string{"serve", "receiver", "worker", "send", "check", "mapping", "oauth", "replay", "config", "version", "completion"} {
		if !regexp.MustCompile(`(?m)^  ` + c + `\s`).MatchString(stdout) {
			t.Errorf("root help does not list %s:\n%s", c, stdout)
		}
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"version"}} {
		code, stdout, _ := runCLI(t, nil, args...)
		if code != exitOK || stdout != version+"\n" {
			t.Errorf("%v: exit %d, %q; want %q", args, code, stdout, version+"\n")
		}
	}
}

func TestCompletion(t *testing.T) {
	for shell, marker := range map[string]string{
		"bash": "__start_miitel-crm-sync", "zsh": "#compdef miitel-crm-sync", "fish": "complete -c miitel-crm-sync",
		"powershell": "Register-ArgumentCompleter",
	} {
		code, stdout, stderr := runCLI(t, nil, "completion", shell)
		if code != exitOK || !strings.Contains(stdout, marker) {
			t.Errorf("completion %s: exit %d, stderr %q, no %q in the script", shell, code, stderr, marker)
		}
	}
	// The completion a shell asks for: subcommands, and the values of --role.
	_, stdout, _ := runCLI(t, nil, "__complete", "map")
	if !strings.Contains(stdout, "mapping") {
		t.Errorf("completing 'map': %q", stdout)
	}
	_, stdout, _ = runCLI(t, nil, "__complete", "config", "--role", "")
	if !strings.Contains(stdout, "receiver") || !strings.Contains(stdout, "worker") {
		t.Errorf("completing --role: %q", stdout)
	}
}

// Usage errors exit 2 with one line saying what is wrong, prefixed once by the command.
func TestUsageErrorsExit2(t *testing.T) {
	tests := []struct {
		args []string
		line string
	}{
		{[]string{"send", "--frob"}, "miitel-crm-sync send: unknown flag: --frob"},
		{[]string{"send", "--url"}, "miitel-crm-sync send: flag needs an argument: --url"},
		{[]string{"send", "--concurrency", "many", "--url", "http://x/y", seedSample}, `miitel-crm-sync send: invalid argument "many" for "--concurrency" flag`},
		{[]string{"frobnicate"}, `miitel-crm-sync: unknown command "frobnicate"`},
		{[]string{"sevre"}, "did you mean serve?"},
		{[]string{"mapping", "frobnicate"}, `miitel-crm-sync mapping: unknown command "frobnicate" (example, preview, schema, validate)`},
		{[]string{"serve", "extra"}, `miitel-crm-sync serve: unknown command "extra" for "miitel-crm-sync serve"`},
		{[]string{"config", "--role", "admin"}, `miitel-crm-sync config: --role "admin" is not serve, receiver or worker`},
		{[]string{}, "miitel-crm-sync: a command is required"},
	}
	for _, tt := range tests {
		code, stdout, stderr := runCLI(t, nil, tt.args...)
		if code != exitUsage || !strings.Contains(stderr, tt.line) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tt.args, code, stderr, tt.line)
		}
		if stdout != "" {
			t.Errorf("%v: a usage error printed on stdout: %q", tt.args, stdout)
		}
	}
}

// Every error line names its command once and says what is wrong, without a second prefix
// for the same thing ("mapping: mapping validate:", "replay: replay:", "receiver: ...").
func TestErrorLinesDoNotStutter(t *testing.T) {
	noRedis := writeConfig(t, "routes: [{name: a, auth: {insecure: true}}]\n")
	video := writeFile(t, "video.json", `{"video": {"id": "v1"}}`)
	tests := []struct {
		args []string
		line string // the last line of stderr, exactly
	}{
		{[]string{"mapping", "validate", "nope.yaml"}, "miitel-crm-sync mapping validate: 1 of 1 file(s) invalid"},
		{[]string{"mapping", "preview", "--builtin", "hubspot", video}, `miitel-crm-sync mapping preview: 1 payload(s) or detail(s) failed (see "error" in the output)`},
		{[]string{"replay", "list", "--config", noRedis}, "Run 'miitel-crm-sync replay list --help' for usage."},
		{[]string{"replay", "show", "--config", noRedis}, "Run 'miitel-crm-sync replay show --help' for usage."},
		{[]string{"oauth", "connect", "zoho"}, "Run 'miitel-crm-sync oauth connect --help' for usage."},
		{[]string{"config", "--config", "/no/such.yaml"}, "miitel-crm-sync config: open /no/such.yaml: no such file or directory"},
	}
	prefix := regexp.MustCompile(`^miitel-crm-sync(?: [a-z]+)*: `)
	for _, tt := range tests {
		_, stdout, stderr := runCLI(t, nil, tt.args...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if got := lines[len(lines)-1]; got != tt.line {
			t.Errorf("%v: last line %q, want %q", tt.args, got, tt.line)
		}
		for _, l := range lines {
			p := prefix.FindString(l)
			if p == "" {
				continue
			}
			rest := strings.TrimPrefix(l, p)
			words := strings.Fields(strings.TrimSuffix(p, ": "))
			for _, w := range append(words[1:], "receiver", "replay", "oauth", "mapping") {
				if strings.HasPrefix(rest, w+":") || strings.HasPrefix(rest, w+" ") && strings.Contains(strings.Fields(rest)[1], ":") {
					t.Errorf("%v: stuttered error line %q", tt.args, l)
				}
			}
		}
		if strings.Contains(stdout+stderr, "receiver: call is required") {
			t.Errorf("%v: the receiver's package prefix reached the admin: %s%s", tt.args, stdout, stderr)
		}
	}
	// The two-line usage error: what is wrong, then where the help is.
	_, _, stderr := runCLI(t, nil, "replay", "show", "--config", noRedis)
	if want := "miitel-crm-sync replay show: exactly one task id, got 0 argument(s)\nRun 'miitel-crm-sync replay show --help' for usage.\n"; stderr != want {
		t.Errorf("replay show: stderr %q, want %q", stderr, want)
	}
}

// A configuration with several problems is printed one problem per line, then one line
// saying how many, naming the command.
func TestConfigProblemsOnePerLine(t *testing.T) {
	cfg := writeConfig(t, "redis: {url: \"redis://r:6379\", password: hunter2}\nroutes:\n  - {name: a, auth: {insecure: true}}\n  - {name: a, connection: nope, auth: {insecure: true}}\n")
	code, stdout, stderr := runCLI(t, nil, "config", "--config", cfg)
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if code != exitUsage || stdout != "" || len(lines) != 4 {
		t.Fatalf("exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
	for i, want := range []string{
		cfg + ":1:42: secrets must not be written in the config file",
		cfg + `:4:12: routes[1].name: "a" is used twice`,
		cfg + `:4:27: routes[1].connection: "nope" is not a configured connection`,
		"miitel-crm-sync config: the configuration has 3 problem(s)",
	} {
		if !strings.HasPrefix(lines[i], want) {
			t.Errorf("line %d = %q, want prefix %q", i+1, lines[i], want)
		}
	}
}

// `config` prints the effective configuration: the vendors' limits and cache TTLs too.
func TestConfigPrintsEffectiveValues(t *testing.T) {
	cfg := writeConfig(t, `routes: [{name: a, connection: hs, auth: {insecure: true}}]
connections:
  - name: hs
    type: hubspot
    hubspot: {private_app_token: {env: HS}}
`)
	code, stdout, stderr := runCLI(t, envOf(map[string]string{"HS": "pat-secret"}), "config", "--config", cfg, "--role", "worker")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{`"requests": 100`, `"per": "10s"`, `"search_per_second": 5`, `"lookup_ttl": "24h0m0s"`, `"miss_ttl": "5m0s"`,
		`"base_url": "https://api.hubapi.com"`, `"format": "auto"`, `"check_interval": "5m0s"`, `"private_app_token": "env:HS(***)"`} {
		if !strings.Contains(stdout, want) {
			t.Errorf("config output lacks %s:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "pat-secret") {
		t.Error("config printed a secret")
	}
}

// Scripts written for the flag package's single-dash long flags keep working, with a note.
func TestSingleDashLongFlagsStillWork(t *testing.T) {
	cfg := writeConfig(t, "routes: [{name: a, auth: {insecure: true}}]\n")
	code, stdout, stderr := runCLI(t, nil, "config", "-config", cfg, "-role=receiver")
	if code != exitOK || !strings.Contains(stdout, `"name": "a"`) || !strings.Contains(stderr, "-config is spelled --config") || !strings.Contains(stderr, "-role is spelled --role") {
		t.Errorf("exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	// An argument that only looks like one is left alone: "-" is stdin.
	if got := longFlags(newRootCmd(&environment{getenv: func(string) string { return "" }}), []string{"mapping", "preview", "-", "--", "-config"}, &bytes.Buffer{}); strings.Join(got, " ") != "mapping preview - -- -config" {
		t.Errorf("longFlags rewrote %v", got)
	}
}

// Every command has a short description and runs with the root's settings (silenced
// errors are printed by run, once).
func TestEveryCommandIsDescribed(t *testing.T) {
	root := newRootCmd(&environment{getenv: func(string) string { return "" }})
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Short == "" {
			t.Errorf("%s has no short description", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
