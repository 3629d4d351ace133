package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"time"
)

// The configuration is shown to people in three places: `miitel-crm-sync config`, the
// start-up log in JSON (one nested object a log query can reach into) and the start-up log
// in text (one line per section). All three come from one tree, built here in the order of
// the fields in config.go, with every secret masked and durations written as Go durations
// ("20s", not nanoseconds).

// object is a JSON object that keeps its keys in field order.
type object []member

type member struct {
	key   string
	value any
}

func (o object) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(m.key)
		b.Write(k)
		b.WriteByte(':')
		v, err := json.Marshal(m.value)
		if err != nil {
			return nil, err
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// String is how an object inside a list reads in a text log line: {name=sales mapping=...}.
func (o object) String() string {
	parts := make([]string, len(o))
	for i, m := range o {
		parts[i] = m.key + "=" + fmt.Sprint(m.value)
	}
	return "{" + strings.Join(parts, " ") + "}"
}

var secretType = reflect.TypeOf(Secret{})

// tree is v as the dump shows it: objects, lists and scalars.
func tree(v reflect.Value) any {
	switch {
	case v.Type() == secretType:
		return v.Interface().(Secret).String()
	case v.Type() == durationType:
		return time.Duration(v.Int()).String()
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return nil
		}
		return tree(v.Elem())
	case reflect.Struct:
		var o object
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !f.IsExported() || name == "-" || name == "" {
				continue
			}
			fv := v.Field(i)
			if strings.Contains(opts, "omitempty") && fv.IsZero() {
				continue
			}
			o = append(o, member{name, tree(fv)})
		}
		return o
	case reflect.Slice:
		list := make([]any, v.Len()) // [], not null: "no trusted proxies" reads as such
		for i := range list {
			list[i] = tree(v.Index(i))
		}
		return list
	}
	return v.Interface()
}

func (c *Config) tree() object { return tree(reflect.ValueOf(*c)).(object) }

// Dump is the resolved configuration as one line of JSON, keys in config.go order, secrets
// masked (where each comes from, never its value), durations as Go durations.
func (c *Config) Dump() string {
	b, err := json.Marshal(c.tree())
	if err != nil {
		return fmt.Sprintf("config: dump: %v", err)
	}
	return string(b)
}

// DumpIndented is Dump for a person: indented JSON.
func (c *Config) DumpIndented() string {
	b, err := json.MarshalIndent(c.tree(), "", "  ")
	if err != nil {
		return fmt.Sprintf("config: dump: %v", err)
	}
	return string(b)
}

// LogValue makes the configuration a nested group in a log record: in JSON one object
// ({"config":{"log":{...},"server":{...},"routes":[...]}}), secrets masked.
func (c *Config) LogValue() slog.Value { return groupValue(c.tree()) }

func groupValue(o object) slog.Value {
	attrs := make([]slog.Attr, 0, len(o))
	for _, m := range o {
		attrs = append(attrs, attr(m.key, m.value))
	}
	return slog.GroupValue(attrs...)
}

func attr(key string, v any) slog.Attr {
	if o, ok := v.(object); ok {
		return slog.Attr{Key: key, Value: groupValue(o)}
	}
	return slog.Any(key, v)
}

// Section is one part of the configuration as one text log line: Name is "server",
// "routes[0]", ...; Attrs its keys (nested keys grouped: sentinel.master_name=...).
type Section struct {
	Name  string
	Attrs []slog.Attr
}

// Sections splits the configuration for a text log, one section per top-level key and one
// per element of the lists (routes[0], connections[1]); a list that is empty is one section
// saying so.
func (c *Config) Sections() []Section {
	var out []Section
	for _, m := range c.tree() {
		switch v := m.value.(type) {
		case object:
			out = append(out, Section{Name: m.key, Attrs: groupValue(v).Group()})
		case []any:
			for i, e := range v {
				name := fmt.Sprintf("%s[%d]", m.key, i)
				if o, ok := e.(object); ok {
					out = append(out, Section{Name: name, Attrs: groupValue(o).Group()})
				} else {
					out = append(out, Section{Name: name, Attrs: []slog.Attr{slog.Any("value", e)}})
				}
			}
			if len(v) == 0 {
				out = append(out, Section{Name: m.key, Attrs: []slog.Attr{slog.Int("count", 0)}})
			}
		default:
			out = append(out, Section{Name: m.key, Attrs: []slog.Attr{slog.Any("value", v)}})
		}
	}
	return out
}
