package config

import (
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

var durationType = reflect.TypeOf(time.Duration(0))

// checkDurations walks the YAML alongside the Config type and reports every duration that
// does not parse, with its position. go-yaml reports a bad duration without line and column,
// and an admin editing a ConfigMap needs to know which of a dozen timeouts is wrong.
func checkDurations(path string, src []byte) ErrorList {
	file, err := parser.ParseBytes(src, 0)
	if err != nil {
		return nil // the decoder reports syntax errors with positions
	}
	var errs ErrorList
	for _, doc := range file.Docs {
		walkDurations(path, doc.Body, reflect.TypeOf(Config{}), &errs)
	}
	return errs
}

func walkDurations(path string, n ast.Node, t reflect.Type, errs *ErrorList) {
	if n == nil {
		return
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == durationType:
		s, ok := n.(*ast.StringNode)
		if !ok {
			return
		}
		if _, err := time.ParseDuration(s.Value); err != nil {
			pos := n.GetToken().Position
			*errs = append(*errs, fmt.Errorf("%s:%d:%d: %q is not a duration (use e.g. 30s, 5m, 24h)", path, pos.Line, pos.Column, s.Value))
		}
	case t.Kind() == reflect.Struct:
		m, ok := n.(*ast.MappingNode)
		if !ok {
			return
		}
		for _, kv := range m.Values {
			if f, ok := fieldByYAMLName(t, kv.Key.String()); ok {
				walkDurations(path, kv.Value, f.Type, errs)
			}
		}
	case t.Kind() == reflect.Slice:
		if seq, ok := n.(*ast.SequenceNode); ok {
			for _, v := range seq.Values {
				walkDurations(path, v, t.Elem(), errs)
			}
		}
	}
}

func fieldByYAMLName(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); tag == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}
