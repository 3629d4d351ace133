package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/receiver"
)

// errReported means the problems were already printed (one per line); main only sets exit 1.
var errReported = errors.New("see the errors above")

// runMapping is `mapping validate|preview|schema|example`: the tools a CRM admin uses before a
// mapping goes live.
func runMapping(ctx context.Context, env *environment, args []string) error {
	sub := map[string]func(context.Context, *environment, []string) error{
		"validate": runMappingValidate,
		"preview":  runMappingPreview,
		"schema":   runMappingSchema,
		"example":  runMappingExample,
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(env.stderr, `Usage: miitel-crm-sync mapping <command>

Commands:
  validate FILE...                          check mapping files; errors as file:line:col: message
  preview --mapping FILE PAYLOAD.json...    print the CRM record each call detail becomes (JSON)
  schema                                    print the JSON Schema of a mapping file
  example NAME                              print a shipped mapping (hubspot, salesforce)

The language is described in docs/mapping.md.
`)
		if len(args) == 0 {
			return usagef("mapping: a command is required")
		}
		return nil
	}
	run, ok := sub[args[0]]
	if !ok {
		return usagef("mapping: unknown command %q (validate, preview, schema, example)", args[0])
	}
	return run(ctx, env, args[1:])
}

func runMappingValidate(_ context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "mapping validate", "FILE...",
		"Checks mapping files: YAML structure, keys, expressions and their types, tables, and that\n"+
			"no expression fails on the shapes MiiTel sends. Exit 0 when all are valid, 1 otherwise;\n"+
			"each problem is printed to stderr as file:line:col: path: message.")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("mapping validate: name at least one file")
	}
	invalid := 0
	for _, path := range fs.Args() {
		m, err := mappers.Load(path)
		if err != nil {
			invalid++
			if list := mappers.Errors(err); list != nil {
				for _, e := range list {
					fmt.Fprintln(env.stderr, e)
				}
			} else {
				fmt.Fprintln(env.stderr, err) // unreadable; the error names the file
			}
			continue
		}
		fmt.Fprintf(env.stdout, "%s: ok (crm %s, object %s, version %s)\n", path, m.CRM(), m.Object(), m.Version())
	}
	if invalid > 0 {
		return fmt.Errorf("mapping validate: %d of %d file(s) invalid: %w", invalid, fs.NArg(), errReported)
	}
	return nil
}

// previewResult is what one call detail becomes.
type previewResult struct {
	Payload  string          `json:"payload"`
	DetailID string          `json:"detail_id,omitempty"`
	Kind     string          `json:"kind,omitempty"`
	Record   *mappers.Record `json:"record,omitempty"`
	Skip     *mappers.Skip   `json:"skip,omitempty"`
	Error    string          `json:"error,omitempty"`
}

func runMappingPreview(_ context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "mapping preview", "--mapping FILE [--route NAME] PAYLOAD.json...",
		"Renders MiiTel request bodies (as MiiTel POSTs them; - reads stdin) through a mapping and\n"+
			"prints, as a JSON array on stdout, the CRM record each call detail becomes, or why the\n"+
			"mapping skips it. A body is parsed and checked exactly as the receiver does, so one the\n"+
			"receiver would answer 400 fails here with the same message. Nothing is sent anywhere.\n"+
			"Exit 1 when a payload or a detail fails.")
	mappingPath := fs.String("mapping", "", "mapping file to render with")
	builtin := fs.String("builtin", "", "render with a shipped mapping instead (hubspot, salesforce)")
	route := fs.String("route", "preview", "route name the expressions see as route")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if (*mappingPath == "") == (*builtin == "") {
		return usagef("mapping preview: give exactly one of --mapping FILE or --builtin NAME")
	}
	if fs.NArg() == 0 {
		return usagef("mapping preview: name at least one payload file (or - for stdin)")
	}
	var m *mappers.Mapping
	var err error
	if *builtin != "" {
		m, err = mappers.Builtin(*builtin)
	} else {
		m, err = mappers.Load(*mappingPath)
	}
	if err != nil {
		if list := mappers.Errors(err); list != nil {
			for _, e := range list {
				fmt.Fprintln(env.stderr, e)
			}
			return fmt.Errorf("mapping preview: invalid mapping: %w", errReported)
		}
		return err
	}

	results := []previewResult{}
	failed := 0
	now := time.Now().UTC()
	for _, name := range fs.Args() {
		body, err := readPayload(env, name)
		if err == nil {
			var evs []*miitel.Event
			evs, err = receiver.ParseEvents(*route, body, nil, now)
			for _, ev := range evs {
				r := previewResult{Payload: name, DetailID: ev.Detail.ID, Kind: string(ev.Kind)}
				rec, skip, rerr := m.Render(ev)
				switch {
				case rerr != nil:
					failed++
					r.Error = rerr.Error()
				case skip != nil:
					r.Skip = skip
					fmt.Fprintf(env.stderr, "%s: detail %s skipped: %s\n", name, ev.Detail.ID, skip.Reason)
				default:
					r.Record = rec
				}
				results = append(results, r)
			}
		}
		if err != nil {
			failed++
			results = append(results, previewResult{Payload: name, Error: err.Error()})
		}
	}
	enc := json.NewEncoder(env.stdout)
	enc.SetEscapeHTML(false) // HubSpot bodies are HTML: show them as they will be sent
	enc.SetIndent("", "  ")
	if err := enc.Encode(results); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("mapping preview: %d payload(s) or detail(s) failed (see \"error\" in the output)", failed)
	}
	return nil
}

func readPayload(env *environment, name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(env.stdin)
	}
	return os.ReadFile(name)
}

func runMappingSchema(_ context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "mapping schema", "",
		"Prints the JSON Schema of a mapping file, for editors with yaml-language-server. Start a\n"+
			"mapping file with: # yaml-language-server: $schema=<path or URL of the schema>")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("mapping schema: takes no arguments")
	}
	b, err := mappers.Schema()
	if err != nil {
		return err
	}
	_, err = env.stdout.Write(b)
	return err
}

func runMappingExample(_ context.Context, env *environment, args []string) error {
	names := strings.Join(mappers.BuiltinNames(), ", ")
	fs := newFlagSet(env, "mapping example", "NAME",
		"Prints a shipped mapping ("+names+") to start a custom one from.")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("mapping example: name one of %s", names)
	}
	src, err := mappers.BuiltinSource(fs.Arg(0))
	if err != nil {
		return usageError{err}
	}
	_, err = env.stdout.Write(src)
	return err
}
