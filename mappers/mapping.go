package mappers

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"
	"github.com/nyaruka/phonenumbers"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
)

// CRMs are the values of a mapping file's crm key.
var CRMs = []string{"hubspot", "salesforce"}

// Contact lookup policies (ContactDef.OnMultiple, ContactDef.OnNone).
var (
	OnMultiple = []string{"most_recent", "skip"}
	OnNone     = []string{"unassociated", "create_contact", "create_lead"}
)

// Mapping is a compiled mapping file: every expression type-checked against Env and compiled
// once. It is immutable and safe for concurrent use; a reload builds a new Mapping.
type Mapping struct {
	file     string
	version  string
	crm      string
	object   string
	extField string
	extID    *program
	skips    []skipRule
	fields   []field
	contact  *contact
	owner    *owner
	b        *builtins
	// renderers pools *renderer: its VM keeps its stack between runs and its Env is reused,
	// so a render allocates little beyond the record.
	renderers sync.Pool
}

type program struct {
	prog *vm.Program
	path string
	src  *Expr
}

type skipRule struct {
	when   *program
	reason string
}

type field struct {
	name       string
	value      *program
	constant   any
	when       *program
	createOnly bool
	keepLonger bool
	html       bool
	maxLen     int
}

type contact struct {
	number     *program
	region     string
	field      string
	onMultiple string
	onNone     string
}

type owner struct {
	email *program
	field string
}

// Version is the content hash of the mapping file (16 hex digits of its SHA-256). Every
// record carries it, so a CRM activity can be traced to the mapping that wrote it.
func (m *Mapping) Version() string { return m.version }

// CRM is the CRM the file is written for ("hubspot", "salesforce").
func (m *Mapping) CRM() string { return m.crm }

// Object is the CRM object records are written to.
func (m *Mapping) Object() string { return m.object }

// File is the name the mapping was parsed under.
func (m *Mapping) File() string { return m.file }

// ExternalIDField is the record-key field the mapping names in external_id.field, or "" when
// it leaves the choice to the connection (salesforce.external_id_field,
// hubspot.unique_property), as the shipped mappings do.
func (m *Mapping) ExternalIDField() string { return m.extField }

// Load reads and parses a mapping file.
func Load(path string) (*Mapping, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("mappers: %w", err)
	}
	return Parse(path, src)
}

// Parse decodes, checks and compiles a mapping file. filename is used in error positions.
// On failure the error is an ErrorList holding every problem found, each
// "file:line:col: path: message".
func Parse(filename string, src []byte) (*Mapping, error) {
	var f File
	d := &decoder{file: filename, at: map[string]pos{}}
	d.decodeFile(src, &f)
	c := &compiler{file: filename, errs: d.errs, at: d.at}
	m := c.mapping(&f)
	if len(c.errs) == 0 {
		c.probe(m)
	}
	if len(c.errs) > 0 {
		c.errs.sort()
		return nil, c.errs
	}
	m.version = versionOf(sha256.Sum256(src))
	return m, nil
}

// versionOf is a mapping's version from the SHA-256 of its file.
func versionOf(sum [32]byte) string { return hex.EncodeToString(sum[:8]) }

// compiler checks a decoded File and compiles its expressions, collecting every problem.
type compiler struct {
	file string
	errs ErrorList
	at   map[string]pos // where each YAML path's value is
	b    *builtins
	opts []expr.Option
}

func (c *compiler) errorAt(at pos, path, format string, a ...any) {
	c.errs = append(c.errs, &Error{File: c.file, Line: at.line, Col: at.col, Path: path, Msg: fmt.Sprintf(format, a...)})
}

// errorf records a problem with the value at path.
func (c *compiler) errorf(path, format string, a ...any) {
	c.errorAt(c.at[path], path, format, a...)
}

var regionRe = regexp.MustCompile(`^[A-Z]{2}$`)

// knownRegion reports whether r is a region libphonenumber has a numbering plan for.
func knownRegion(r string) bool {
	return regionRe.MatchString(r) && phonenumbers.GetCountryCodeForRegion(r) != 0
}

