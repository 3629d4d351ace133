package hubspot

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Every fix the connector prints points at a section of docs/crm-hubspot.md: each link
// in its sources must name a heading that exists (GitHub's anchor of it).
func TestFixesPointAtExistingDocSections(t *testing.T) {
	doc, err := os.ReadFile("../../../docs/crm-hubspot.md")
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(doc), "\n") {
		if h, ok := strings.CutPrefix(strings.TrimLeft(line, "#"), " "); ok && strings.HasPrefix(line, "#") {
			anchors[anchor(h)] = true
		}
	}
	sources, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	link := regexp.MustCompile(`docs/crm-hubspot\.md#([a-z0-9-]+)`)
	found := 0
	for _, src := range sources {
		if strings.HasSuffix(src, "_test.go") {
			continue
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range link.FindAllStringSubmatch(string(b), -1) {
			found++
			if !anchors[m[1]] {
				t.Errorf("%s links docs/crm-hubspot.md#%s, which has no such heading", src, m[1])
			}
		}
	}
	if found < 4 {
		t.Errorf("found %d doc links in the sources, want the fixes' links", found)
	}
}

// anchor is GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes.
func anchor(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(h)) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}
