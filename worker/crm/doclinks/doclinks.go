// Package doclinks checks, for a connector's tests, that every link its sources print into
// a CRM guide (docs/crm-*.md#section) names a heading that exists: a fix that points at a
// renamed section sends an admin nowhere.
package doclinks

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Check reads the guide at docPath (its links are written "docs/<base name>#anchor"), finds
// the links in the package's non-test Go files in the current directory, and fails t for each
// anchor the guide has no heading for, or when fewer than min links are found (the sources
// stopped linking the guide, or the pattern went stale).
func Check(t testing.TB, docPath string, min int) {
	t.Helper()
	doc, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(doc), "\n") {
		if h, ok := strings.CutPrefix(strings.TrimLeft(line, "#"), " "); ok && strings.HasPrefix(line, "#") {
			anchors[Anchor(h)] = true
		}
	}
	sources, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	name := "docs/" + filepath.Base(docPath)
	link := regexp.MustCompile(regexp.QuoteMeta(name) + `#([a-z0-9-]+)`)
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
				t.Errorf("%s links %s#%s, which has no such heading", src, name, m[1])
			}
		}
	}
	if found < min {
		t.Errorf("found %d links to %s in the sources, want at least %d (the fixes' links)", found, name, min)
	}
}

// Anchor is GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes.
func Anchor(h string) string {
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
