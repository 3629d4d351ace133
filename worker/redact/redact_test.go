package redact

import "testing"

func TestNumber(t *testing.T) {
	for in, want := range map[string]string{
		"090-1234-5678":    "090-****-5678",
		"09012345678":      "090****5678",
		"0312345678":       "031***5678",
		"03-1234-5678":     "03-****-5678",
		"+819012345678":    "+819*****5678",
		"+81 90 1234 5678": "+81 ** **** 5678",
		"050-0000-0000":    "050-****-0000",
		"101":              "101",
		"":                 "",
		"1234567":          "***4567",
	} {
		if got := Number(in); got != want {
			t.Errorf("Number(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestText(t *testing.T) {
	for in, want := range map[string]string{
		"Property hs_call_to_number: '090-1234-5678' is invalid": "Property hs_call_to_number: '090-****-5678' is invalid",
		"to 09012345678 and +81312345678":                        "to 090****5678 and +813****5678",
		"HTTP 400 at 2026-04-01 09:00:00, record 12345678901":    "HTTP 400 at 2026-04-01 09:00:00, record 12345678901",
		"ext 0101": "ext 0101",
	} {
		if got := Text(in); got != want {
			t.Errorf("Text(%q) = %q, want %q", in, got, want)
		}
	}
}
