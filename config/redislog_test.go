package config

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"
)

func TestRedisLoggerWritesStructuredLinesWithLevels(t *testing.T) {
	var buf bytes.Buffer
	l := RedisLogger{Log: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	lines := []struct {
		format string
		args   []any
		level  string
	}{
		{"sentinel: new master=%q addr=%q", []any{"mymaster", "127.0.0.1:7001"}, "INFO"},
		{"redis: connection pool: failed to dial after %d attempts: %v", []any{5, "connection refused"}, "WARN"},
		{"addIdleConn panic: %+v", []any{"boom"}, "ERROR"},
		{"getting command info: %s", []any{"ERR"}, "DEBUG"},
	}
	for _, tc := range lines {
		buf.Reset()
		l.Printf(context.Background(), tc.format, tc.args...)
		var rec map[string]any
		if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
			t.Fatalf("%q: not one JSON line: %v: %s", tc.format, err, buf.String())
		}
		if rec["level"] != tc.level || rec["component"] != "redis" {
			t.Errorf("%q: level %v component %v, want %s redis", tc.format, rec["level"], rec["component"], tc.level)
		}
	}
}
