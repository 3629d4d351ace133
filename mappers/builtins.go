package mappers

import (
	"cmp"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
	_ "time/tzdata" // Asia/Tokyo must resolve in a distroless image without zoneinfo
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/nyaruka/phonenumbers"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
)

// DefaultTimezone and DefaultRegion apply when a mapping file sets none.
const (
	DefaultTimezone = "Asia/Tokyo"
	DefaultRegion   = "JP"
	// TruncationMarker ends text that truncate() or a field's max_len shortened.
	TruncationMarker = "…"
)

// builtins holds what the functions of one mapping close over: its tables and defaults. Each
// Mapping gets its own, so a reload never sees another file's tables.
type builtins struct {
	tables map[string]*table
	loc    *time.Location
	region string
	zones  sync.Map // time zone name -> *time.Location, for format_time's third argument
	phones phoneCache
}

// table values are boxed once at load, so a lookup allocates nothing.
type table struct {
	values map[string]any
	def    any // nil: no default
}

// text is the string in v: a string, or a non-nil *string. ok is false for nil and others.
func text(v any) (string, bool) {
	switch s := v.(type) {
	case string:
		return s, true
	case *string:
		if s != nil {
			return *s, true
		}
	}
	return "", false
}

// nonEmpty is text(v) that is also not blank.
func nonEmpty(v any) (string, bool) {
	s, ok := text(v)
	if !ok || strings.TrimSpace(s) == "" {
		return "", false
	}
	return s, true
}

func intArg(v any) int {
	switch n := v.(type) {
	case int:
		return n
	case int64:
		return int(n)
	case float64:
		return int(n)
	}
	return 0
}

// Type signatures: the checker rejects a call that matches none, at load time.
var (
	tString    = new(func(string) string)
	tStringPtr = new(func(*string) string)
)

func (b *builtins) options() []expr.Option {
	var (
		strOrPtr  = []any{"", (*string)(nil)}
		timeLikes = []any{"", (*string)(nil), time.Time{}}
	)
	// sig builds the function types for every combination of the given argument kinds.
	sig := func(ret any, args ...[]any) []any {
		combos := [][]any{{}}
		for _, alts := range args {
			var next [][]any
			for _, c := range combos {
				for _, a := range alts {
					next = append(next, append(append([]any{}, c...), a))
				}
			}
			combos = next
		}
		out := make([]any, 0, len(combos))
		for _, c := range combos {
			out = append(out, funcType(ret, c...))
		}
		return out
	}
	one := func(v any) []any { return []any{v} }

	return []expr.Option{
		expr.Function("timestamp", b.timestamp, sig(time.Time{}, timeLikes)...),
		expr.Function("duration_ms", b.durationMS, sig(int64(0), strOrPtr, strOrPtr)...),
		expr.Function("duration_s", b.durationS, sig(int64(0), strOrPtr, strOrPtr)...),
		expr.Function("format_time", b.formatTime, append(sig("", timeLikes, one("")), sig("", timeLikes, one(""), one(""))...)...),
		expr.Function("phone_e164", b.phoneE164, append(sig("", strOrPtr), sig("", strOrPtr, one(""))...)...),
		expr.Function("phone_national", b.phoneNational, append(sig("", strOrPtr), sig("", strOrPtr, one(""))...)...),
		expr.Function("transcript", b.transcript,
			new(func(*miitel.Detail) string),
			new(func(*miitel.Detail, string) string),
			new(func(*miitel.Detail, string, string, string) string)),
		expr.Function("join_tags", joinTags, listSigs[miitel.Tag]()...),
		expr.Function("join_comments", joinComments, listSigs[miitel.Comment]()...),
		expr.Function("join_keywords", joinKeywords, listSigs[miitel.Keyword]()...),
		expr.Function("truncate", truncateFn(false), append(sig("", strOrPtr, one(0)), sig("", strOrPtr, one(0), one(""))...)...),
		expr.Function("truncate_html", truncateFn(true), append(sig("", strOrPtr, one(0)), sig("", strOrPtr, one(0), one(""))...)...),
		expr.Function("html_escape", htmlEscape, tString, tStringPtr),
		expr.Function("html", htmlText, tString, tStringPtr),
		expr.Function("html_section", htmlSection, sig("", one(""), strOrPtr)...),
		expr.Function("html_link", htmlLink, sig("", strOrPtr, one(""))...),
		expr.Function("section", section, sig("", one(""), strOrPtr)...),
		expr.Function("join_nonempty", joinNonEmpty, new(func(string, ...any) string)),
		expr.Function("nonempty", nonEmptyFn, tString, tStringPtr),
		expr.Function("call_url", callURL, sig("", strOrPtr, strOrPtr)...),
		expr.Function("lookup", b.lookup, sig("", one(""), []any{"", (*string)(nil), 0})...),
		expr.Function("lookup_first", b.lookupFirst,
			new(func(string, []string) string),
			new(func(string, []any) string),
			new(func(string, []miitel.Tag) string)),
	}
}

