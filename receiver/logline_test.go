package receiver

import (
	"bytes"
	"log/slog"
	"testing"
)

// TestJSONStringsAsSlog: the request line's detail_ids and kinds read as slog writes a
// []string, for plain ids and for ones that need escaping.
func TestJSONStringsAsSlog(t *testing.T) {
	for _, ss := range [][]string{nil, {}, {"a"}, {"leg-01", "leg-02"}, {`q"uote`, "back\\slash"}, {"<a&b>", "日本", "tab\t", "\u2028", "del\x7f"}} {
		var want, got bytes.Buffer
		slog.New(slog.NewJSONHandler(&want, nil)).LogAttrs(t.Context(), slog.LevelInfo, "m", slog.Any("ids", ss))
		slog.New(slog.NewJSONHandler(&got, nil)).LogAttrs(t.Context(), slog.LevelInfo, "m", slog.Any("ids", jsonStrings(ss)))
		w, g := want.Bytes()[bytes.Index(want.Bytes(), []byte(`"ids"`)):], got.Bytes()[bytes.Index(got.Bytes(), []byte(`"ids"`)):]
		if !bytes.Equal(w, g) {
			t.Errorf("%q: got %s, want %s", ss, g, w)
		}
	}
}
