// Command miitel-crm-sync receives MiiTel Outgoing Webhook requests and writes every call, once,
// as an activity into a CRM. One binary, several subcommands; main only wires.
//
// The subcommands are github.com/spf13/cobra commands, laid out as gh lays out its own: per
// command an options struct, a newXxxCmd that only parses flags into it, and a run function
// that gets the options and the process's streams (environment), so tests run every command
// in-process with fake streams.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
)

// Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

const rootName = "miitel-crm-sync"

// usageError marks an error as the caller's fault (bad flag, bad config): exit code 2.
// config: the configuration is at fault, not the command line (no pointer to --help).
type usageError struct {
	err    error
	config bool
}

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, a ...any) error { return usageError{err: fmt.Errorf(format, a...)} }

// configError marks err as a problem of the configuration: exit 2, without the --help hint.
func configError(err error) error { return usageError{err: err, config: true} }

// errReported means the problems were already printed (one per line); main only sets the
// exit code and prints the summary the error wraps it in.
var errReported = errors.New("see the errors above")

// environment is what a subcommand may touch of the process, passed in so tests can run
// subcommands in-process.
type environment struct {
	stdout, stderr io.Writer
	stdin          io.Reader
	getenv         func(string) string
	// isTerminal says whether w is a terminal (log.format auto); nil: a real check of
	// *os.File streams.
	isTerminal func(w io.Writer) bool
	// connectors builds a connection's connector; nil: newConnector, the real CRMs. Tests
	// inject fakes (connection checks).
	connectors connectorBuilder
	// redisLog is go-redis's logger, which main installs; a command points it at its own
	// logger. Nil (commands run in-process by tests): go-redis keeps its default.
	redisLog *redisLogSink
}

func (e *environment) terminal(w io.Writer) bool {
	if e.isTerminal != nil {
		return e.isTerminal(w)
	}
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (e *environment) connectorBuilder() connectorBuilder {
	if e.connectors != nil {
		return e.connectors
	}
	return newConnector
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// go-redis logs through one global: set once, here, at process start; each command
	// points it at its own logger.
	redisLog := newRedisLogSink(os.Stderr)
	redis.SetLogger(redisLog)
	code := run(ctx, &environment{stdout: os.Stdout, stderr: os.Stderr, stdin: os.Stdin, getenv: os.Getenv, redisLog: redisLog}, os.Args[1:])
	stop()
	os.Exit(code)
}

// run runs one command line and returns the exit code. Errors are printed once, prefixed
// with the command they belong to ("miitel-crm-sync mapping validate: ..."); a config with
// several problems is printed one problem per line.
func run(ctx context.Context, env *environment, args []string) int {
	root := newRootCmd(env)
	root.SetArgs(longFlags(root, args, env.stderr))
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	prefix := rootName
	if cmd != nil {
		prefix = cmd.CommandPath()
	}
	var list config.ErrorList
	if errors.As(err, &list) {
		for _, e := range list {
			fmt.Fprintln(env.stderr, e)
		}
		fmt.Fprintf(env.stderr, "%s: the configuration has %d problem(s)\n", prefix, len(list))
		return exitUsage
	}
	msg := strings.TrimSuffix(err.Error(), ": "+errReported.Error())
	// One prefix: an error that starts by naming the command again (a package error of
	// the same name: `config` and config's "config: open FILE: ...") loses that part.
	if cmd != nil {
		msg = strings.TrimPrefix(msg, cmd.Name()+": ")
	}
	fmt.Fprintf(env.stderr, "%s: %s\n", prefix, msg)
	var ue usageError
	if errors.As(err, &ue) {
		if cmd != nil && !ue.config {
			fmt.Fprintf(env.stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		}
		return exitUsage
	}
	return exitFailure
}

func newRootCmd(env *environment) *cobra.Command {
	root := &cobra.Command{
		Use:   rootName,
		Short: "MiiTel Outgoing Webhook -> CRM activities (HubSpot, Salesforce)",
		Long: `miitel-crm-sync receives MiiTel's Outgoing Webhook (call history) requests and writes every
call, once, as an activity in your CRM (HubSpot calls, Salesforce Tasks).

Try it: 'miitel-crm-sync serve' runs the embedded default (port 8080, an in-process Redis,
a dry-run CRM); 'miitel-crm-sync send --url http://localhost:8080/webhooks/miitel/default
FILE' sends it a MiiTel sample.`,
		Version:       version,
		SilenceErrors: true, // run prints them, once, with the command's name
		SilenceUsage:  true, // an error is not a reason to print the whole help
		Args:          unknownCommand,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SetOut(env.stderr)
			_ = cmd.Help()
			return usagef("a command is required")
		},
	}
	root.SetOut(env.stdout)
	root.SetErr(env.stderr)
	root.SetIn(env.stdin)
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err: err} })
	root.AddCommand(
		newServeCmd(env), newReceiverCmd(env), newWorkerCmd(env),
		newSendCmd(env, nil),
		newCheckCmd(env, nil),
		newMappingCmd(env),
		newOAuthCmd(env),
		newReplayCmd(env),
		newStatusCmd(env),
		newConfigCmd(env, nil),
		newVersionCmd(env),
	)
	return root
}

