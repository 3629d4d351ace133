package mappers

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
)

var update = flag.Bool("update", false, "rewrite golden files (testdata/render/*/want.json) and docs/mapping.schema.json")

// received is the receive time of every test event, so goldens do not depend on the clock.
var received = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

func shipped(t testing.TB) map[string]*Mapping {
	t.Helper()
	ms := map[string]*Mapping{}
	for _, name := range []string{"hubspot", "salesforce"} {
		m, err := Builtin(name)
		if err != nil {
			t.Fatalf("shipped mapping %s: %v", name, err)
		}
		ms[name] = m
	}
	return ms
}

type goldenDetail struct {
	DetailID string  `json:"detail_id"`
	Kind     string  `json:"kind"`
	Record   *Record `json:"record,omitempty"`
	Skip     *Skip   `json:"skip,omitempty"`
	Error    string  `json:"error,omitempty"`
}

func marshal(t testing.TB, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // bodies are HTML: keep goldens readable
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestGolden renders every payload under testdata/render through both shipped mappings and
// compares with want.json (go test -run TestGolden -update rewrites them).
func TestGolden(t *testing.T) {
	ms := shipped(t)
	dirs, err := filepath.Glob("testdata/render/*")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no golden cases: %v", err)
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			body, err := os.ReadFile(filepath.Join(dir, "payload.json"))
			if err != nil {
				t.Fatal(err)
			}
			evs, err := Events("golden", body, received)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string][]goldenDetail{}
			for name, m := range ms {
				for _, ev := range evs {
					rec, skip, err := m.Render(ev)
					if (rec == nil) == (skip == nil) && err == nil {
						t.Fatalf("%s: detail %s: want exactly one of record and skip, got %v and %v", name, ev.Detail.ID, rec, skip)
					}
					g := goldenDetail{DetailID: ev.Detail.ID, Kind: string(ev.Kind), Record: rec, Skip: skip}
					if err != nil {
						g.Error = err.Error()
					}
					if rec != nil {
						if rec.MappingVersion != m.Version() || len(m.Version()) != 16 {
							t.Errorf("%s: mapping_version %q, want %q", name, rec.MappingVersion, m.Version())
						}
						rec.MappingVersion = "(version)" // goldens must not churn with every mapping edit
					}
					got[name] = append(got[name], g)
				}
			}
			gotJSON := marshal(t, got)
			wantPath := filepath.Join(dir, "want.json")
			if *update {
				if err := os.WriteFile(wantPath, gotJSON, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(wantPath)
			if err != nil {
				t.Fatalf("%v (run go test -run TestGolden -update to create it)", err)
			}
			if diff := cmp.Diff(strings.Split(string(want), "\n"), strings.Split(string(gotJSON), "\n")); diff != "" {
				t.Errorf("%s mismatch (-want +got), rerun with -update if intended:\n%s", wantPath, diff)
			}
		})
	}
}

func fieldValue(rec *Record, name string) (any, bool) {
	for _, f := range rec.Fields {
		if f.Name == name {
			return f.Value, true
		}
	}
	return nil, false
}

// TestShippedLimits checks every CRM limit from CRM.md on a call long enough to exceed them
// all: a huge transcript, hundreds of memos, emoji (2 UTF-16 units each) and HTML specials.
func TestShippedLimits(t *testing.T) {
	ms := shipped(t)
	body, err := os.ReadFile("testdata/render/analysis_sample1/payload.json")
	if err != nil {
		t.Fatal(err)
	}
	evs, err := Events("limits", body, received)
	if err != nil {
		t.Fatal(err)
	}
	ev := evs[0]
	ev.Detail.SpeechRecognition.Raw = strings.Repeat("0:01 (取引先) お世話になります 😀 <&> 見積もりの件です。\n", 4000)
	for i := range 300 {
		ev.Detail.Tags = append(ev.Detail.Tags, miitel.Tag{Value: "長いメモ😀" + strings.Repeat("あ", i%7)})
	}
	limits := map[string]map[string]int{
		"hubspot":    {"hs_call_body": 65536},
		"salesforce": {"Subject": 255, "Description": 32000, "CallDisposition": 255, "CallObject": 255},
	}
	for name, m := range ms {
		rec, _, err := m.Render(ev)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for field, limit := range limits[name] {
			v, ok := fieldValue(rec, field)
			if !ok {
				t.Errorf("%s: %s missing", name, field)
				continue
			}
			s := v.(string)
			if n := utf16Len(s); n > limit {
				t.Errorf("%s: %s is %d UTF-16 units, limit %d", name, field, n, limit)
			}
			if !utf8.ValidString(s) {
				t.Errorf("%s: %s was cut inside a character", name, field)
			}
		}
		if v, _ := fieldValue(rec, "hs_call_body"); v != nil {
			s := v.(string)
			if !strings.HasSuffix(s, TruncationMarker) {
				t.Errorf("hubspot: body does not end with the truncation marker: ...%q", s[len(s)-40:])
			}
			if i := strings.LastIndexAny(s, "<&"); i >= 0 && !strings.ContainsAny(s[i:], ">;") {
				t.Errorf("hubspot: body ends inside a tag or entity: ...%q", s[i:])
			}
			if strings.Contains(s, "<&>") {
				t.Error("hubspot: transcript not HTML-escaped")
			}
		}
	}
}

