package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
)

const (
	hubspotMapping    = "../../examples/mappings/hubspot.yaml"
	salesforceMapping = "../../examples/mappings/salesforce.yaml"
	multiDetail       = "../../mappers/testdata/render/multi_detail_ivr_queue/payload.json"
	internalCall      = "../../mappers/testdata/render/internal_extension/payload.json"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMappingValidate(t *testing.T) {
	bad := writeFile(t, "bad.yaml", "version: 1\ncrm: hubspot\nobject: calls\nexternal_id: {field: x}\nfields:\n  - name: a\n    value: detal.id\n  - name: b\n    valu: 1\n")
	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     []string // substrings
		stderrLine []string // exact lines
	}{
		{"shipped mappings are valid", []string{hubspotMapping, salesforceMapping}, 0,
			[]string{hubspotMapping + ": ok (crm hubspot, object calls, version ", salesforceMapping + ": ok (crm salesforce, object Task"}, nil},
		{"every error of every file, positioned", []string{hubspotMapping, bad}, 1,
			[]string{hubspotMapping + ": ok"},
			[]string{
				bad + ":7:12: fields[0].value: unknown name detal",
				bad + ":8:5: fields[1]: set exactly one of value (an expression) or const (a constant)",
				bad + `:9:5: fields[1].valu: unknown key "valu" (known: const, create_only, html, keep_longer, max_len, name, value, when)`,
				"miitel-crm-sync mapping validate: 1 of 2 file(s) invalid",
			}},
		{"missing file", []string{"nope.yaml"}, 1, nil, []string{
			"open nope.yaml: no such file or directory",
			"miitel-crm-sync mapping validate: 1 of 1 file(s) invalid",
		}},
		{"no file is a usage error", nil, 2, nil, []string{
			"miitel-crm-sync mapping validate: name at least one file",
			"Run 'miitel-crm-sync mapping validate --help' for usage.",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, stderr := runCLI(t, nil, append([]string{"mapping", "validate"}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.code, stderr)
			}
			for _, s := range tt.stdout {
				if !strings.Contains(out, s) {
					t.Errorf("stdout lacks %q:\n%s", s, out)
				}
			}
			if tt.stderrLine != nil {
				if diff := cmp.Diff(tt.stderrLine, strings.Split(strings.TrimSpace(stderr), "\n")); diff != "" {
					t.Errorf("stderr lines (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestMappingPreview(t *testing.T) {
	code, out, stderr := runCLI(t, nil, "mapping", "preview", "--mapping", hubspotMapping, multiDetail, internalCall)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var results []previewResult
	if err := json.Unmarshal([]byte(out), &results); err != nil {
		t.Fatalf("stdout is not a JSON array of results: %v\n%s", err, out)
	}
	var got []string
	for _, r := range results {
		switch {
		case r.Record != nil:
			got = append(got, r.DetailID+" "+r.Kind+" record "+r.Record.Object+" "+r.Record.ExternalID.Value)
			if len(r.Record.Fields) == 0 || r.Record.Fields[0].Name != "hs_timestamp" || r.Record.MappingVersion == "" {
				t.Errorf("%s: incomplete record %+v", r.DetailID, r.Record)
			}
		case r.Skip != nil:
			got = append(got, r.DetailID+" "+r.Kind+" skip "+r.Skip.Reason)
		default:
			got = append(got, r.DetailID+" error "+r.Error)
		}
	}
	want := []string{
		"018c3000-0000-7000-8000-000000000011 ivr record calls 018c3000-0000-7000-8000-000000000011",
		"018c3000-0000-7000-8000-000000000012 analysis record calls 018c3000-0000-7000-8000-000000000012",
		"018c3000-0000-7000-8000-000000000013 missed record calls 018c3000-0000-7000-8000-000000000013",
		"018c2000-0000-7000-8000-000000000003 analysis skip internal extension call between reps (no customer on the line)",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("preview (-want +got):\n%s", diff)
	}
	if !strings.Contains(stderr, "018c2000-0000-7000-8000-000000000003 skipped: internal extension call") {
		t.Errorf("stderr does not say why the detail was skipped:\n%s", stderr)
	}
	if !strings.Contains(out, `<a href=\"https://miitel-test.miitel.jp/app/calls/`) {
		t.Error("HTML bodies must be printed unescaped")
	}
}

func TestMappingPreviewStdinAndFailures(t *testing.T) {
	body, err := os.ReadFile(multiDetail)
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := run(context.Background(), &environment{stdout: &out, stderr: &errb, stdin: bytes.NewReader(body), getenv: func(string) string { return "" }},
		[]string{"mapping", "preview", "--builtin", "salesforce", "--route", "sales", "-"})
	if code != 0 || strings.Count(out.String(), `"object": "Task"`) != 3 {
		t.Fatalf("stdin preview: exit %d\n%s\n%s", code, out.String(), errb.String())
	}

	// Bodies the receiver answers 400 (or as a handshake) fail with the receiver's message,
	// without the receiver's package prefix (it means nothing to the admin previewing).
	for _, tc := range []struct{ name, body, want string }{
		{"video", `{"video": {"id": "v1"}}`, "video_analysis_completed events (MiiTel video meetings) are not call history; this service syncs calls"},
		{"no detail id", `{"call": {"id": "c", "tenant_code": "t", "details": [{"call_type": "OUTGOING_CALL"}]}}`, "call.details[0].id is required"},
		{"challenge", `{"challenge": "abc"}`, "a challenge (the webhook setup handshake), not a call"},
	} {
		code, stdout, stderr := runCLI(t, nil, "mapping", "preview", "--builtin", "hubspot", writeFile(t, "p.json", tc.body))
		var results []previewResult
		_ = json.Unmarshal([]byte(stdout), &results)
		if code != 1 || len(results) != 1 || results[0].Error != tc.want || !strings.Contains(stderr, "1 payload(s) or detail(s) failed") {
			t.Errorf("%s: exit %d, want 1 with error %q\n%s\n%s", tc.name, code, tc.want, stdout, stderr)
		}
	}

	for _, args := range [][]string{
		{"mapping", "preview", multiDetail},
		{"mapping", "preview", "--builtin", "hubspot", "--mapping", hubspotMapping, multiDetail},
		{"mapping", "preview", "--builtin", "hubspot"},
		{"mapping", "frobnicate"},
		{"mapping"},
		{"mapping", "example", "zoho"},
	} {
		if code, _, stderr := runCLI(t, nil, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage); stderr:\n%s", args, code, stderr)
		}
	}

	bad := writeFile(t, "bad.yaml", "version: 1\n")
	code, _, stderr := runCLI(t, nil, "mapping", "preview", "--mapping", bad, multiDetail)
	if code != 1 || !strings.Contains(stderr, bad+`:1:1: missing required key "crm"`) {
		t.Errorf("invalid mapping: exit %d, stderr:\n%s", code, stderr)
	}
}

func TestMappingSchemaAndExample(t *testing.T) {
	code, out, _ := runCLI(t, nil, "mapping", "schema")
	want, err := mappers.Schema()
	if err != nil {
		t.Fatal(err)
	}
	committed, err := os.ReadFile("../../docs/mapping.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 || out != string(want) || out != string(committed) {
		t.Errorf("mapping schema: exit %d; equals generated %v, equals committed %v", code, out == string(want), out == string(committed))
	}

	code, out, _ = runCLI(t, nil, "mapping", "example", "salesforce")
	src, err := os.ReadFile(salesforceMapping)
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 || out != string(src) {
		t.Errorf("mapping example salesforce: exit %d, output differs from %s", code, salesforceMapping)
	}
}