// timestamp parses a MiiTel time (ISO-8601 with offset); nothing for nil, empty or garbage.
func (b *builtins) timestamp(p ...any) (any, error) {
	t, ok := parseTime(p[0])
	if !ok {
		return nil, nil
	}
	return t, nil
}

func parseTime(v any) (time.Time, bool) {
	if t, ok := v.(time.Time); ok {
		return t, !t.IsZero()
	}
	s, ok := nonEmpty(v)
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	return t, err == nil
}

func duration(p []any) (time.Duration, bool) {
	a, ok1 := parseTime(p[0])
	z, ok2 := parseTime(p[1])
	if !ok1 || !ok2 || z.Before(a) {
		return 0, false
	}
	return z.Sub(a), true
}

// durationMS is end-start in milliseconds (HubSpot hs_call_duration); nothing when either end
// is missing (an unanswered call has no dial_answered_at) or the end precedes the start.
func (b *builtins) durationMS(p ...any) (any, error) {
	d, ok := duration(p)
	if !ok {
		return nil, nil
	}
	return d.Milliseconds(), nil
}

// durationS is end-start in whole seconds, rounded (Salesforce CallDurationInSeconds).
func (b *builtins) durationS(p ...any) (any, error) {
	d, ok := duration(p)
	if !ok {
		return nil, nil
	}
	return int64(d.Round(time.Second) / time.Second), nil
}

// formatTime formats a time with a Go layout in the mapping's time zone, or the one named.
func (b *builtins) formatTime(p ...any) (any, error) {
	t, ok := parseTime(p[0])
	if !ok {
		return nil, nil
	}
	loc := b.loc
	if len(p) == 3 {
		var err error
		if loc, err = b.zone(p[2].(string)); err != nil {
			return nil, err
		}
	}
	return t.In(loc).Format(p[1].(string)), nil
}

func (b *builtins) zone(name string) (*time.Location, error) {
	if l, ok := b.zones.Load(name); ok {
		return l.(*time.Location), nil
	}
	l, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("unknown time zone %q", name)
	}
	b.zones.Store(name, l)
	return l, nil
}

// phoneInfo is what the mapping needs of a parsed number. Parsing with libphonenumber costs
// tens of allocations, and one render asks for the same customer number several times
// (title, contact), as do all the events of a call, so results are cached per mapping.
type phoneInfo struct {
	ok       bool
	e164     any // string, boxed once so a cache hit allocates nothing
	national any // "03-1234-5678"
	digits   string
}

type phoneKey struct{ number, region string }

// phoneCache is a bounded map: when full it is emptied, which is simpler than LRU and costs
// one re-parse per number for a cache that holds a working set of recent calls.
type phoneCache struct {
	mu sync.Mutex
	m  map[phoneKey]phoneInfo
}

const phoneCacheSize = 4096

