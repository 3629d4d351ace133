package main

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
)

// The operator docs (README "Operating it", docs/helm.md's cluster operations, the chart's
// alert texts and install notes) print status and replay commands for people to paste
// while something is wrong. Each must name a real subcommand with flags the CLI takes:
// these texts once told operators `replay list --since 30m --error-code X` and `replay run
// --dry-run`, which the CLI refuses.
func TestOperatorDocsCommandsParse(t *testing.T) {
	sources := []struct{ file, from, to string }{
		{"../../README.md", "\n## Operating it", ""},
		{"../../docs/helm.md", "\n## Operating it in the cluster", "\n## Scaling"},
		{"../../charts/miitel-crm-sync/templates/prometheusrule.yaml", "", ""},
		{"../../charts/miitel-crm-sync/templates/NOTES.txt", "", ""},
	}
	// A command after the binary's name, up to what ends it in prose or a shell line; and
	// an inline code span that is a bare command (the README's alert table). Spans listing
	// alternatives (`a | b`) are synopses, not commands.
	full := regexp.MustCompile("miitel-crm-sync ((?:status|replay)(?: [^`\\n'\"#<(|]*)?)")
	span := regexp.MustCompile("`((?:status|replay) [^`|]*)`")
	templ := regexp.MustCompile(`\{\{[^}]*\}\}`)
	seen := 0
	for _, src := range sources {
		b, err := os.ReadFile(src.file)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		if src.from != "" {
			i := strings.Index(text, src.from)
			if i < 0 {
				t.Fatalf("%s has no %q", src.file, strings.TrimSpace(src.from))
			}
			text = text[i:]
		}
		if src.to != "" {
			if i := strings.Index(text, src.to); i > 0 {
				text = text[:i]
			}
		}
		// The chart's {{ $cfg }} and helm.md's $C stand for --config FILE.
		text = templ.ReplaceAllString(text, "--config FILE")
		text = strings.ReplaceAll(text, "$C ", "--config FILE ")
		text = strings.ReplaceAll(text, "\\\n", " ")
		var cmds []string
		for _, m := range full.FindAllStringSubmatch(text, -1) {
			cmds = append(cmds, m[1])
		}
		for _, m := range span.FindAllStringSubmatch(text, -1) {
			cmds = append(cmds, m[1])
		}
		for _, c := range cmds {
			args := strings.Fields(c)
			env := &environment{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, getenv: func(string) string { return "" }}
			root := newRootCmd(env)
			cmd, rest, err := root.Find(args)
			if err == nil {
				err = cmd.ParseFlags(rest)
			}
			if err != nil {
				t.Errorf("%s: `%s` does not parse: %v", src.file, c, err)
			}
			seen++
		}
	}
	if seen < 20 {
		t.Errorf("found only %d status/replay commands in the operator docs; the extraction is broken", seen)
	}
}
