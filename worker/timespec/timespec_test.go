package timespec

import (
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 4, 1, 3, 30, 0, 0, time.UTC) // 12:30 in Tokyo
	tests := []struct {
		in   string
		want time.Time
	}{
		{"", time.Time{}},
		{"2026-03-31T10:00:00Z", time.Date(2026, 3, 31, 10, 0, 0, 0, time.UTC)},
		{"2026-03-31", time.Date(2026, 3, 31, 0, 0, 0, 0, tokyo)},
		{"09:00", time.Date(2026, 4, 1, 9, 0, 0, 0, tokyo)},
		{"9:15", time.Date(2026, 4, 1, 9, 15, 0, 0, tokyo)},
		{"today", time.Date(2026, 4, 1, 0, 0, 0, 0, tokyo)},
		{"Yesterday", time.Date(2026, 3, 31, 0, 0, 0, 0, tokyo)},
		{"90m", now.Add(-90 * time.Minute)},
		{"2d", now.Add(-48 * time.Hour)},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in, now, tokyo)
		if err != nil || !got.Equal(tt.want) {
			t.Errorf("Parse(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"soon", "-2h", "25:00", "2026-13-01"} {
		if _, err := Parse(bad, now, tokyo); err == nil || !strings.Contains(err.Error(), "is not a time") {
			t.Errorf("Parse(%q): err = %v, want a clear error", bad, err)
		}
	}
}

func TestParseRange(t *testing.T) {
	now := time.Date(2026, 4, 1, 3, 30, 0, 0, time.UTC)
	r, err := ParseRange("2h", "", now, time.UTC)
	if err != nil || !r.Contains(now.Add(-time.Hour)) || r.Contains(now.Add(-3*time.Hour)) || !r.Contains(now.Add(time.Hour)) {
		t.Errorf("since 2h: %+v, %v", r, err)
	}
	if _, err := ParseRange("1h", "2h", now, time.UTC); err == nil || !strings.Contains(err.Error(), "not before") {
		t.Errorf("inverted range: err = %v", err)
	}
	if _, err := ParseRange("x", "", now, time.UTC); err == nil || !strings.HasPrefix(err.Error(), "since:") {
		t.Errorf("bad since: err = %v", err)
	}
}
