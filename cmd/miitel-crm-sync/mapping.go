package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/receiver"
)

func newMappingCmd(env *environment) *cobra.Command {
	cmd := groupCmd(env, "mapping", "Validate, preview and describe mapping files",
		"The tools a CRM admin uses before a mapping goes live. The language is described in\ndocs/mapping.md.")
	cmd.AddCommand(newMappingValidateCmd(env), newMappingPreviewCmd(env), newMappingSchemaCmd(env), newMappingExampleCmd(env))
	return cmd
}

func newMappingValidateCmd(env *environment) *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE...",
		Short: "Check mapping files; errors as file:line:col: message",
		Long: "Checks mapping files: YAML structure, keys, expressions and their types, tables, and that\n" +
			"no expression fails on the shapes MiiTel sends. Exit 0 when all are valid, 1 otherwise;\n" +
			"each problem is printed to stderr as file:line:col: path: message.",
		Args: minArgs(1, "name at least one file"),
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return []string{"yaml", "yml"}, cobra.ShellCompDirectiveFilterFileExt
		},
		RunE: func(_ *cobra.Command, args []string) error { return runMappingValidate(env, args) },
	}
}

func runMappingValidate(env *environment, files []string) error {
	invalid := 0
	for _, path := range files {
		m, err := mappers.Load(path)
		if err != nil {
			invalid++
			printMappingErrors(env.stderr, err)
			continue
		}
		fmt.Fprintf(env.stdout, "%s: ok (crm %s, object %s, version %s)\n", path, m.CRM(), m.Object(), m.Version())
	}
	if invalid > 0 {
		return fmt.Errorf("%d of %d file(s) invalid: %w", invalid, len(files), errReported)
	}
	return nil
}

// printMappingErrors prints a mapping's problems one per line (file:line:col: message), or
// the reason the file could not be read.
func printMappingErrors(w io.Writer, err error) {
	if list := mappers.Errors(err); list != nil {
		for _, e := range list {
			fmt.Fprintln(w, e)
		}
		return
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		fmt.Fprintln(w, pe) // "open FILE: no such file or directory" names the file
		return
	}
	fmt.Fprintln(w, err)
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

// previewOptions are the flags of `mapping preview`.
type previewOptions struct {
	mapping, builtin, route string
	payloads                []string
}

func newMappingPreviewCmd(env *environment) *cobra.Command {
	o := &previewOptions{}
	cmd := &cobra.Command{
		Use:   "preview (--mapping FILE | --builtin NAME) [--route NAME] PAYLOAD.json...",
		Short: "Print the CRM record each call detail becomes (JSON)",
		Long: "Renders MiiTel request bodies (as MiiTel POSTs them; - reads stdin) through a mapping and\n" +
			"prints, as a JSON array on stdout, the CRM record each call detail becomes, or why the\n" +
			"mapping skips it. A body is parsed and checked exactly as the receiver does, so one the\n" +
			"receiver would answer 400 fails here with the same message. Nothing is sent anywhere.\n" +
			"Exit 1 when a payload or a detail fails.",
		Example: "  miitel-crm-sync mapping preview --mapping my-mapping.yaml examples/payloads/call_analysis_completed/sample1.json",
		Args:    minArgs(1, "name at least one payload file (or - for stdin)"),
		RunE: func(_ *cobra.Command, args []string) error {
			o.payloads = args
			return runMappingPreview(env, o)
		},
	}
	cmd.Flags().StringVar(&o.mapping, "mapping", "", "mapping file to render with")
	cmd.Flags().StringVar(&o.builtin, "builtin", "", "render with a shipped mapping instead ("+strings.Join(mappers.BuiltinNames(), ", ")+")")
	cmd.Flags().StringVar(&o.route, "route", "preview", "route name the expressions see as route")
	_ = cmd.MarkFlagFilename("mapping", "yaml", "yml")
	_ = cmd.RegisterFlagCompletionFunc("builtin", cobra.FixedCompletions(mappers.BuiltinNames(), cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func runMappingPreview(env *environment, o *previewOptions) error {
	if (o.mapping == "") == (o.builtin == "") {
		return usagef("give exactly one of --mapping FILE or --builtin NAME")
	}
	var m *mappers.Mapping
	var err error
	if o.builtin != "" {
		if m, err = mappers.Builtin(o.builtin); err != nil {
			return usageError{err: err}
		}
	} else if m, err = mappers.Load(o.mapping); err != nil {
		printMappingErrors(env.stderr, err)
		return fmt.Errorf("invalid mapping %s: %w", o.mapping, errReported)
	}

	results := []previewResult{}
	failed := 0
	now := time.Now().UTC()
	for _, name := range o.payloads {
		body, err := readPayload(env, name)
		if err == nil {
			var evs []*miitel.Event
			evs, err = receiver.ParseEvents(o.route, body, nil, now)
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
			results = append(results, previewResult{Payload: name, Error: payloadError(err)})
		}
	}
	enc := json.NewEncoder(env.stdout)
	enc.SetEscapeHTML(false) // HubSpot bodies are HTML: show them as they will be sent
	enc.SetIndent("", "  ")
	if err := enc.Encode(results); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d payload(s) or detail(s) failed (see \"error\" in the output)", failed)
	}
	return nil
}

// payloadError is why a body cannot be previewed, as the admin needs to read it: the
// receiver's parser prefixes its messages with its package name, which says nothing here.
func payloadError(err error) string {
	return strings.TrimPrefix(err.Error(), "receiver: ")
}

func readPayload(env *environment, name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(env.stdin)
	}
	return os.ReadFile(name)
}

func newMappingSchemaCmd(env *environment) *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of a mapping file",
		Long: "Prints the JSON Schema of a mapping file, for editors with yaml-language-server. Start a\n" +
			"mapping file with: # yaml-language-server: $schema=<path or URL of the schema>",
		Args: usageArgs(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			b, err := mappers.Schema()
			if err != nil {
				return err
			}
			_, err = env.stdout.Write(b)
			return err
		},
	}
}

func newMappingExampleCmd(env *environment) *cobra.Command {
	names := mappers.BuiltinNames()
	return &cobra.Command{
		Use:       "example NAME",
		Short:     "Print a shipped mapping (" + strings.Join(names, ", ") + ")",
		Long:      "Prints a shipped mapping (" + strings.Join(names, ", ") + ") to start a custom one from.",
		ValidArgs: names,
		Args: usageArgs(func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("name one of %s", strings.Join(names, ", "))
			}
			return nil
		}),
		RunE: func(_ *cobra.Command, args []string) error {
			src, err := mappers.BuiltinSource(args[0])
			if err != nil {
				return usageError{err: err}
			}
			_, err = env.stdout.Write(src)
			return err
		},
	}
}
