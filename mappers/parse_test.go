package mappers

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// head is the start of a valid file; cases append to it, so their line numbers start at 6.
const head = `version: 1
crm: hubspot
object: calls
external_id: {field: miitel_id}
fields:
`

// TestParseErrors is a table of broken mapping files and every error each must report, with
// its exact position.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{
			name: "unknown identifier in a plain scalar, at the character",
			src:  head + "  - name: a\n    value: detal.id\n",
			want: []string{"t.yaml:7:12: fields[0].value: unknown name detal"},
		},
		{
			name: "type error inside a double-quoted scalar",
			src:  head + "  - name: a\n    value: \"upper(detail.to_number) + 1\"\n",
			want: []string{"t.yaml:7:37: fields[0].value: invalid operation: + (mismatched types string and int)"},
		},
		{
			name: "unknown function on the third line of a literal block",
			src:  head + "  - name: a\n    value: |\n      join_nonempty(\" \",\n        minutes,\n        summarize(minutes))\n",
			want: []string{"t.yaml:10:9: fields[0].value: unknown name summarize"},
		},
		{
			name: "folded block: positioned at its start, with the column inside the expression",
			src:  head + "  - name: a\n    value: >-\n      join_nonempty(\" \",\n      summarize(minutes))\n",
			want: []string{"t.yaml:7:12: fields[0].value: unknown name summarize (column 20 of the expression)"},
		},
		{
			name: "wrong argument type to a builtin",
			src:  head + "  - name: a\n    value: truncate(minutes, \"10\")\n",
			want: []string{"t.yaml:7:12: fields[0].value: not enough arguments to call truncate"},
		},
		{
			name: "unknown keys, missing keys, wrong types: all reported",
			src: head + "  - name: a\n    valu: minutes\n  - name: [b]\n    value: minutes\n    create_only: yes please\n" +
				"  - value: minutes\nskip:\n  - when: internal\ncontact:\n  number: customer_number\n  on_none: nope\nextra: 1\n",
			want: []string{
				"t.yaml:6:5: fields[0]: set exactly one of value (an expression) or const (a constant)",
				"t.yaml:7:5: fields[0].valu: unknown key \"valu\" (known: const, create_only, html, keep_longer, max_len, name, value, when)",
				"t.yaml:8:11: fields[1].name: want text, got a list",
				"t.yaml:10:18: fields[1].create_only: want true or false, got text",
				"t.yaml:11:5: fields[2]: missing required key \"name\"",
				"t.yaml:13:5: skip[0]: missing required key \"reason\"",
				"t.yaml:16:12: contact.on_none: unknown policy \"nope\" (one of unassociated, create_contact, create_lead)",
				"t.yaml:17:1: extra: unknown key \"extra\" (known: contact, crm, external_id, fields, object, owner, region, skip, tables, timezone, version)",
			},
		},
		{
			name: "top-level values checked where they are written",
			src:  "version: 2\ncrm: pipedrive\nobject: \"\"\ntimezone: Mars/Base\nregion: XX\nexternal_id: {field: id}\nfields: []\n",
			want: []string{
				"t.yaml:1:10: version: unsupported version 2 (this build reads version 1)",
				"t.yaml:2:6: crm: unknown crm \"pipedrive\" (one of hubspot, salesforce)",
				"t.yaml:3:10: object: must not be empty",
				"t.yaml:4:11: timezone: unknown time zone \"Mars/Base\" (an IANA name such as Asia/Tokyo)",
				"t.yaml:5:9: region: unknown region \"XX\" (an ISO 3166 alpha-2 code such as JP)",
				"t.yaml:7:9: fields: must not be empty",
			},
		},
		{
			name: "missing required top-level keys",
			src:  "version: 1\nfields:\n  - {name: a, const: 1}\n",
			want: []string{
				"t.yaml:1:1: missing required key \"crm\"",
				"t.yaml:1:1: missing required key \"object\"",
			},
		},
		{
			name: "unknown table, time zone, region and transcript style constants",
			src: head + "  - name: a\n    value: lookup(\"dispo\", outcome)\n  - name: b\n    value: format_time(started_at, \"15:04\", \"Asia/Tokio\")\n" +
				"  - name: c\n    value: phone_e164(customer_number, \"ZZ\")\n  - name: d\n    value: transcript(detail, \"fancy\")\n  - name: e\n    value: lookup(call_type, outcome)\n",
			want: []string{
				"t.yaml:7:19: fields[0].value: unknown table \"dispo\" (tables: none defined)",
				"t.yaml:9:45: fields[1].value: unknown time zone \"Asia/Tokio\"",
				"t.yaml:11:40: fields[2].value: unknown region \"ZZ\"",
				"t.yaml:13:31: fields[3].value: unknown transcript style \"fancy\" (raw, summary, phrases, phrases_nofiller)",
				"t.yaml:15:19: fields[4].value: the table name of lookup() must be written as a quoted constant",
			},
		},
		{
			name: "what an expression yields is checked",
			src: head + "  - name: a\n    value: participants\n  - name: b\n    const: 1\n    when: minutes\n" +
				"owner: {email: 1, field: OwnerId}\n",
			want: []string{
				"t.yaml:7:12: fields[0].value: the expression yields []miitel.Participant; a field value must be text, a number, a boolean or a time",
				"t.yaml:10:11: fields[1].when: expected bool, but got *string",
				"t.yaml:11:16: owner.email: the expression yields int; want text",
			},
		},
		{
			name: "an expression that fails on a shape MiiTel sends is a load error",
			src:  head + "  - name: score\n    value: detail.analysis.score * 10\n  - name: guarded\n    value: detail.analysis.score * 10\n    when: detail.analysis != nil\n",
			want: []string{"t.yaml:7:12: fields[0].value: fails on a detail with no data (every optional key absent): cannot get score from analysis"},
		},
		{
			name: "duplicate field, the external id as a field, value and const together",
			src:  head + "  - {name: a, const: 1}\n  - {name: a, const: 2}\n  - {name: miitel_id, value: detail.id}\n  - {name: c, value: minutes, const: x}\n",
			want: []string{
				"t.yaml:7:12: fields[1].name: field \"a\" is already set by fields[0]",
				"t.yaml:8:12: fields[2].name: field \"miitel_id\" is the external id field; it is sent by the connector, not as a field",
				"t.yaml:9:5: fields[3]: set exactly one of value (an expression) or const (a constant)",
			},
		},
		{
			name: "YAML syntax error",
			src:  "version: 1\ncrm: [hubspot\n",
			want: []string{"t.yaml:2:6: sequence end token ']' not found"},
		},
		{
			name: "anchors are refused",
			src:  head + "  - name: &n a\n    const: 1\n",
			want: []string{"t.yaml:6:11: fields[0].name: anchors and aliases are not supported in mapping files"},
		},
		{name: "empty file", src: "  \n", want: []string{"t.yaml: the file is empty"}},
		{name: "not a mapping", src: "- a\n", want: []string{"t.yaml:1:1: want a mapping (key: value), got a list"}},
		{name: "two documents", src: head + "  - {name: a, const: 1}\n---\nversion: 1\n", want: []string{"t.yaml:8:1: a mapping file holds one YAML document, found 2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse("t.yaml", []byte(tt.src))
			if err == nil {
				t.Fatalf("Parse succeeded (%v), want errors", m)
			}
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("error %T is not an ErrorList: %v", err, err)
			}
			got := strings.Split(err.Error(), "\n")
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
			if len(list) != len(got) {
				t.Errorf("ErrorList has %d entries, message %d lines", len(list), len(got))
			}
		})
	}
}