func (c *compiler) region(r string, path string) string {
	if r != "" && !knownRegion(r) {
		c.errorf(path, "unknown region %q (an ISO 3166 alpha-2 code such as JP)", r)
	}
	return r
}

func (c *compiler) mapping(f *File) *Mapping {
	m := &Mapping{file: c.file, crm: f.CRM, object: f.Object}
	if f.Version != 0 && f.Version != 1 {
		c.errorf("version", "unsupported version %d (this build reads version 1)", f.Version)
	}
	if f.CRM != "" && !slices.Contains(CRMs, f.CRM) {
		c.errorf("crm", "unknown crm %q (one of %s)", f.CRM, strings.Join(CRMs, ", "))
	}

	c.b = &builtins{tables: map[string]*table{}, loc: time.UTC, region: DefaultRegion}
	tz := f.Timezone
	if tz == "" {
		tz = DefaultTimezone
	}
	if loc, err := time.LoadLocation(tz); err != nil {
		c.errorf("timezone", "unknown time zone %q (an IANA name such as Asia/Tokyo)", f.Timezone)
	} else {
		c.b.loc = loc
	}
	if r := c.region(f.Region, "region"); r != "" {
		c.b.region = r
	}
	for name, t := range f.Tables {
		tb := &table{values: make(map[string]any, len(t.Values))}
		for k, v := range t.Values {
			tb.values[k] = v
		}
		if t.Default != nil {
			tb.def = *t.Default
		}
		c.b.tables[name] = tb
	}
	m.b = c.b
	c.opts = append([]expr.Option{expr.Env(Env{})}, c.b.options()...)

	x := f.ExternalID
	if x == nil {
		x = &ExternalIDDef{}
	}
	m.extField = x.Field
	src := x.Value
	if src == nil {
		src = &Expr{Src: "detail.id", at: x.at}
	}
	m.extID = c.compile(src, "external_id.value", wantText)
	for i, s := range f.Skip {
		path := fmt.Sprintf("skip[%d]", i)
		m.skips = append(m.skips, skipRule{when: c.compile(&s.When, path+".when", wantBool), reason: s.Reason})
	}
	seen := map[string]int{}
	for i, fd := range f.Fields {
		path := fmt.Sprintf("fields[%d]", i)
		if j, dup := seen[fd.Name]; dup && fd.Name != "" {
			c.errorf(path+".name", "field %q is already set by fields[%d]", fd.Name, j)
		}
		seen[fd.Name] = i
		if fd.Name != "" && fd.Name == m.extField {
			c.errorf(path+".name", "field %q is the external id field; it is sent by the connector, not as a field", fd.Name)
		}
		fl := field{name: fd.Name, createOnly: fd.CreateOnly, keepLonger: fd.KeepLonger, html: fd.HTML, maxLen: fd.MaxLen}
		switch {
		case (fd.Value == nil) == (fd.Const == nil):
			c.errorAt(fd.at, path, "set exactly one of value (an expression) or const (a constant)")
		case fd.Value != nil:
			fl.value = c.compile(fd.Value, path+".value", wantValue)
		default:
			fl.constant = fd.Const.Value
			if s, ok := fl.constant.(string); ok && fd.MaxLen > 0 && utf16Len(s) > fd.MaxLen {
				c.errorf(path+".const", "the constant is longer than max_len %d", fd.MaxLen)
			}
		}
		if fd.MaxLen < 0 {
			c.errorf(path+".max_len", "max_len must be positive")
		}
		if fd.When != nil {
			fl.when = c.compile(fd.When, path+".when", wantBool)
		}
		m.fields = append(m.fields, fl)
	}
	if ct := f.Contact; ct != nil {
		m.contact = &contact{
			number:     c.compile(&ct.Number, "contact.number", wantText),
			region:     c.region(ct.Region, "contact.region"),
			field:      ct.Field,
			onMultiple: ct.OnMultiple,
			onNone:     ct.OnNone,
		}
		if m.contact.region == "" {
			m.contact.region = c.b.region
		}
		if m.contact.onMultiple == "" {
			m.contact.onMultiple = OnMultiple[0]
		} else if !slices.Contains(OnMultiple, ct.OnMultiple) {
			c.errorf("contact.on_multiple", "unknown policy %q (one of %s)", ct.OnMultiple, strings.Join(OnMultiple, ", "))
		}
		if m.contact.onNone == "" {
			m.contact.onNone = OnNone[0]
		} else if !slices.Contains(OnNone, ct.OnNone) {
			c.errorf("contact.on_none", "unknown policy %q (one of %s)", ct.OnNone, strings.Join(OnNone, ", "))
		}
	}
	if o := f.Owner; o != nil {
		m.owner = &owner{email: c.compile(&o.Email, "owner.email", wantText), field: o.Field}
	}
	return m
}

