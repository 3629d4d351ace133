package mappers

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
)

// eval renders src as the value of a one-field mapping (with a table "t") against ev and
// returns the field's value, or nil when the field was omitted.
func eval(t *testing.T, src string, ev *miitel.Event) any {
	t.Helper()
	file := fmt.Sprintf(`version: 1
crm: salesforce
object: Task
external_id: {field: Id__c}
tables:
  t:
    default: other
    values: {a: A, "1": one, Left Message: LM}
  nodefault:
    values: {a: A}
fields:
  - name: v
    value: %q
`, src)
	m, err := Parse("eval.yaml", []byte(file))
	if err != nil {
		t.Fatalf("%s: %v", src, err)
	}
	rec, _, err := m.Render(ev)
	if err != nil {
		t.Fatalf("%s: %v", src, err)
	}
	if len(rec.Fields) == 0 {
		return nil
	}
	return rec.Fields[0].Value
}

func testEvent() *miitel.Event {
	return &miitel.Event{
		CallID: "0184f502-8b5f-b967-10c1-625c89785630", TenantCode: "miitel-test", Kind: miitel.KindAnalysis,
		ReceivedAt: received,
		Detail: miitel.Detail{
			ID: "d1", CallType: "OUTGOING_CALL",
			DialStartsAt: strp("2022-12-21T22:31:56+00:00"), DialAnsweredAt: strp("2022-12-21T22:32:29+00:00"),
			DialEndsAt: strp("2022-12-21T22:33:22.600+00:00"), CircuitNumber: strp("0501234567"), ToNumber: strp("090-1234-5678"),
			Participants: []miitel.Participant{
				{ID: "a", FromTo: "FROM", Name: strp("田中"), LoginID: strp("tanaka@example.com")},
				{ID: "b", FromTo: "TO"},
			},
			Tags:     []miitel.Tag{{Value: "x"}, {Value: "Left Message"}, {Value: ""}},
			Comments: []miitel.Comment{{CreatedBy: "田中", Value: "c1"}, {Value: "c2"}},
			Keywords: []miitel.Keyword{{Value: "k1"}, {Value: "k2"}, {Value: "k1"}},
			Phrases: []miitel.Phrase{
				{ParticipantID: "b", Raw: []miitel.PhraseItem{{Order: 1, Phrase: "えー、はい", PhraseNoFiller: "はい", StartAt: 61.9}}},
				{ParticipantID: "a", Raw: []miitel.PhraseItem{{Order: 0, Phrase: "あの、もしもし", PhraseNoFiller: "もしもし", StartAt: 0.4}},
					Summary: []miitel.PhraseItem{{Order: 0, Phrase: "もしもし", PhraseNoFiller: "もしもし"}}},
			},
			SpeechRecognition: &miitel.SpeechRecognition{Raw: "", Summary: "MiiTel summary"},
		},
	}
}

