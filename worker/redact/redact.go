// Package redact masks phone numbers in what operators see: call status, the dead letter,
// replay previews and the admin API show 090-****-5678, never the number. It is applied
// where data is written for operators, so Redis does not hold the numbers either (apart from
// the queued and dead-lettered events themselves, which must be sent again).
package redact

import (
	"regexp"
	"strings"
)

// keepTail is how many trailing digits stay readable: enough for a rep to recognise a
// customer's number, too few to call it.
const keepTail = 4

// Number masks a phone number as MiiTel or a CRM writes it, keeping its separators, its
// first group (the area or mobile prefix, a country code) and its last four digits:
// 090-1234-5678 -> 090-****-5678, 0312345678 -> 031***5678, +81 90 1234 5678 -> +81 **
// **** 5678. A value with fewer than 7 digits (an extension) is returned as is.
func Number(s string) string {
	digits := 0
	for _, r := range s {
		if r >= '0' && r <= '9' {
			digits++
		}
	}
	if digits < 7 {
		return s
	}
	// The first group is kept when separators split the number into several groups and it
	// is short; otherwise the first three digits stand for it.
	head := 3
	if i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '+' }); i > 0 {
		first := strings.TrimPrefix(s[:i], "+")
		if len(first) > 0 && len(first) <= 4 {
			head = len(first)
		}
	}
	if head+keepTail >= digits {
		head = max(0, digits-keepTail-3)
	}
	var b strings.Builder
	b.Grow(len(s))
	n := 0
	for _, r := range s {
		if r < '0' || r > '9' {
			b.WriteRune(r)
			continue
		}
		if n < head || n >= digits-keepTail {
			b.WriteRune(r)
		} else {
			b.WriteByte('*')
		}
		n++
	}
	return b.String()
}

// phoneLike finds what may be a phone number inside free text (a CRM's error message that
// quotes a field value): a run starting with 0 or + of digits, hyphens, spaces and
// parentheses. Runs with fewer than 9 digits are left alone, so dates, times, HTTP statuses
// and most ids stay readable.
var phoneLike = regexp.MustCompile(`(?:\+|\b0)[0-9][0-9\- ()]{5,}[0-9]`)

// Text masks every phone-number-like run in s.
func Text(s string) string {
	return phoneLike.ReplaceAllStringFunc(s, func(m string) string {
		digits := 0
		for _, r := range m {
			if r >= '0' && r <= '9' {
				digits++
			}
		}
		if digits < 9 {
			return m
		}
		return Number(m)
	})
}