type want int

const (
	wantValue want = iota // a field value: text, number, boolean or time
	wantBool              // a condition
	wantText              // an id, a phone number, an e-mail
)

var timeType = reflect.TypeFor[time.Time]()

// compile compiles one expression against Env and checks what it yields. A failure is
// recorded at the expression's position (at the offending character where expr says which).
func (c *compiler) compile(e *Expr, path string, w want) *program {
	if e == nil || strings.TrimSpace(e.Src) == "" {
		return nil // the decoder reported it
	}
	opts := c.opts
	if w == wantBool {
		opts = append(opts[:len(opts):len(opts)], expr.AsBool())
	}
	prog, err := expr.Compile(e.Src, opts...)
	if err != nil {
		c.exprError(e, path, err)
		return nil
	}
	node := prog.Node()
	if !c.checkCalls(e, path, node) {
		return nil
	}
	if t := node.Type(); t != nil {
		switch {
		case w == wantValue && !valueType(t):
			c.errorAt(e.at, path, "the expression yields %s; a field value must be text, a number, a boolean or a time", t)
			return nil
		case w == wantText && !textType(t):
			c.errorAt(e.at, path, "the expression yields %s; want text", t)
			return nil
		}
	}
	return &program{prog: prog, path: path, src: e}
}

// exprError positions an expr error in the file.
func (c *compiler) exprError(e *Expr, path string, err error) {
	var fe *file.Error
	if !errors.As(err, &fe) {
		c.errorAt(e.at, path, "%v", err)
		return
	}
	c.errorInExpr(e, path, fe.Line, fe.Column, fe.Message)
}

// errorInExpr records msg at 1-based line and 0-based column of e's source.
func (c *compiler) errorInExpr(e *Expr, path string, line, col int, msg string) {
	if line <= 0 {
		line = 1
	}
	l, cl, exact := e.at.at(line, col)
	if !exact {
		if strings.Contains(e.Src, "\n") {
			msg = fmt.Sprintf("%s (line %d, column %d of the expression)", msg, line, col+1)
		} else {
			msg = fmt.Sprintf("%s (column %d of the expression)", msg, col+1)
		}
	}
	c.errs = append(c.errs, &Error{File: c.file, Line: l, Col: cl, Path: path, Msg: msg})
}

// offsetPos turns a rune offset in src into a 1-based line and a 0-based column.
func offsetPos(src string, offset int) (line, col int) {
	line = 1
	i := 0
	for _, r := range src {
		if i == offset {
			break
		}
		if r == '\n' {
			line, col = line+1, 0
		} else {
			col++
		}
		i++
	}
	return line, col
}

