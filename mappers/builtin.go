package mappers

import (
	"fmt"
	"io/fs"
	"path"
	"strings"

	"github.com/miitel-crm-sync/miitel-crm-sync/examples"
)

// BuiltinNames lists the shipped mappings, by CRM.
func BuiltinNames() []string {
	entries, err := fs.ReadDir(examples.Mappings, "mappings")
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".yaml"); ok {
			names = append(names, n)
		}
	}
	return names
}

// BuiltinSource is the YAML of a shipped mapping ("hubspot", "salesforce").
func BuiltinSource(name string) ([]byte, error) {
	src, err := fs.ReadFile(examples.Mappings, path.Join("mappings", name+".yaml"))
	if err != nil {
		return nil, fmt.Errorf("mappers: no built-in mapping %q (have %s)", name, strings.Join(BuiltinNames(), ", "))
	}
	return src, nil
}

// Builtin parses a shipped mapping: the default of a route that names no mapping file.
func Builtin(name string) (*Mapping, error) {
	src, err := BuiltinSource(name)
	if err != nil {
		return nil, err
	}
	return Parse("examples/mappings/"+name+".yaml", src)
}
