package mappers

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDocExamples parses every YAML example in docs/mapping.md: whole files as they are,
// fragments (fields, skip rules, tables) inside a minimal valid file. Documentation that
// does not load is a bug.
func TestDocExamples(t *testing.T) {
	doc, err := os.ReadFile("../docs/mapping.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(doc), -1)
	if len(blocks) < 5 {
		t.Fatalf("found %d yaml examples in docs/mapping.md", len(blocks))
	}
	const field = "  - {name: x, const: 1}\n"
	for i, b := range blocks {
		src := b[1]
		switch {
		case strings.HasPrefix(src, "# yaml-language-server"):
			continue // the modeline alone
		case strings.HasPrefix(src, "version:"):
		case strings.HasPrefix(src, "  - name:"):
			src = head + src
		case strings.HasPrefix(src, "skip:"):
			src = head + field + src
		case strings.HasPrefix(src, "tables:"):
			// a recipe with tables and its own fields: give it the rest of a file
			src = strings.Replace(head, "fields:\n", "", 1) + src
		default:
			t.Errorf("example %d: do not know how to check:\n%s", i, src)
			continue
		}
		if _, err := Parse("docs/mapping.md", []byte(src)); err != nil {
			t.Errorf("example %d does not load:\n%s\n%v", i, src, err)
		}
	}
	// The package comment's example too.
	pkg, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(pkg), "\n") {
		if strings.HasPrefix(l, "//\t") {
			lines = append(lines, strings.TrimPrefix(l, "//\t"))
		}
	}
	if _, err := Parse("doc.go", []byte(strings.Join(lines, "\n"))); err != nil {
		t.Errorf("doc.go example does not load: %v", err)
	}
}