// checkCalls checks the arguments that must be constants naming something the mapping knows:
// lookup tables, time zones and transcript styles. A typo there is a load error, not a dead
// letter at 3 a.m.
func (c *compiler) checkCalls(e *Expr, path string, node ast.Node) bool {
	ok := true
	report := func(n ast.Node, format string, a ...any) {
		line, col := offsetPos(e.Src, n.Location().From)
		c.errorInExpr(e, path, line, col, fmt.Sprintf(format, a...))
		ok = false
	}
	constArg := func(call *ast.CallNode, i int, what string) (string, bool) {
		if i >= len(call.Arguments) {
			return "", false
		}
		s, isStr := call.Arguments[i].(*ast.StringNode)
		if !isStr {
			report(call.Arguments[i], "the %s of %s() must be written as a quoted constant", what, call.Callee.(*ast.IdentifierNode).Value)
			return "", false
		}
		return s.Value, true
	}
	ast.Walk(&node, visitor(func(n ast.Node) {
		call, isCall := n.(*ast.CallNode)
		if !isCall {
			return
		}
		id, isIdent := call.Callee.(*ast.IdentifierNode)
		if !isIdent {
			return
		}
		switch id.Value {
		case "lookup", "lookup_first":
			if name, ok := constArg(call, 0, "table name"); ok {
				if _, known := c.b.tables[name]; !known {
					report(call.Arguments[0], "unknown table %q (tables: %s)", name, tableNames(c.b.tables))
				}
			}
		case "format_time":
			if len(call.Arguments) == 3 {
				if name, ok := constArg(call, 2, "time zone"); ok {
					if _, err := c.b.zone(name); err != nil {
						report(call.Arguments[2], "unknown time zone %q", name)
					}
				}
			}
		case "phone_e164", "phone_national":
			if len(call.Arguments) == 2 {
				if r, ok := constArg(call, 1, "region"); ok && !knownRegion(r) {
					report(call.Arguments[1], "unknown region %q", r)
				}
			}
		case "transcript":
			if len(call.Arguments) >= 2 {
				if s, ok := constArg(call, 1, "style"); ok && !transcriptStyles[s] {
					report(call.Arguments[1], "unknown transcript style %q (raw, summary, phrases, phrases_nofiller)", s)
				}
			}
		}
	}))
	return ok
}

type visitor func(ast.Node)

func (v visitor) Visit(n *ast.Node) { v(*n) }

func tableNames(t map[string]*table) string {
	if len(t) == 0 {
		return "none defined"
	}
	return strings.Join(slices.Sorted(maps.Keys(t)), ", ")
}

func valueType(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == timeType {
		return true
	}
	switch t.Kind() {
	case reflect.String, reflect.Bool, reflect.Interface,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return true
	}
	return false
}

func textType(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Kind() == reflect.String || t.Kind() == reflect.Interface
}

// Render turns one event into the record to upsert, or says why the mapping skips it. An
// error is an expression that failed on this event (see RenderError): it fails the same way
// on every retry, so the worker dead-letters it. Render never panics.
func (m *Mapping) Render(ev *miitel.Event) (rec *Record, skip *Skip, err error) {
	if ev == nil {
		return nil, nil, errors.New("mappers: render: no event")
	}
	defer func() {
		// The VM recovers panics inside expressions; this guards our own code around it.
		if r := recover(); r != nil {
			rec, skip, err = nil, nil, fmt.Errorf("mappers: render %s: internal error: %v", m.file, r)
		}
	}()
	r, ok := m.renderers.Get().(*renderer)
	if !ok {
		r = &renderer{m: m, vm: &vm.VM{}}
	}
	defer func() {
		r.env = Env{} // drop references to the event before pooling
		m.renderers.Put(r)
	}()
	r.env.fill(ev)

	for _, s := range m.skips {
		yes, err := r.bool(s.when)
		if err != nil {
			return nil, nil, err
		}
		if yes {
			return nil, &Skip{Reason: s.reason}, nil
		}
	}
	id, err := r.text(m.extID)
	if err != nil {
		return nil, nil, err
	}
	if id == "" {
		return nil, nil, m.renderError(m.extID, errors.New("the external id is empty"))
	}
	rec = &Record{
		Object:         m.object,
		ExternalID:     ExternalID{Field: m.extField, Value: id},
		Fields:         make([]Field, 0, len(m.fields)),
		MappingVersion: m.version,
	}
	for i := range m.fields {
		f := &m.fields[i]
		if f.when != nil {
			yes, err := r.bool(f.when)
			if err != nil {
				return nil, nil, err
			}
			if !yes {
				continue
			}
		}
		v := f.constant
		if f.value != nil {
			if v, err = r.run(f.value); err != nil {
				return nil, nil, err
			}
		}
		if v, err = normalize(v); err != nil {
			return nil, nil, m.renderError(f.value, err)
		}
		if v == nil {
			continue
		}
		if s, ok := v.(string); ok && f.maxLen > 0 {
			v = truncate(s, f.maxLen, TruncationMarker, f.html)
		}
		rec.Fields = append(rec.Fields, Field{Name: f.name, Value: v, CreateOnly: f.createOnly, KeepLonger: f.keepLonger})
	}
	if ct := m.contact; ct != nil {
		raw, err := r.text(ct.number)
		if err != nil {
			return nil, nil, err
		}
		if info := m.b.phone(raw, ct.region); info.ok {
			rec.Contact = &ContactLookup{
				E164:       info.e164.(string),
				National:   info.digits,
				Raw:        raw,
				Field:      ct.field,
				OnMultiple: ct.onMultiple,
				OnNone:     ct.onNone,
			}
		}
	}
	if o := m.owner; o != nil {
		email, err := r.text(o.email)
		if err != nil {
			return nil, nil, err
		}
		if email = strings.TrimSpace(email); email != "" {
			rec.Owner = &OwnerLookup{Email: email, Field: o.field}
		}
	}
	return rec, nil, nil
}

