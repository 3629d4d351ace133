package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/token"
)

// Secret is a credential named in the config file by where it lives, never by its value:
//
//	password: {env: REDIS_PASSWORD}
//	password: {file: /var/run/secrets/redis/password}
//
// Load resolves it; Value returns the secret; String and JSON show it masked.
type Secret struct {
	Env  string `yaml:"env" json:"env,omitempty"`
	File string `yaml:"file" json:"file,omitempty"`

	value string
	// bad is why the YAML node is not a valid secret (a literal value, an unknown key), at
	// line:col. Decoding carries on so that Load reports it with every other problem; a bad
	// secret counts as set, so it is not reported a second time as missing.
	bad       string
	line, col int
}

// ErrLiteralSecret is returned when a secret is written into the YAML file itself.
var ErrLiteralSecret = errors.New("secrets must not be written in the config file: use {env: NAME} or {file: PATH}")

// UnmarshalYAML accepts only the {env|file} form so a pasted token is refused, not stored.
// It works on the AST node so every problem carries the line and column of the offending
// value; the problem is kept in the Secret and reported by Load (see bad).
func (s *Secret) UnmarshalYAML(node ast.Node) error {
	if node.Type() == ast.NullType {
		return nil
	}
	out, tk, err := parseSecret(node)
	if err != nil {
		*s = Secret{bad: err.Error()}
		if tk != nil && tk.Position != nil {
			s.line, s.col = tk.Position.Line, tk.Position.Column
		}
		return nil
	}
	*s = out
	return nil
}

// parseSecret reads a {env|file} node; on error it returns the token the error is about.
func parseSecret(node ast.Node) (Secret, *token.Token, error) {
	m, ok := node.(*ast.MappingNode)
	if !ok {
		return Secret{}, node.GetToken(), ErrLiteralSecret
	}
	var out Secret
	for _, kv := range m.Values {
		key := kv.Key.String()
		val, ok := kv.Value.(*ast.StringNode)
		if !ok {
			return Secret{}, kv.Value.GetToken(), fmt.Errorf("secret %s must be a string", key)
		}
		switch key {
		case "env":
			out.Env = val.Value
		case "file":
			out.File = val.Value
		default:
			return Secret{}, kv.Key.GetToken(), fmt.Errorf("unknown secret key %q: use env or file", key)
		}
	}
	if (out.Env == "") == (out.File == "") {
		return Secret{}, node.GetToken(), errors.New("a secret names exactly one of env or file")
	}
	return out, nil, nil
}

// problem is the decoding problem of a secret, positioned in file, or nil.
func (s Secret) problem(file string) error {
	if s.bad == "" {
		return nil
	}
	if s.line > 0 {
		return fmt.Errorf("%s:%d:%d: %s", file, s.line, s.col, s.bad)
	}
	return fmt.Errorf("%s: %s", file, s.bad)
}

// FromValue makes a resolved secret directly (tests, flags, the embedded default).
func FromValue(v string) Secret { return Secret{value: v} }

// FromEnv makes a secret read from the environment variable name at Resolve time.
func FromEnv(name string) Secret { return Secret{Env: name} }

// Set reports whether the secret is configured at all.
func (s Secret) Set() bool { return s.Env != "" || s.File != "" || s.value != "" || s.bad != "" }

// Value is the resolved secret.
func (s Secret) Value() string { return s.value }

// String masks the value so a secret printed by accident shows nothing.
func (s Secret) String() string {
	switch {
	case s.Env != "":
		return "env:" + s.Env + "(" + mask(s.value) + ")"
	case s.File != "":
		return "file:" + s.File + "(" + mask(s.value) + ")"
	case s.value != "":
		return mask(s.value)
	}
	return ""
}

// MarshalJSON keeps secrets out of the start-up config dump.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// LogValue makes Secret a slog.LogValuer, so every slog handler sees only the masked
// form, whatever it does with structs.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

func mask(v string) string {
	if v == "" {
		return "unset"
	}
	return "***"
}

// Resolve reads the secret from its environment variable or file. A file's trailing newline
// is dropped, since `kubectl create secret --from-file` and editors add one.
func (s *Secret) Resolve(getenv func(string) string) error {
	switch {
	case s.bad != "":
		return nil // reported as a decoding problem
	case s.Env != "":
		v := getenv(s.Env)
		if v == "" {
			return fmt.Errorf("environment variable %s is empty or unset", s.Env)
		}
		s.value = v
	case s.File != "":
		b, err := os.ReadFile(s.File)
		if err != nil {
			return fmt.Errorf("read secret file: %w", err)
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			return fmt.Errorf("secret file %s is empty", s.File)
		}
		s.value = v
	}
	return nil
}