// phone parses a number as MiiTel sends it (national format, with or without hyphens) in the
// given region. Numbers that cannot be a phone number in any plan are not ok; numbers that
// merely are not assigned (test numbers like 090-0000-0000) are kept.
func (b *builtins) phone(v any, region string) phoneInfo {
	s, ok := nonEmpty(v)
	if !ok {
		return phoneInfo{}
	}
	k := phoneKey{s, region}
	b.phones.mu.Lock()
	info, hit := b.phones.m[k]
	b.phones.mu.Unlock()
	if hit {
		return info
	}
	if n, err := phonenumbers.Parse(s, region); err == nil && phonenumbers.IsPossibleNumber(n) {
		national := phonenumbers.Format(n, phonenumbers.NATIONAL)
		info = phoneInfo{ok: true, e164: phonenumbers.Format(n, phonenumbers.E164), national: national, digits: digitsOnly(national)}
	}
	b.phones.mu.Lock()
	if b.phones.m == nil || len(b.phones.m) >= phoneCacheSize {
		b.phones.m = make(map[phoneKey]phoneInfo, 64)
	}
	b.phones.m[k] = info
	b.phones.mu.Unlock()
	return info
}

func (b *builtins) regionArg(p []any) string {
	if len(p) == 2 {
		return p[1].(string)
	}
	return b.region
}

func (b *builtins) phoneE164(p ...any) (any, error) {
	if info := b.phone(p[0], b.regionArg(p)); info.ok {
		return info.e164, nil
	}
	return nil, nil
}

func (b *builtins) phoneNational(p ...any) (any, error) {
	if info := b.phone(p[0], b.regionArg(p)); info.ok {
		return info.national, nil
	}
	return nil, nil
}

// digitsOnly is the national format without separators, as CRM phone searches want it.
func digitsOnly(national string) string {
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, national)
}

// Transcript styles.
var transcriptStyles = map[string]bool{"raw": true, "summary": true, "phrases": true, "phrases_nofiller": true}

// transcript builds the call's transcript. "raw" (default) is MiiTel's own
// speech_recognition.raw, or when that is empty the phrases without fillers; "summary" is
// speech_recognition.summary or the summary phrases; "phrases" and "phrases_nofiller" are
// built from the phrases as "m:ss (speaker) text" lines in speaking order. A speaker is the
// participant's name, else the rep or customer label (default "Rep", "Customer").
func (b *builtins) transcript(p ...any) (any, error) {
	d, _ := p[0].(*miitel.Detail)
	if d == nil {
		return nil, nil
	}
	style, repLabel, customerLabel := "raw", "Rep", "Customer"
	if len(p) >= 2 {
		style = p[1].(string)
	}
	if len(p) == 4 {
		repLabel, customerLabel = p[2].(string), p[3].(string)
	}
	var s string
	switch style {
	case "raw":
		if d.SpeechRecognition != nil {
			s = d.SpeechRecognition.Raw
		}
		if strings.TrimSpace(s) == "" {
			s = buildTranscript(d, false, true, repLabel, customerLabel)
		}
	case "summary":
		if d.SpeechRecognition != nil {
			s = d.SpeechRecognition.Summary
		}
		if strings.TrimSpace(s) == "" {
			s = buildTranscript(d, true, true, repLabel, customerLabel)
		}
	case "phrases":
		s = buildTranscript(d, false, false, repLabel, customerLabel)
	case "phrases_nofiller":
		s = buildTranscript(d, false, true, repLabel, customerLabel)
	default:
		return nil, fmt.Errorf("transcript: unknown style %q (raw, summary, phrases, phrases_nofiller)", style)
	}
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	return s, nil
}

type utterance struct {
	order   int64
	startAt float64
	speaker string
	text    string
}

