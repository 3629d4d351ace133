package receiver

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// TestTaskPayloadIsNewCallEvent: the task payload the receiver assembles around the detail
// JSON it hashed is byte for byte what tasks.NewCallEvent (json.Marshal of the event)
// makes, so the worker's tasks.DecodeCallEvent reads it as before.
func TestTaskPayloadIsNewCallEvent(t *testing.T) {
	bodies := map[string][]byte{}
	for _, name := range []string{"call_analysis_completed/seed_sample.json", "call_analysis_completed/sample1.json",
		"call_analysis_completed/sample2.json", "call_summarization_completed/sample1.json", "multi_detail.json"} {
		bodies[name] = sample(t, name)
	}
	bodies["escapes and html"] = []byte(`{"call":{"id":"c<&>\u2028\"","tenant_code":"t\\u","details":[{"id":"d","call_type":"OUTGOING_CALL","tags":[{"value":"<b>&amp;\u00e9"}]}]},"team":{"z":1.50,"a":[true,null]},"n":1e3}`)
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			checkTaskPayloads(t, body, []string{"params_key"}, "route\"<x>")
		})
	}
}

// checkTaskPayloads parses body as the handler does and compares every task it would
// enqueue with what asynq's own encoding of tasks.NewCallEvent holds.
func checkTaskPayloads(t testing.TB, body []byte, keys []string, route string) {
	t.Helper()
	top, err := splitTop(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := top.parse(route, keys, fixedNow.Add(123456789*time.Nanosecond))
	if err != nil {
		t.Fatal(err)
	}
	r := &Receiver{queue: testQueueConfig()}
	ts, err := r.encodeTasks(req)
	if err != nil {
		t.Fatal(err)
	}
	for i, ev := range req.events {
		want, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		got := payloadOf(t, ts[i].Message)
		if !bytes.Equal(got, want) {
			t.Errorf("detail %d payload\n got %s\nwant %s", i, got, want)
		}
		back, err := tasks.DecodeCallEvent(asynq.NewTask(tasks.TypeCallEvent, got))
		if err != nil || back.DedupeKey != ev.DedupeKey || ts[i].ID != ev.DedupeKey {
			t.Errorf("detail %d: decoded %v %v", i, back, err)
		}
	}
}

// payloadOf reads field 2 (payload) of an encoded asynq TaskMessage.
func payloadOf(t testing.TB, msg []byte) []byte {
	t.Helper()
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			t.Fatalf("bad tag: %v", protowire.ParseError(n))
		}
		msg = msg[n:]
		m := protowire.ConsumeFieldValue(num, typ, msg)
		if m < 0 {
			t.Fatalf("bad field %d: %v", num, protowire.ParseError(m))
		}
		if num == 2 {
			v, _ := protowire.ConsumeBytes(msg)
			return v
		}
		msg = msg[m:]
	}
	t.Fatal("no payload field")
	return nil
}
