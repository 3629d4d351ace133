package mappers

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
	"github.com/google/go-cmp/cmp"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

const schemaFile = "../docs/mapping.schema.json"

// TestSchemaCommitted keeps docs/mapping.schema.json, which the example files' modelines point
// at, equal to the schema generated from the File types (go test -run TestSchema -update).
func TestSchemaCommitted(t *testing.T) {
	got, err := Schema()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(schemaFile, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(schemaFile)
	if err != nil {
		t.Fatalf("%v (run go test ./mappers -run TestSchema -update)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s is stale (-committed +generated); run go test ./mappers -run TestSchema -update:\n%s", schemaFile, diff)
	}
}

// TestExamplesPointAtSchema: each shipped mapping starts with the modeline that makes
// yaml-language-server use the committed schema.
func TestExamplesPointAtSchema(t *testing.T) {
	for _, name := range BuiltinNames() {
		src, err := BuiltinSource(name)
		if err != nil {
			t.Fatal(err)
		}
		first, _, _ := strings.Cut(string(src), "\n")
		if want := "# yaml-language-server: $schema=../../docs/mapping.schema.json"; first != want {
			t.Errorf("%s: first line %q, want %q", name, first, want)
		}
		target := filepath.Join("../examples/mappings", strings.TrimPrefix(first, "# yaml-language-server: $schema="))
		if _, err := os.Stat(target); err != nil {
			t.Errorf("%s: modeline target: %v", name, err)
		}
	}
	if got := BuiltinNames(); !cmp.Equal(got, []string{"hubspot", "salesforce"}) {
		t.Errorf("BuiltinNames() = %v", got)
	}
}

// TestSchemaAcceptsWhatParseAccepts validates the shipped mappings, and the broken files
// Parse rejects for structural reasons, against the schema with an independent validator, so
// an editor neither flags a good file nor misses an unknown key.
func TestSchemaAcceptsWhatParseAccepts(t *testing.T) {
	raw, err := Schema()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("mapping.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("mapping.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	instance := func(src []byte) any {
		var v any
		if err := yaml.Unmarshal(src, &v); err != nil {
			t.Fatal(err)
		}
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
		if err != nil {
			t.Fatal(err)
		}
		return inst
	}
	for _, name := range BuiltinNames() {
		src, _ := BuiltinSource(name)
		if err := sch.Validate(instance(src)); err != nil {
			t.Errorf("shipped %s does not validate against the schema: %v", name, err)
		}
	}
	for _, bad := range []string{
		head + "  - name: a\n    valu: minutes\n", // unknown key
		head + "  - value: minutes\n",             // missing name
		"version: 1\ncrm: zoho\nobject: x\nexternal_id: {field: a}\nfields: [{name: a, const: 1}]\n",
		head + "  - {name: a, const: 1, create_only: maybe}\n",
	} {
		if err := sch.Validate(instance([]byte(bad))); err == nil {
			t.Errorf("schema accepts a file Parse rejects:\n%s", bad)
		}
		if _, err := Parse("bad.yaml", []byte(bad)); err == nil {
			t.Errorf("Parse accepts:\n%s", bad)
		}
	}
}