func buildTranscript(d *miitel.Detail, summary, noFiller bool, repLabel, customerLabel string) string {
	speakers := make(map[string]string, len(d.Participants))
	for _, pt := range d.Participants {
		switch {
		case pt.Name != nil && *pt.Name != "":
			speakers[pt.ID] = *pt.Name
		case pt.LoginID != nil && *pt.LoginID != "":
			speakers[pt.ID] = repLabel
		default:
			speakers[pt.ID] = customerLabel
		}
	}
	var us []utterance
	for _, ph := range d.Phrases {
		items := ph.Raw
		if summary {
			items = ph.Summary
		}
		speaker, ok := speakers[ph.ParticipantID]
		if !ok {
			speaker = customerLabel
		}
		for _, it := range items {
			t := it.Phrase
			if noFiller {
				t = it.PhraseNoFiller
			}
			if strings.TrimSpace(t) == "" {
				continue
			}
			us = append(us, utterance{order: it.Order, startAt: it.StartAt, speaker: speaker, text: t})
		}
	}
	sortUtterances(us)
	var sb strings.Builder
	for i, u := range us {
		if i > 0 {
			sb.WriteByte('\n')
		}
		sec := int(u.startAt)
		fmt.Fprintf(&sb, "%d:%02d (%s) %s", sec/60, sec%60, u.speaker, u.text)
	}
	return sb.String()
}

// sortUtterances orders by MiiTel's order number, then start time.
func sortUtterances(us []utterance) {
	slices.SortStableFunc(us, func(a, b utterance) int {
		if c := cmp.Compare(a.order, b.order); c != 0 {
			return c
		}
		return cmp.Compare(a.startAt, b.startAt)
	})
}

// listSigs are the signatures of a join_* function over a list of T: the list as MiiTel sent
// it, or as filter() returns it ([]any), each with an optional separator.
func listSigs[T any]() []any {
	return []any{
		new(func([]T) string), new(func([]T, string) string),
		new(func([]any) string), new(func([]any, string) string),
	}
}

// each calls f for every T in v ([]T or []any holding T).
func each[T any](v any, f func(*T)) {
	switch l := v.(type) {
	case []T:
		for i := range l {
			f(&l[i])
		}
	case []any:
		for _, x := range l {
			switch t := x.(type) {
			case T:
				f(&t)
			case *T:
				if t != nil {
					f(t)
				}
			}
		}
	}
}

func sepArg(p []any, def string) string {
	if len(p) == 2 {
		return p[1].(string)
	}
	return def
}

func joined(sb *strings.Builder) (any, error) {
	if sb.Len() == 0 {
		return nil, nil
	}
	return sb.String(), nil
}

// joinTags joins call memo values (default separator ", ").
func joinTags(p ...any) (any, error) {
	sep := sepArg(p, ", ")
	var sb strings.Builder
	each(p[0], func(t *miitel.Tag) {
		if strings.TrimSpace(t.Value) == "" {
			return
		}
		if sb.Len() > 0 {
			sb.WriteString(sep)
		}
		sb.WriteString(t.Value)
	})
	return joined(&sb)
}

// joinComments joins comments as "author: text" (default separator a newline).
func joinComments(p ...any) (any, error) {
	sep := sepArg(p, "\n")
	var sb strings.Builder
	each(p[0], func(c *miitel.Comment) {
		if strings.TrimSpace(c.Value) == "" {
			return
		}
		if sb.Len() > 0 {
			sb.WriteString(sep)
		}
		if c.CreatedBy != "" {
			sb.WriteString(c.CreatedBy)
			sb.WriteString(": ")
		}
		sb.WriteString(c.Value)
	})
	return joined(&sb)
}

// joinKeywords joins the distinct keywords in order of first appearance (default ", ").
func joinKeywords(p ...any) (any, error) {
	sep := sepArg(p, ", ")
	var sb strings.Builder
	var seen []string
	each(p[0], func(k *miitel.Keyword) {
		for _, s := range seen {
			if s == k.Value {
				return
			}
		}
		if strings.TrimSpace(k.Value) == "" {
			return
		}
		seen = append(seen, k.Value)
		if sb.Len() > 0 {
			sb.WriteString(sep)
		}
		sb.WriteString(k.Value)
	})
	return joined(&sb)
}

func truncateFn(isHTML bool) func(p ...any) (any, error) {
	return func(p ...any) (any, error) {
		s, ok := text(p[0])
		if !ok {
			return nil, nil
		}
		marker := TruncationMarker
		if len(p) == 3 {
			marker = p[2].(string)
		}
		return truncate(s, intArg(p[1]), marker, isHTML), nil
	}
}

