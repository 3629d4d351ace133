package salesforce_test

import (
	"strings"
	"testing"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce"
)

// Whatever a caller's number holds, the escaped term has no reserved character that is not
// escaped, so it can neither end the FIND clause nor add an operator.
func FuzzEscapeSOSL(f *testing.F) {
	for _, s := range []string{"03-1234-5678", "+81312345678", `}\{`, "a\\", "*?"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := salesforce.EscapeSOSL(s)
		for i := 0; i < len(out); i++ {
			if out[i] == '\\' {
				i++ // the escaped character
				if i >= len(out) {
					t.Fatalf("EscapeSOSL(%q) = %q ends in a lone backslash", s, out)
				}
				continue
			}
			if strings.IndexByte(`?&|!{}[]()^~*:"'+-`, out[i]) >= 0 {
				t.Fatalf("EscapeSOSL(%q) = %q leaves %q unescaped", s, out, out[i])
			}
		}
	})
}

// The escaped literal never lets a quote end the string early.
func FuzzEscapeSOQL(f *testing.F) {
	for _, s := range []string{"o'brien@example.com", `\'`, "x' OR Email != '"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := salesforce.EscapeSOQL(s)
		for i := 0; i < len(out); i++ {
			switch out[i] {
			case '\\':
				i++
				if i >= len(out) || !strings.ContainsRune(`\'"nrtbf`, rune(out[i])) {
					t.Fatalf("EscapeSOQL(%q) = %q has an invalid escape", s, out)
				}
			case '\'':
				t.Fatalf("EscapeSOQL(%q) = %q has an unescaped quote", s, out)
			}
		}
	})
}

func FuzzParseLimitInfo(f *testing.F) {
	for _, s := range []string{"api-usage=18/5000", "per-app-api-usage=17/250(appName=x), api-usage=18/5000", "api-usage=", "api-usage=1/0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		used, limit, ok := salesforce.ParseLimitInfo(h)
		if ok && (used < 0 || limit <= 0) {
			t.Fatalf("ParseLimitInfo(%q) = %d/%d ok", h, used, limit)
		}
	})
}

func TestParseLimitInfo(t *testing.T) {
	tests := []struct {
		in          string
		used, limit int
		ok          bool
	}{
		{"api-usage=18/5000", 18, 5000, true},
		{"per-app-api-usage=17/250(appName=sample-app), api-usage=25/5000", 25, 5000, true},
		{"", 0, 0, false},
		{"api-usage=x/5000", 0, 0, false},
		{"api-usage=5", 0, 0, false},
	}
	for _, tt := range tests {
		u, l, ok := salesforce.ParseLimitInfo(tt.in)
		if u != tt.used || l != tt.limit || ok != tt.ok {
			t.Errorf("ParseLimitInfo(%q) = %d, %d, %v; want %d, %d, %v", tt.in, u, l, ok, tt.used, tt.limit, tt.ok)
		}
	}
}