// renderer is the state of one Render call.
type renderer struct {
	m   *Mapping
	env Env
	vm  *vm.VM
}

func (r *renderer) run(p *program) (any, error) {
	out, err := r.vm.Run(p.prog, &r.env)
	if err != nil {
		return nil, r.m.renderError(p, err)
	}
	return out, nil
}

func (r *renderer) bool(p *program) (bool, error) {
	v, err := r.run(p)
	if err != nil {
		return false, err
	}
	b, _ := v.(bool)
	return b, nil
}

// text runs p and returns its text; nothing (nil) is "".
func (r *renderer) text(p *program) (string, error) {
	v, err := r.run(p)
	if err != nil {
		return "", err
	}
	v, err = normalize(v)
	if err != nil {
		return "", r.m.renderError(p, err)
	}
	switch t := v.(type) {
	case nil:
		return "", nil
	case string:
		return t, nil
	}
	return "", r.m.renderError(p, fmt.Errorf("the expression yields %T; want text", v))
}

func (m *Mapping) renderError(p *program, err error) error {
	re := &RenderError{File: m.file, Err: err}
	if p == nil {
		return re
	}
	re.Path = p.path
	re.Line, re.Col = p.src.at.line, p.src.at.col
	var fe *file.Error
	if errors.As(err, &fe) {
		re.Err = errors.New(fe.Message)
		re.Line, re.Col, _ = p.src.at.at(max(fe.Line, 1), fe.Column)
	}
	return re
}

// normalize turns what an expression yielded into a record value (string, int64, float64,
// bool or time.Time), or nil when the field must be omitted: nil, a nil pointer, empty text
// or a zero time.
func normalize(v any) (any, error) {
	switch t := v.(type) {
	case nil:
		return nil, nil
	case string:
		if t == "" {
			return nil, nil
		}
		return v, nil // already boxed: returning t would allocate again
	case *string:
		if t == nil {
			return nil, nil
		}
		return normalize(*t)
	case bool:
		return v, nil
	case *bool:
		if t == nil {
			return nil, nil
		}
		return *t, nil
	case int:
		return int64(t), nil
	case int64:
		return v, nil
	case *int64:
		if t == nil {
			return nil, nil
		}
		return *t, nil
	case float64:
		if math.IsNaN(t) || math.IsInf(t, 0) {
			return nil, fmt.Errorf("the expression yields %v, which no CRM accepts", t)
		}
		return v, nil
	case *float64:
		if t == nil {
			return nil, nil
		}
		return normalize(*t)
	case time.Time:
		if t.IsZero() {
			return nil, nil
		}
		return v, nil
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer:
		if rv.IsNil() {
			return nil, nil
		}
		return normalize(rv.Elem().Interface())
	case reflect.Int8, reflect.Int16, reflect.Int32:
		return rv.Int(), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if rv.Uint() > math.MaxInt64 {
			return nil, fmt.Errorf("the expression yields %v, too large", v)
		}
		return int64(rv.Uint()), nil
	case reflect.Float32:
		return normalize(rv.Float())
	case reflect.String:
		return normalize(rv.String())
	}
	return nil, fmt.Errorf("the expression yields %T; a field value must be text, a number, a boolean or a time", v)
}
