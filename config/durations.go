package config

import (
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"
)

var durationType = reflect.TypeOf(time.Duration(0))

// walkDurations walks the YAML alongside the Config type and reports every duration that
// does not parse, with its position, then takes the key out of the document so decoding
// goes on (the key keeps its default) and the file's other problems are reported too.
// go-yaml reports a bad duration without line and column, and an admin editing a ConfigMap
// needs to know which of a dozen timeouts is wrong.
func walkDurations(path string, n ast.Node, t reflect.Type, errs *ErrorList) {
	if n == nil {
		return
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t.Kind() == reflect.Struct:
		m, ok := n.(*ast.MappingNode)
		if !ok {
			return
		}
		kept := m.Values[:0]
		for _, kv := range m.Values {
			f, ok := fieldByYAMLName(t, kv.Key.String())
			if ok && f.Type == durationType && !validDuration(path, kv.Value, errs) {
				continue
			}
			if ok {
				walkDurations(path, kv.Value, f.Type, errs)
			}
			kept = append(kept, kv)
		}
		m.Values = kept
	case t.Kind() == reflect.Slice:
		if seq, ok := n.(*ast.SequenceNode); ok {
			for _, v := range seq.Values {
				walkDurations(path, v, t.Elem(), errs)
			}
		}
	}
}

// validDuration reports a string that is not a Go duration. Other node types are left to
// the decoder, which names them with their position.
func validDuration(path string, n ast.Node, errs *ErrorList) bool {
	s, ok := n.(*ast.StringNode)
	if !ok {
		return true
	}
	if _, err := time.ParseDuration(s.Value); err != nil {
		pos := n.GetToken().Position
		*errs = append(*errs, fmt.Errorf("%s:%d:%d: %q is not a duration (use e.g. 30s, 5m, 24h)", path, pos.Line, pos.Column, s.Value))
		return false
	}
	return true
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
