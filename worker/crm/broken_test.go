package crm

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Two parts of a connector find it broken for different reasons; the gauge stays 1 until
// both are cleared, and each reason counts once however often it is seen.
func TestBrokenStateReasonsAddUp(t *testing.T) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	b := NewBrokenState("c1", m)
	gauge := func() float64 { return testutil.ToFloat64(m.Broken.WithLabelValues("c1")) }
	total := func() float64 { return testutil.ToFloat64(m.BrokenTotal.WithLabelValues("c1")) }

	if !b.Set(BrokenToken, "revoked") || b.Set(BrokenToken, "revoked") {
		t.Error("Set reports news only the first time")
	}
	if !b.Set("record_key", "field missing") {
		t.Error("a second reason is news")
	}
	if gauge() != 1 || total() != 2 {
		t.Errorf("gauge %v total %v, want 1 and 2", gauge(), total())
	}
	if !b.Clear(BrokenToken) || b.Clear(BrokenToken) {
		t.Error("Clear reports only a reason that was set")
	}
	if gauge() != 1 {
		t.Errorf("gauge %v after clearing one of two reasons, want 1", gauge())
	}
	if got := b.Reasons(); len(got) != 1 || got["record_key"] != "field missing" {
		t.Errorf("Reasons = %v", got)
	}
	b.Clear("record_key")
	if gauge() != 0 {
		t.Errorf("gauge %v with no reason left, want 0", gauge())
	}
}