// TestRenderErrorNamesTheExpression: an expression that passes every probe shape but fails on
// a real call (here an additional-payload value that is not a number) is a RenderError that
// names the field's YAML path and position, in the form docs/mapping.md shows and the worker
// puts into the dead letter.
func TestRenderErrorNamesTheExpression(t *testing.T) {
	src := head + "  - name: a\n    const: x\n  - name: level\n    value: int(payload?.level ?? \"0\") * 10\n"
	m, err := Parse("m.yaml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v (the probes carry no payload, so this must load)", err)
	}
	ev := testEvent()
	ev.Payload = map[string]any{"level": "high"}
	rec, skip, err := m.Render(ev)
	if rec != nil || skip != nil {
		t.Fatalf("Render = %v, %v; want only an error", rec, skip)
	}
	var re *RenderError
	if !errors.As(err, &re) {
		t.Fatalf("error %T %v is not a *RenderError", err, err)
	}
	got := RenderError{Path: re.Path, File: re.File, Line: re.Line, Col: re.Col}
	if want := (RenderError{Path: "fields[1].value", File: "m.yaml", Line: 9, Col: 12}); got != want {
		t.Errorf("RenderError at %+v, want %+v", got, want)
	}
	if prefix := "mappers: render fields[1].value (m.yaml:9:12): "; !strings.HasPrefix(err.Error(), prefix) {
		t.Errorf("message %q does not start with %q", err, prefix)
	}

	ev.Payload = map[string]any{"level": "3"}
	if rec, _, err := m.Render(ev); err != nil || rec.Fields[1].Value != int64(30) {
		t.Errorf("a numeric level: %v, %v; want level 30", rec, err)
	}
}

// The record key is the connection's unless a mapping names one: the shipped mappings name
// none (one source of truth, the connection's setting), and a mapping without external_id
// keys activities by detail.id.
func TestExternalIDFieldIsTheConnectionsUnlessNamed(t *testing.T) {
	for _, crm := range []string{"hubspot", "salesforce"} {
		m, err := Builtin(crm)
		if err != nil {
			t.Fatal(err)
		}
		if f := m.ExternalIDField(); f != "" {
			t.Errorf("shipped %s mapping names record key %q; the connection's setting must decide", crm, f)
		}
	}
	src := "version: 1\ncrm: salesforce\nobject: Task\nfields:\n  - {name: Subject, value: call_id}\n"
	m, err := Parse("bare.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	ev := &miitel.Event{Route: "r", CallID: "c1", TenantCode: "t", Kind: miitel.KindAnalysis, Detail: miitel.Detail{ID: "d1", CallType: "OUTGOING_CALL"}}
	rec, skip, err := m.Render(ev)
	if err != nil || skip != nil {
		t.Fatalf("render: %v, %v", skip, err)
	}
	if rec.ExternalID != (ExternalID{Value: "d1"}) {
		t.Errorf("external id %+v, want detail.id with no field", rec.ExternalID)
	}
	named, err := Parse("named.yaml", []byte(strings.Replace(src, "fields:", "external_id: {field: Other_Key__c}\nfields:", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if f := named.ExternalIDField(); f != "Other_Key__c" {
		t.Errorf("ExternalIDField() = %q, want the named Other_Key__c", f)
	}
}
