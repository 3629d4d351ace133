package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
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
}

// ErrLiteralSecret is returned when a secret is written into the YAML file itself.
var ErrLiteralSecret = errors.New("secrets must not be written in the config file: use {env: NAME} or {file: PATH}")

// UnmarshalYAML accepts only the {env|file} form so a pasted token is refused, not stored.
// It works on the AST node so every error carries the line and column of the offending value.
func (s *Secret) UnmarshalYAML(node ast.Node) error {
	if node.Type() == ast.NullType {
		return nil
	}
	m, ok := node.(*ast.MappingNode)
	if !ok {
		return &yaml.SyntaxError{Message: ErrLiteralSecret.Error(), Token: node.GetToken()}
	}
	var out Secret
	for _, kv := range m.Values {
		key := kv.Key.String()
		val, ok := kv.Value.(*ast.StringNode)
		if !ok {
			return &yaml.SyntaxError{Message: fmt.Sprintf("secret %s must be a string", key), Token: kv.Value.GetToken()}
		}
		switch key {
		case "env":
			out.Env = val.Value
		case "file":
			out.File = val.Value
		default:
			return &yaml.SyntaxError{Message: fmt.Sprintf("unknown secret key %q: use env or file", key), Token: kv.Key.GetToken()}
		}
	}
	if (out.Env == "") == (out.File == "") {
		return &yaml.SyntaxError{Message: "a secret names exactly one of env or file", Token: node.GetToken()}
	}
	*s = out
	return nil
}

// FromValue makes a resolved secret directly (tests, flags, the embedded default).
func FromValue(v string) Secret { return Secret{value: v} }

// FromEnv makes a secret read from the environment variable name at Resolve time.
func FromEnv(name string) Secret { return Secret{Env: name} }

// Set reports whether the secret is configured at all.
func (s Secret) Set() bool { return s.Env != "" || s.File != "" || s.value != "" }

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
