package mappers

import (
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/miitel-crm-sync/miitel-crm-sync/examples"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
)

func TestEvents(t *testing.T) {
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	readPayload := func(name string) string {
		b, err := examples.Payload(name)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	tests := []struct {
		name    string
		body    string
		kinds   []miitel.Kind
		payload map[string]any
		err     string
	}{
		{name: "analysis with an additional-payload key", body: read("testdata/render/seed_sample/payload.json"),
			kinds: []miitel.Kind{miitel.KindAnalysis}, payload: map[string]any{"params_key": "z&aH+&Kz8saC"}},
		{name: "minutes event", body: read("testdata/render/minutes_sample1/payload.json"),
			kinds: []miitel.Kind{miitel.KindMinutes}, payload: map[string]any{"ip_restricted": true}},
		{name: "one event per detail", body: read("testdata/render/multi_detail_ivr_queue/payload.json"),
			kinds: []miitel.Kind{miitel.KindIVR, miitel.KindAnalysis, miitel.KindMissed}, payload: map[string]any{"tenant_extra": "route-a"}},
		{name: "MiiTel's video analysis event is not a call", body: readPayload("video_analysis_completed/sample1.json"), err: `no "call" object`},
		{name: "the setup handshake is not a call", body: `{"challenge": "abc"}`, err: "a challenge request"},
		{name: "a null call is no call", body: `{"call": null, "params_key": "x"}`, err: `no "call" object`},
		{name: "a call that is not an object", body: `{"call": []}`, err: "mappers: payload: call: json: cannot unmarshal array"},
		{name: "not an object", body: `[{"call": {}}]`, err: "mappers: payload: json: cannot unmarshal array"},
		{name: "not JSON", body: `{"call": `, err: "mappers: payload: unexpected end of JSON input"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, err := Events("r1", []byte(tt.body), received)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var kinds []miitel.Kind
			for _, ev := range evs {
				kinds = append(kinds, ev.Kind)
				if ev.Route != "r1" || ev.CallID == "" || ev.TenantCode == "" || !ev.ReceivedAt.Equal(received) || ev.Detail.ID == "" {
					t.Errorf("incomplete event %+v", ev)
				}
				if diff := cmp.Diff(tt.payload, ev.Payload); diff != "" {
					t.Errorf("payload (-want +got):\n%s", diff)
				}
			}
			if diff := cmp.Diff(tt.kinds, kinds); diff != "" {
				t.Errorf("kinds (-want +got):\n%s", diff)
			}
		})
	}
}