// utf16Len counts what Salesforce and HubSpot count as a character: UTF-16 code units (they
// are Java platforms), so a rune outside the BMP (an emoji) counts 2.
func utf16Len(s string) int {
	n := 0
	for _, r := range s {
		n++
		if r >= 0x10000 {
			n++
		}
	}
	return n
}

// truncate shortens s to at most limit characters (UTF-16 code units) including marker,
// cutting on a rune boundary. With isHTML it also never leaves half a tag or entity.
func truncate(s string, limit int, marker string, isHTML bool) string {
	if limit <= 0 {
		return ""
	}
	if len(s) <= limit || utf16Len(s) <= limit {
		return s // len(s) >= utf16Len(s): the byte count is a cheap upper bound
	}
	budget := limit - utf16Len(marker)
	if budget < 0 {
		budget, marker = limit, ""
	}
	cut, n := 0, 0
	for i, r := range s {
		w := 1
		if r >= 0x10000 {
			w = 2
		}
		if n+w > budget {
			break
		}
		n += w
		cut = i + utf8.RuneLen(r)
	}
	out := s[:cut]
	if isHTML {
		out = trimPartialMarkup(out)
	}
	return out + marker
}

// trimPartialMarkup drops an unterminated tag ("<a hr") or entity ("&am") at the end of s.
func trimPartialMarkup(s string) string {
	if i := strings.LastIndexByte(s, '<'); i >= 0 && !strings.Contains(s[i:], ">") {
		s = s[:i]
	}
	if i := strings.LastIndexByte(s, '&'); i >= 0 && !strings.Contains(s[i:], ";") && len(s)-i <= 10 {
		s = s[:i]
	}
	return s
}

func htmlEscape(p ...any) (any, error) {
	s, ok := text(p[0])
	if !ok {
		return nil, nil
	}
	var sb strings.Builder
	escapeHTML(&sb, s, false)
	return sb.String(), nil
}

// htmlText escapes s for an HTML body and keeps its line breaks as <br>.
func htmlText(p ...any) (any, error) {
	s, ok := text(p[0])
	if !ok {
		return nil, nil
	}
	var sb strings.Builder
	escapeHTML(&sb, s, true)
	return sb.String(), nil
}

// escapeHTML writes s escaped as html.EscapeString does, and with br its line breaks as
// <br>, in one pass into one buffer (bodies are the largest values a render builds).
func escapeHTML(sb *strings.Builder, s string, br bool) {
	sb.Grow(len(s) + len(s)/8)
	last := 0
	for i := 0; i < len(s); i++ {
		var rep string
		switch s[i] {
		case '<':
			rep = "&lt;"
		case '>':
			rep = "&gt;"
		case '&':
			rep = "&amp;"
		case '"':
			rep = "&#34;"
		case '\'':
			rep = "&#39;"
		case '\n':
			if !br {
				continue
			}
			rep = "<br>"
		case '\r':
			if !br || i+1 >= len(s) || s[i+1] != '\n' {
				continue
			}
			sb.WriteString(s[last:i])
			last = i + 1 // drop the \r of \r\n; the \n becomes <br>
			continue
		default:
			continue
		}
		sb.WriteString(s[last:i])
		sb.WriteString(rep)
		last = i + 1
	}
	sb.WriteString(s[last:])
}

// htmlSection is "<p><strong>title</strong><br>body</p>" with both escaped; nothing when the
// body is empty, so absent sections leave no empty headings.
func htmlSection(p ...any) (any, error) {
	body, ok := nonEmpty(p[1])
	if !ok {
		return nil, nil
	}
	title := p[0].(string)
	var sb strings.Builder
	sb.Grow(len(title) + len(body) + len(body)/8 + 32)
	sb.WriteString("<p><strong>")
	escapeHTML(&sb, title, false)
	sb.WriteString("</strong><br>")
	escapeHTML(&sb, body, true)
	sb.WriteString("</p>")
	return sb.String(), nil
}

var safeURL = regexp.MustCompile(`^https://[^\s"<>]+$`)