func TestBuiltins(t *testing.T) {
	tokyoNoon := time.Date(2022, 12, 21, 22, 31, 56, 0, time.UTC)
	tests := []struct {
		src  string
		want any // nil: the field is omitted
	}{
		// durations and times
		{`duration_ms(answered_at, ended_at)`, int64(53600)},
		{`duration_s(answered_at, ended_at)`, int64(54)}, // 53.6 s rounds up
		{`duration_s(detail.dial_starts_at, "2022-12-21T22:32:00+00:00")`, int64(4)},
		{`duration_ms(ended_at, answered_at)`, nil}, // end before start
		{`duration_ms(detail.queueing_answered_at, ended_at)`, nil},
		{`timestamp(started_at)`, tokyoNoon},
		{`timestamp("yesterday")`, nil},
		{`format_time(started_at, "2006-01-02 15:04")`, "2022-12-22 07:31"}, // Asia/Tokyo by default
		{`format_time(started_at, "2006-01-02 15:04", "UTC")`, "2022-12-21 22:31"},
		{`format_time(received_at, "2006-01-02")`, "2024-01-02"},
		{`format_time(detail.queueing_starts_at, "2006")`, nil},
		// phone numbers, with and without hyphens, in the default region JP
		{`phone_e164("09000000000")`, "+819000000000"},
		{`phone_e164("050-0000-0000")`, "+815000000000"},
		{`phone_e164("0312345678")`, "+81312345678"},
		{`phone_e164("03-1234-5678")`, "+81312345678"},
		{`phone_e164("+1 650 253 0000")`, "+16502530000"},
		{`phone_e164("6502530000", "US")`, "+16502530000"},
		{`phone_e164("anonymous")`, nil},
		{`phone_e164(detail.from_number)`, nil},
		{`phone_national("0312345678")`, "03-1234-5678"},
		{`phone_national(customer_number)`, "090-1234-5678"},
		// transcripts
		{`transcript(detail)`, "0:00 (田中) もしもし\n1:01 (Customer) はい"}, // raw empty: phrases without fillers
		{`transcript(detail, "phrases")`, "0:00 (田中) あの、もしもし\n1:01 (Customer) えー、はい"},
		{`transcript(detail, "phrases_nofiller", "担当", "顧客")`, "0:00 (田中) もしもし\n1:01 (顧客) はい"},
		{`transcript(detail, "summary")`, "MiiTel summary"},
		// joins
		{`join_tags(tags)`, "x, Left Message"},
		{`join_tags(filter(tags, .value != "x"), " / ")`, "Left Message"},
		{`join_comments(comments)`, "田中: c1\nc2"},
		{`join_keywords(keywords)`, "k1, k2"},
		{`join_keywords(detail.keywords[0:0])`, nil},
		{`join_nonempty(" | ", minutes, "a", "", "  ", nil, "b")`, "a | b"},
		{`join_nonempty(",", minutes)`, nil},
		{`section("Memo", join_tags(tags))`, "Memo\nx, Left Message"},
		{`section("Minutes", minutes)`, nil},
		{`nonempty(speech_recognition?.raw)`, nil},
		// truncation: counted in UTF-16 units, cut on a character, marker included
		{`truncate("あいうえお", 4)`, "あいう…"},
		{`truncate("あいうえお", 5)`, "あいうえお"},
		{`truncate("ab😀cd", 4)`, "ab…"}, // the emoji is 2 units and would not fit with the marker
		{`truncate("abcdef", 4, "...")`, "a..."},
		{`truncate("abcdef", 2, "...")`, "ab"}, // marker longer than the limit: plain cut
		{`truncate(minutes, 3)`, nil},
		{`truncate_html("a &amp; b", 6)`, "a …"},
		{`truncate_html("x<br>y", 3)`, "x…"},
		// HTML
		{`html_escape("<b>&\"'")`, "&lt;b&gt;&amp;&#34;&#39;"},
		{`html("a<\nb")`, "a&lt;<br>b"},
		{`html_section("Memo", "x & y")`, "<p><strong>Memo</strong><br>x &amp; y</p>"},
		{`html_section("Memo", minutes)`, nil},
		{`html_link("https://e.x/?a=1&b=2", "go")`, `<a href="https://e.x/?a=1&amp;b=2">go</a>`},
		{`html_link("javascript:alert(1)", "go")`, nil},
		// the MiiTel link
		{`call_url(tenant_code, call_id)`, "https://miitel-test.miitel.jp/app/calls/0184f502-8b5f-b967-10c1-625c89785630"},
		{`call_url("evil.com/x?", call_id)`, nil},
		// tables
		{`lookup("t", "a")`, "A"},
		{`lookup("t", "zzz")`, "other"},
		{`lookup("t", 1)`, "one"},
		{`lookup("t", minutes)`, "other"},
		{`lookup("nodefault", "zzz")`, nil},
		{`lookup_first("t", tags)`, "LM"},
		{`lookup_first("t", map(tags, .value))`, "LM"},
		{`lookup_first("nodefault", ["q", "a"])`, "A"},
		{`lookup_first("nodefault", ["q"])`, nil},
		// derived environment
		{`direction + "/" + outcome + "/" + (customer_number ?? "")`, "outbound/answered/090-1234-5678"},
		{`from_number`, "0501234567"}, // outgoing: MiiTel sends no from_number, the circuit is ours
		{`rep_email`, "tanaka@example.com"},
		{`customer?.from_to`, "TO"},
		{`detail.analysis?.score`, nil},
		{`payload?.missing`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			got := eval(t, tt.src, testEvent())
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("%s (-want +got):\n%s", tt.src, diff)
			}
		})
	}
}

// TestEnvDirections checks the derived facts for each call type MiiTel documents.
func TestEnvDirections(t *testing.T) {
	tests := []struct {
		callType                   string
		answered                   bool
		direction, outcome, number string
	}{
		{"OUTGOING_CALL", true, "outbound", "answered", "to"},
		{"OUTGOING_CALL", false, "outbound", "unanswered", "to"},
		{"PREDICTIVE_DIAL", false, "outbound", "unanswered", "to"},
		{"AUTOMATIC_TRANSFER", false, "outbound", "unanswered", "to"},
		{"INCOMING_CALL", true, "inbound", "answered", "from"},
		{"INCOMING_CALL", false, "inbound", "missed", "from"},
		{"QUEUEING_CALL", false, "inbound", "missed", "from"},
		{"READ_DTMF", true, "inbound", "answered", "from"},
		{"AUTOMATIC_RECORD", true, "inbound", "answered", "from"},
		{"EXTENSION_TRANSFER", false, "inbound", "missed", "from"},
		{"EXTENSION", true, "internal", "answered", ""},
		{"EXTENSION_GROUP", false, "internal", "missed", ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.callType, tt.answered), func(t *testing.T) {
			d := miitel.Detail{CallType: tt.callType, FromNumber: strp("from"), ToNumber: strp("to")}
			if tt.answered {
				d.QueueingAnsweredAt = strp("2024-01-01T00:00:00Z")
			}
			var env Env
			env.fill(&miitel.Event{Detail: d})
			got := []string{env.Direction, env.Outcome, deref(env.CustomerNumber)}
			if diff := cmp.Diff([]string{tt.direction, tt.outcome, tt.number}, got); diff != "" {
				t.Errorf("direction, outcome, customer number (-want +got):\n%s", diff)
			}
		})
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func TestTruncateNeverSplitsACharacter(t *testing.T) {
	s := strings.Repeat("a😀あ", 50)
	for limit := 0; limit <= utf16Len(s)+1; limit++ {
		got := truncate(s, limit, TruncationMarker, false)
		if n := utf16Len(got); n > limit {
			t.Fatalf("limit %d: got %d units", limit, n)
		}
		if strings.ContainsRune(got, '\uFFFD') {
			t.Fatalf("limit %d: split a character: %q", limit, got)
		}
	}
}
