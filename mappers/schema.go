package mappers

import (
	"encoding/json"
	"fmt"

	"github.com/invopop/jsonschema"
)

// SchemaID is the $id of the mapping file's JSON Schema.
const SchemaID = "https://github.com/miitel-crm-sync/miitel-crm-sync/docs/mapping.schema.json"

// Schema is the JSON Schema (draft 2020-12) of a mapping file, generated from the File types
// that the strict decoder also reads, for editors with yaml-language-server. It is committed
// as docs/mapping.schema.json (a test keeps the two equal).
func Schema() ([]byte, error) {
	r := &jsonschema.Reflector{
		FieldNameTag:               "yaml",
		RequiredFromJSONSchemaTags: true, // same "required" tags the decoder enforces
		DoNotReference:             false,
	}
	s := r.Reflect(&File{})
	s.ID = SchemaID
	s.Title = "miitel-crm-sync mapping"
	s.Description = "How MiiTel call details become CRM activities. Reference: docs/mapping.md."
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("mappers: schema: %w", err)
	}
	return append(b, '\n'), nil
}
