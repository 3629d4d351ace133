package mappers

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// pos is where a node starts in the file. For an expression it also says how to find a
// character inside it: a one-line scalar and a literal block (|) map exactly; a folded or
// multi-line scalar only to its start.
type pos struct {
	line, col int
	// block: literal block scalar; expression line k is file line line+k, column indent+col.
	block  bool
	indent int
	// exact: columns inside a one-line scalar map one to one (no escapes, no folding).
	exact bool
}

// at maps a 1-based line and 0-based rune column inside an expression to the file.
func (p pos) at(line, col int) (int, int, bool) {
	switch {
	case p.block:
		return p.line + line, p.indent + col + 1, true
	case p.exact && line <= 1:
		return p.line, p.col + col, true
	}
	return p.line, p.col, false
}

func (e *Expr) setPos(q pos)          { e.at = q }
func (l *Literal) setPos(q pos)       { l.at = q }
func (d *ExternalIDDef) setPos(q pos) { d.at = q }
func (d *SkipRule) setPos(q pos)      { d.at = q }
func (d *TableDef) setPos(q pos)      { d.at = q }
func (d *FieldDef) setPos(q pos)      { d.at = q }
func (d *ContactDef) setPos(q pos)    { d.at = q }
func (d *OwnerDef) setPos(q pos)      { d.at = q }

type positioned interface{ setPos(pos) }

// decoder decodes a YAML AST into the File types strictly, collecting every problem instead
// of stopping at the first, which is why it walks the AST itself rather than using
// yaml.Unmarshal (that reports one error).
type decoder struct {
	file string
	errs ErrorList
	// at is where each decoded path's value starts, for checks made after decoding.
	at map[string]pos
}

func (d *decoder) errorf(n ast.Node, path, format string, a ...any) {
	p := nodePos(n)
	d.errs = append(d.errs, &Error{File: d.file, Line: p.line, Col: p.col, Path: path, Msg: fmt.Sprintf(format, a...)})
}

// decodeFile parses src and decodes it into f.
func (d *decoder) decodeFile(src []byte, f *File) {
	tree, err := parser.ParseBytes(src, 0)
	if err != nil {
		e := &Error{File: d.file, Msg: err.Error()}
		var ye yaml.Error
		if errors.As(err, &ye) {
			e.Msg = ye.GetMessage()
			if tk := ye.GetToken(); tk != nil && tk.Position != nil {
				e.Line, e.Col = tk.Position.Line, tk.Position.Column
			}
		}
		d.errs = append(d.errs, e)
		return
	}
	var docs []*ast.DocumentNode
	for _, doc := range tree.Docs {
		if doc.Body != nil {
			docs = append(docs, doc)
		}
	}
	switch {
	case len(docs) == 0:
		d.errs = append(d.errs, &Error{File: d.file, Msg: "the file is empty"})
		return
	case len(docs) > 1:
		d.errorf(docs[1].Body, "", "a mapping file holds one YAML document, found %d", len(docs))
		return
	}
	d.value(docs[0].Body, reflect.ValueOf(f).Elem(), "")
}

