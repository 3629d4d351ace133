package salesforce

import "strings"

// soslReserved are the characters the SOSL FIND clause reserves; each must be preceded by a
// backslash to be searched for literally, or the query fails (or worse, means something
// else: "-" is AND NOT, "*" a wildcard, "}" ends the search term).
const soslReserved = `?&|!{}[]()^~*:\"'+-`

// EscapeSOSL makes s safe inside the braces of a SOSL FIND clause: every reserved character
// is backslash-escaped. Control characters cannot be part of a phone number and would only
// break the query, so they are dropped.
func EscapeSOSL(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 8)
	for _, r := range s {
		switch {
		case r < 0x20 || r == 0x7f:
			continue
		case strings.ContainsRune(soslReserved, r):
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// EscapeSOQL makes s safe between the single quotes of a SOQL string literal. SOQL reserves
// the single quote and the backslash and knows \n \r \t \b \f \" as escapes; any other use of
// a backslash is an error, so every one in s is doubled.
func EscapeSOQL(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 8)
	for _, r := range s {
		switch r {
		case '\\':
			b.WriteString(`\\`)
		case '\'':
			b.WriteString(`\'`)
		case '"':
			b.WriteString(`\"`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
