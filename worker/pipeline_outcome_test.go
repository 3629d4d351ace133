package worker

import "testing"

// The "call delivered" line says found, none, or assumed (a dry run's placeholder).
func TestLookupOutcome(t *testing.T) {
	for _, tc := range []struct {
		id      string
		assumed bool
		want    string
	}{{"003A", false, "found"}, {"", false, "none"}, {"{contact_id}", true, "assumed (dry run)"}, {"", true, "none"}} {
		if got := lookupOutcome(tc.id, tc.assumed); got != tc.want {
			t.Errorf("lookupOutcome(%q, %v) = %q, want %q", tc.id, tc.assumed, got, tc.want)
		}
	}
}
