// Command miitel-crm-sync receives MiiTel Outgoing Webhook requests and writes every call, once,
// as an activity into a CRM. One binary, several subcommands; main only wires.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError marks an error as the caller's fault (bad flag, bad config): exit code 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// command is one subcommand. run gets the arguments after the subcommand's name.
type command struct {
	summary string
	run     func(ctx context.Context, env *environment, args []string) error
}

// environment is what a subcommand may touch of the process, passed in so tests can run
// subcommands in-process.
type environment struct {
	stdout, stderr io.Writer
	stdin          io.Reader
	getenv         func(string) string
}

func commands() map[string]command {
	return map[string]command{
		"serve":    {"run the receiver and the worker in one process", runServe},
		"receiver": {"run only the webhook receiver (HTTP)", runReceiver},
		"worker":   {"run only the CRM delivery worker", runWorker},
		"send":     {"send MiiTel payload files to a receiver, like MiiTel does (smoke and load tests)", runSend},
		"mapping":  {"validate, preview and describe mapping files", runMapping},
		"oauth":    {"connect a CRM account with OAuth2 (authorization-code flow)", runOAuth},
		"replay":   {"list, inspect and re-run dead-lettered calls", runReplay},
		"config":   {"check a config file and print it resolved, secrets masked", runConfig},
		"version":  {"print the version", runVersion},
	}
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, &environment{stdout: os.Stdout, stderr: os.Stderr, stdin: os.Stdin, getenv: os.Getenv}, os.Args[1:])
	stop()
	os.Exit(code)
}

func run(ctx context.Context, env *environment, args []string) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(env.stderr, cmds)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(env.stderr, "miitel-crm-sync: unknown command %q\n\n", args[0])
		printUsage(env.stderr, cmds)
		return exitUsage
	}
	err := cmd.run(ctx, env, args[1:])
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(env.stderr, "miitel-crm-sync %s: %v\n", args[0], err)
		return exitUsage
	default:
		fmt.Fprintf(env.stderr, "miitel-crm-sync %s: %v\n", args[0], err)
		return exitFailure
	}
}

func printUsage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "miitel-crm-sync: MiiTel Outgoing Webhook -> CRM activities (HubSpot, Salesforce)")
	fmt.Fprintln(w, "\nUsage: miitel-crm-sync <command> [flags]\n\nCommands:")
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-9s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'miitel-crm-sync <command> --help' for a command's flags.")
}

// newFlagSet makes a subcommand's flag set whose errors come back as usage errors and whose
// --help text starts with a description of the command.
func newFlagSet(env *environment, name, synopsis, description string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.stderr, "Usage: miitel-crm-sync %s %s\n\n%s\n\nFlags:\n", name, synopsis, description)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses and turns a flag error into a usage error (exit 2); --help is exit 0.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	return nil
}

func runVersion(_ context.Context, env *environment, _ []string) error {
	fmt.Fprintln(env.stdout, version)
	return nil
}
