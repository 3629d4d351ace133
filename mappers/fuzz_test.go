package mappers

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzRender renders arbitrary request bodies through both shipped mappings. Whatever MiiTel
// (or anyone) sends that decodes, rendering must not panic, must not fail (a failure would
// dead-letter a real call), must yield exactly one of record or skip, and must respect the
// CRM limits. Seeds: every golden payload. `make fuzz` runs it for FUZZTIME.
func FuzzRender(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/render/*/payload.json")
	for _, p := range seeds {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"call":{"id":"x","tenant_code":"t","details":[{"id":"d","call_type":"READ_DTMF","dial_starts_at":"bad","dial_answered_at":"2024-01-01T00:00:00Z","dial_ends_at":"2023-01-01T00:00:00Z","phrases":[{"participant_id":"?","raw":[{"order":-1,"start_at":-5}]}],"participants":[{"from_to":"FROM","login_id":""}]}]}}`))
	ms := shipped(f)
	limits := map[string]int{"hs_call_body": 65536, "Subject": 255, "Description": 32000, "CallObject": 255, "CallDisposition": 255}
	f.Fuzz(func(t *testing.T, body []byte) {
		evs, err := Events("fuzz", body, received)
		if err != nil {
			return
		}
		for _, ev := range evs {
			if ev.Detail.ID == "" {
				continue // the receiver rejects a detail without an id
			}
			for name, m := range ms {
				rec, skip, err := m.Render(ev)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if (rec == nil) == (skip == nil) {
					t.Fatalf("%s: record %v, skip %v: want exactly one", name, rec, skip)
				}
				if rec == nil {
					continue
				}
				for _, fl := range rec.Fields {
					if s, ok := fl.Value.(string); ok && limits[fl.Name] > 0 && utf16Len(s) > limits[fl.Name] {
						t.Fatalf("%s: %s has %d units, limit %d", name, fl.Name, utf16Len(s), limits[fl.Name])
					}
					if fl.Value == nil {
						t.Fatalf("%s: %s has a nil value; absent fields must be omitted", name, fl.Name)
					}
				}
			}
		}
	})
}
