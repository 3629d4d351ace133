package tasks

import (
	"encoding/json"
	"testing"
)

// TestAppendJSONStringMatchesMarshal: strings are written byte for byte as json.Marshal
// writes them, on the fast path and off it.
func TestAppendJSONStringMatchesMarshal(t *testing.T) {
	for _, s := range []string{"", "open", "99e2fdb7-845a-46de-8d94-882add220551", "a b~", `q"uote`, `back\\slash`,
		"<html>", "a&b", "tab\there", "nl\n", "\x00", "\x7f", "日本語", "\u2028", "bad\xffutf8"} {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendJSONString([]byte("x"), s); string(got) != "x"+string(want) {
			t.Errorf("%q: got %s, want x%s", s, got, want)
		}
	}
}