var (
	exprType    = reflect.TypeFor[Expr]()
	literalType = reflect.TypeFor[Literal]()
)

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// value decodes node into v (addressable).
func (d *decoder) value(n ast.Node, v reflect.Value, path string) {
	n = d.unwrap(n, path)
	if n == nil {
		return
	}
	d.at[path] = nodePos(n)
	if p, ok := v.Addr().Interface().(positioned); ok {
		p.setPos(nodePos(n))
	}
	switch v.Type() {
	case exprType:
		d.expr(n, v.Addr().Interface().(*Expr), path)
		return
	case literalType:
		d.literal(n, v.Addr().Interface().(*Literal), path)
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		// null leaves an optional text (a table's default) unset; anywhere else it is
		// reported by the element's own decoder ("want a mapping, got nothing").
		if _, null := n.(*ast.NullNode); null && v.Type().Elem().Kind() == reflect.String {
			return
		}
		e := reflect.New(v.Type().Elem())
		d.value(n, e.Elem(), path)
		v.Set(e)
	case reflect.String:
		s, ok := scalarText(n)
		if !ok {
			d.errorf(n, path, "want text, got %s", describe(n))
			return
		}
		v.SetString(s)
	case reflect.Int:
		in, ok := n.(*ast.IntegerNode)
		if !ok {
			d.errorf(n, path, "want an integer, got %s", describe(n))
			return
		}
		i, err := strconv.Atoi(in.GetToken().Value)
		if err != nil {
			d.errorf(n, path, "want an integer, got %s", in.GetToken().Value)
			return
		}
		v.SetInt(int64(i))
	case reflect.Bool:
		b, ok := n.(*ast.BoolNode)
		if !ok {
			d.errorf(n, path, "want true or false, got %s", describe(n))
			return
		}
		v.SetBool(b.Value)
	case reflect.Slice:
		if _, null := n.(*ast.NullNode); null {
			return
		}
		seq, ok := n.(*ast.SequenceNode)
		if !ok {
			d.errorf(n, path, "want a list, got %s", describe(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(seq.Values), len(seq.Values))
		for i, item := range seq.Values {
			d.value(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.Map:
		if _, null := n.(*ast.NullNode); null {
			return
		}
		m, ok := d.mapping(n, path)
		if !ok {
			return
		}
		out := reflect.MakeMapWithSize(v.Type(), len(m.Values))
		seen := map[string]bool{}
		for _, kv := range m.Values {
			key, ok := d.key(kv, path)
			if !ok {
				continue
			}
			kp := join(path, key)
			if seen[key] {
				d.errorf(kv.Key, kp, "duplicate key %q", key)
				continue
			}
			seen[key] = true
			e := reflect.New(v.Type().Elem()).Elem()
			d.value(kv.Value, e, kp)
			out.SetMapIndex(reflect.ValueOf(key), e)
		}
		v.Set(out)
	case reflect.Struct:
		d.structure(n, v, path)
	default:
		panic(fmt.Sprintf("mappers: decoder cannot decode into %s", v.Type()))
	}
}

// unwrap strips explicit tags and rejects anchors and aliases, which would make an error's
// position ambiguous (the same node reached by several paths).
func (d *decoder) unwrap(n ast.Node, path string) ast.Node {
	for {
		switch t := n.(type) {
		case *ast.TagNode:
			n = t.Value
		case *ast.AnchorNode, *ast.AliasNode:
			d.errorf(n, path, "anchors and aliases are not supported in mapping files")
			return nil
		default:
			return n
		}
	}
}

func (d *decoder) mapping(n ast.Node, path string) (*ast.MappingNode, bool) {
	switch m := n.(type) {
	case *ast.MappingNode:
		return m, true
	case *ast.MappingValueNode:
		return &ast.MappingNode{BaseNode: m.BaseNode, Start: m.Start, Values: []*ast.MappingValueNode{m}}, true
	}
	d.errorf(n, path, "want a mapping (key: value), got %s", describe(n))
	return nil, false
}

func (d *decoder) key(kv *ast.MappingValueNode, path string) (string, bool) {
	k, ok := scalarText(kv.Key)
	if !ok {
		d.errorf(kv.Key, path, "a key must be text, got %s", describe(kv.Key))
	}
	return k, ok
}

type fieldInfo struct {
	name     string
	index    int
	required bool
	nonEmpty bool // jsonschema minLength=1 or minItems=1
}

var structFields sync.Map // reflect.Type -> []fieldInfo

func fieldsOf(t reflect.Type) []fieldInfo {
	if fs, ok := structFields.Load(t); ok {
		return fs.([]fieldInfo)
	}
	var fs []fieldInfo
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		if !f.IsExported() || tag == "" || tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		fi := fieldInfo{name: name, index: i}
		for _, opt := range strings.Split(f.Tag.Get("jsonschema"), ",") {
			fi.required = fi.required || opt == "required"
			fi.nonEmpty = fi.nonEmpty || opt == "minLength=1" || opt == "minItems=1"
		}
		fs = append(fs, fi)
	}
	structFields.Store(t, fs)
	return fs
}

func (d *decoder) structure(n ast.Node, v reflect.Value, path string) {
	m, ok := d.mapping(n, path)
	if !ok {
		return
	}
	fs := fieldsOf(v.Type())
	seen := map[string]bool{}
	for _, kv := range m.Values {
		key, ok := d.key(kv, path)
		if !ok {
			continue
		}
		kp := join(path, key)
		var fi *fieldInfo
		for i := range fs {
			if fs[i].name == key {
				fi = &fs[i]
			}
		}
		if fi == nil {
			d.errorf(kv.Key, kp, "unknown key %q (known: %s)", key, knownKeys(fs))
			continue
		}
		if seen[key] {
			d.errorf(kv.Key, kp, "duplicate key %q", key)
			continue
		}
		seen[key] = true
		fv := v.Field(fi.index)
		errs := len(d.errs)
		d.value(kv.Value, fv, kp)
		if fi.nonEmpty && len(d.errs) == errs && fv.Len() == 0 {
			d.errorf(kv.Value, kp, "must not be empty")
		}
	}
	for _, fi := range fs {
		if fi.required && !seen[fi.name] {
			d.errorf(n, path, "missing required key %q", fi.name)
		}
	}
}

func knownKeys(fs []fieldInfo) string {
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = f.name
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func (d *decoder) expr(n ast.Node, e *Expr, path string) {
	switch t := n.(type) {
	case *ast.StringNode:
		e.Src = t.Value
	case *ast.LiteralNode:
		e.Src = t.Value.Value
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode:
		e.Src = n.GetToken().Value
	case *ast.NullNode:
		d.errorf(n, path, "the expression is empty")
		return
	default:
		d.errorf(n, path, "want an expression (text), got %s", describe(n))
		return
	}
	if strings.TrimSpace(e.Src) == "" {
		d.errorf(n, path, "the expression is empty")
	}
}

func (d *decoder) literal(n ast.Node, l *Literal, path string) {
	switch t := n.(type) {
	case *ast.StringNode:
		l.Value = t.Value
	case *ast.LiteralNode:
		l.Value = t.Value.Value
	case *ast.IntegerNode:
		i, err := strconv.ParseInt(t.GetToken().Value, 0, 64)
		if err != nil {
			d.errorf(n, path, "integer %s out of range", t.GetToken().Value)
			return
		}
		l.Value = i
	case *ast.FloatNode:
		l.Value = t.Value
	case *ast.BoolNode:
		l.Value = t.Value
	default:
		d.errorf(n, path, "want text, a number or a boolean, got %s", describe(n))
	}
}

// scalarText is the text of a string scalar, or of a number written without quotes (ids and
// keys like 0 or 12345 are text to a CRM). Booleans are not accepted as text: yes/no/true
// written bare are almost always a mistake there.
func scalarText(n ast.Node) (string, bool) {
	switch t := n.(type) {
	case *ast.StringNode:
		return t.Value, true
	case *ast.LiteralNode:
		return t.Value.Value, true
	case *ast.IntegerNode, *ast.FloatNode:
		return t.GetToken().Value, true
	}
	return "", false
}

func describe(n ast.Node) string {
	switch n.(type) {
	case *ast.NullNode:
		return "nothing (null)"
	case *ast.MappingNode, *ast.MappingValueNode:
		return "a mapping"
	case *ast.SequenceNode:
		return "a list"
	case *ast.BoolNode:
		return "a boolean"
	case *ast.IntegerNode:
		return "an integer"
	case *ast.FloatNode:
		return "a number"
	case *ast.StringNode, *ast.LiteralNode:
		return "text"
	}
	return n.Type().String()
}

// nodePos is where n starts, and for scalars how to map columns inside it.
func nodePos(n ast.Node) pos {
	switch t := n.(type) {
	case *ast.LiteralNode:
		p := tokenPos(t.Start)
		if strings.HasPrefix(t.Start.Value, "|") {
			p.block = true
			p.indent = blockIndent(t.Value.GetToken().Origin)
		}
		return p
	case *ast.MappingValueNode:
		return nodePos(t.Key)
	case *ast.MappingNode:
		// A block mapping's own token is its first ':'; point at its first key instead.
		if len(t.Values) > 0 && !t.IsFlowStyle {
			return nodePos(t.Values[0].Key)
		}
	case *ast.StringNode:
		tk := t.GetToken()
		p := tokenPos(tk)
		origin := strings.TrimRight(tk.Origin, " \t\r\n")
		switch tk.Type {
		case token.DoubleQuoteType:
			p.col++
			p.exact = !strings.ContainsAny(origin, "\n\\")
		case token.SingleQuoteType:
			p.col++
			p.exact = !strings.Contains(origin, "\n") && !strings.Contains(strings.Trim(strings.TrimSpace(origin), "'"), "''")
		default:
			p.exact = !strings.Contains(strings.TrimLeft(origin, " \t\r\n"), "\n")
		}
		return p
	}
	if n == nil {
		return pos{}
	}
	p := tokenPos(n.GetToken())
	p.exact = true
	return p
}

func tokenPos(tk *token.Token) pos {
	if tk == nil || tk.Position == nil {
		return pos{}
	}
	return pos{line: tk.Position.Line, col: tk.Position.Column}
}

// blockIndent is the indentation of a literal block's first non-empty line.
func blockIndent(origin string) int {
	for _, line := range strings.Split(origin, "\n") {
		if strings.TrimSpace(line) != "" {
			return len(line) - len(strings.TrimLeft(line, " "))
		}
	}
	return 0
}