// htmlLink is an <a> to an https URL; nothing for other schemes (no javascript: links).
func htmlLink(p ...any) (any, error) {
	u, ok := nonEmpty(p[0])
	if !ok || !safeURL.MatchString(u) {
		return nil, nil
	}
	var sb strings.Builder
	sb.WriteString(`<a href="`)
	escapeHTML(&sb, u, false)
	sb.WriteString(`">`)
	escapeHTML(&sb, p[1].(string), false)
	sb.WriteString("</a>")
	return sb.String(), nil
}

// section is "title\nbody" for plain-text bodies; nothing when the body is empty.
func section(p ...any) (any, error) {
	body, ok := nonEmpty(p[1])
	if !ok {
		return nil, nil
	}
	return p[0].(string) + "\n" + body, nil
}

// joinNonEmpty joins the parts that are not nothing or blank; nothing when none is left.
func joinNonEmpty(p ...any) (any, error) {
	sep := p[0].(string)
	var sb strings.Builder
	for _, v := range p[1:] {
		s, ok := nonEmpty(v)
		if !ok {
			continue
		}
		if sb.Len() > 0 {
			sb.WriteString(sep)
		}
		sb.WriteString(s)
	}
	return joined(&sb)
}

func nonEmptyFn(p ...any) (any, error) {
	s, ok := nonEmpty(p[0])
	if !ok {
		return nil, nil
	}
	return s, nil
}

var (
	tenantCode = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$`)
	callIDRe   = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)
)

// callURL is the call's page in MiiTel Analytics; nothing when the parts could not form a
// safe URL (a tenant code is a DNS label, a call id a UUID).
func callURL(p ...any) (any, error) {
	tenant, ok1 := text(p[0])
	id, ok2 := text(p[1])
	if !ok1 || !ok2 || !tenantCode.MatchString(tenant) || !callIDRe.MatchString(id) {
		return nil, nil
	}
	return "https://" + tenant + ".miitel.jp/app/calls/" + id, nil
}

// lookup maps key through a table: its value, else the table's default, else nothing.
func (b *builtins) lookup(p ...any) (any, error) {
	t, err := b.table(p[0])
	if err != nil {
		return nil, err
	}
	var key string
	var ok bool
	if n, isInt := p[1].(int); isInt {
		key, ok = fmt.Sprint(n), true
	} else {
		key, ok = text(p[1])
	}
	if ok {
		if v, found := t.values[key]; found {
			return v, nil
		}
	}
	return t.def, nil
}

// lookupFirst maps the first key that the table lists (e.g. the first memo that is a known
// disposition); else the default, else nothing.
func (b *builtins) lookupFirst(p ...any) (any, error) {
	t, err := b.table(p[0])
	if err != nil {
		return nil, err
	}
	var out any
	try := func(k string) bool {
		if v, found := t.values[k]; found {
			out = v
			return true
		}
		return false
	}
	switch keys := p[1].(type) {
	case []string:
		for _, k := range keys {
			if try(k) {
				break
			}
		}
	case []miitel.Tag:
		for _, k := range keys {
			if try(k.Value) {
				break
			}
		}
	case []any:
		for _, k := range keys {
			if tg, isTag := k.(miitel.Tag); isTag {
				k = tg.Value
			}
			if s, ok := text(k); ok && try(s) {
				break
			}
		}
	}
	if out != nil {
		return out, nil
	}
	return t.def, nil
}

func (b *builtins) table(name any) (*table, error) {
	s, _ := name.(string)
	t, ok := b.tables[s]
	if !ok {
		return nil, fmt.Errorf("unknown table %q", s)
	}
	return t, nil
}

// funcType is a value of the function type func(args...) ret, for expr.Function's signatures.
func funcType(ret any, args ...any) any {
	in := make([]reflect.Type, len(args))
	for i, a := range args {
		in[i] = reflect.TypeOf(a)
	}
	return reflect.New(reflect.FuncOf(in, []reflect.Type{reflect.TypeOf(ret)}, false)).Interface()
}