// unknownCommand is the Args of a command that only groups others: any argument is a
// command it does not have.
func unknownCommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	var names []string
	for _, c := range cmd.Commands() {
		if c.IsAvailableCommand() {
			names = append(names, c.Name())
		}
	}
	hint := ""
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2 // cobra's default, applied only in its own path
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		hint = fmt.Sprintf("; did you mean %s?", strings.Join(s, " or "))
	}
	return usagef("unknown command %q (%s)%s", args[0], strings.Join(names, ", "), hint)
}

// groupCmd is a command that only groups subcommands: without one it prints its help on
// stderr and fails as a usage error.
func groupCmd(env *environment, use, short, long string) *cobra.Command {
	return &cobra.Command{
		Use: use, Short: short, Long: long,
		Args: unknownCommand,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SetOut(env.stderr)
			_ = cmd.Help()
			return usagef("a command is required")
		},
	}
}

// usageArgs wraps a cobra argument check so that its error is a usage error (exit 2).
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return usageError{err: err}
		}
		return nil
	}
}

// longFlags accepts the single-dash long flags of the commands before cobra ("-config
// FILE", as Go's flag package took them), rewriting each to its double-dash form with a
// note on stderr, so scripts written for them keep working.
func longFlags(root *cobra.Command, args []string, stderr io.Writer) []string {
	known := map[string]bool{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, fs := range []*pflag.FlagSet{c.Flags(), c.PersistentFlags()} {
			fs.VisitAll(func(f *pflag.Flag) { known[f.Name] = true })
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	out := make([]string, len(args))
	warned := map[string]bool{}
	for i, a := range args {
		out[i] = a
		if a == "--" {
			copy(out[i:], args[i:])
			break
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "-"), "=")
		if strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && len(name) > 1 && known[name] {
			out[i] = "-" + a
			if !warned[name] {
				warned[name] = true
				fmt.Fprintf(stderr, "%s: -%s is spelled --%s; the single dash will stop working\n", rootName, name, name)
			}
		}
	}
	return out
}

// exactArgs and minArgs check the number of positional arguments with a message that says
// what is expected ("exactly one task id"), as a usage error.
func exactArgs(n int, want string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s, got %d argument(s)", want, len(args))
		}
		return nil
	}
}

func minArgs(n int, want string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) < n {
			return usagef("%s", want)
		}
		return nil
	}
}

func newVersionCmd(env *environment) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintln(env.stdout, version)
			return nil
		},
	}
}

// configFlag registers --config, defaulting to $MCS_CONFIG.
func configFlag(env *environment, fs *pflag.FlagSet, p *string) {
	fs.StringVar(p, "config", env.getenv("MCS_CONFIG"), "config file (YAML); empty runs the embedded default (env MCS_CONFIG)")
	_ = cobra.MarkFlagFilename(fs, "config", "yaml", "yml")
}
