package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/deadletter"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/replay"
)

// selectOptions are `replay`'s own flags: what to select from our dead letter, or a file of
// stored MiiTel payloads to backfill.
type selectOptions struct {
	q        deadletter.Query
	all      bool
	dryRun   bool
	list     bool
	json     bool
	fromFile string
	fromLine int
}

func (s *selectOptions) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringSliceVar(&s.q.CallIDs, "call", nil, "select by MiiTel call id (repeat or comma-separate)")
	f.StringSliceVar(&s.q.DetailIDs, "detail", nil, "select by MiiTel call detail id (repeat or comma-separate)")
	f.StringVar(&s.q.Route, "route", "", "select one route's calls (with --from-file: the route the payloads are ingested on)")
	f.StringVar(&s.q.Connection, "connection", "", "select one CRM connection's calls")
	f.StringVar(&s.q.ErrorClass, "class", "", "select by error class: transient, throttled, permanent or broken")
	f.StringVar(&s.q.ErrorCode, "code", "", "select by the CRM's error code (e.g. VALIDATION_ERROR, INVALID_FIELD, MAPPING)")
	f.StringVar(&s.q.Text, "match", "", "select calls whose error message contains this text (any case)")
	f.StringVar(&s.q.Since, "since", "", "select calls that went dead at or after: a duration back (9h, 2d), a time (09:00, today) or a date-time")
	f.StringVar(&s.q.Until, "until", "", "select calls that went dead before (same forms as --since)")
	f.IntVar(&s.q.Limit, "limit", 0, "select at most this many, the most recently dead first (0: no limit)")
	f.BoolVar(&s.all, "all", false, "confirm selecting the whole dead letter (no other selector)")
	f.BoolVar(&s.dryRun, "dry-run", false, "send nothing: show what the current mapping would send for each selected call (with --from-file: check every line)")
	f.BoolVar(&s.list, "list", false, "only list the selected calls")
	f.BoolVar(&s.json, "json", false, "print the summary as JSON")
	f.StringVar(&s.fromFile, "from-file", "", "backfill: ingest the stored MiiTel webhook bodies in this JSON-lines file (one body per line, - for stdin) through the receiver's path (authentication skipped, dedupe kept); needs --route")
	f.IntVar(&s.fromLine, "from-line", 1, "with --from-file: start at this line (resume a backfill that stopped)")
}

// selected reports whether any of the selection flags was given.
func (s *selectOptions) selected(cmd *cobra.Command) bool {
	for _, n := range []string{"call", "detail", "route", "connection", "class", "code", "match", "since", "until", "all", "limit", "from-file"} {
		if cmd.Flags().Changed(n) {
			return true
		}
	}
	return false
}

// runSelected replays what the flags select from our dead letter, or backfills a file.
func (o *replayOptions) runSelected(ctx context.Context, s *selectOptions) error {
	// Only Redis's secrets: an operator replaying calls needs no webhook or CRM credential.
	cfg, err := config.LoadFor(o.config, o.env.getenv, config.Role{})
	if err != nil {
		return configError(err)
	}
	rdb, err := dialRedis(cfg.Redis)
	if err != nil {
		return err
	}
	defer rdb.Close()
	deps := opsDeps{cfg: cfg, rdb: rdb, log: slog.New(slog.DiscardHandler)}
	if s.dryRun && s.fromFile == "" {
		// A dry run shows what the current mapping would send: load the routes' mappings as
		// the worker does (files named in the config, or the shipped ones).
		if deps.mappings, err = loadMappings(cfg); err != nil {
			return err
		}
	}
	ops, err := newOperations(deps)
	if err != nil {
		return err
	}
	if s.fromFile != "" {
		enq, err := newBackfillEnqueuer(cfg, rdb, ops.status)
		if err != nil {
			return err
		}
		return o.backfill(ctx, cfg, ops, enq, s)
	}
	sel, err := s.q.Selector(time.Now(), ops.loc)
	if err != nil {
		return usageError{err: err}
	}
	if !sel.Narrowed() && !s.all {
		return usagef("the selection names no id, route, connection, error or time: that is the whole dead letter; add --all to confirm")
	}
	if s.list {
		entries, err := ops.dead.List(ctx, sel)
		if err != nil {
			return err
		}
		if s.json {
			return writeJSON(o.env.stdout, entries)
		}
		return listDead(o.env.stdout, entries, ops.loc)
	}
	bar := o.progress("replaying")
	sum, err := ops.replayer.Replay(ctx, sel, replay.RunOptions{DryRun: s.dryRun, All: s.all, Progress: func(p replay.Progress) {
		bar.report(p.Done, p.Total)
	}})
	bar.finish()
	if s.json {
		if jerr := writeJSON(o.env.stdout, sum); jerr != nil {
			return jerr
		}
	} else {
		printReplay(o.env.stdout, sum)
	}
	if err != nil {
		return err
	}
	if sum.Counts.Failed > 0 {
		return fmt.Errorf("%d call(s) could not be queued again", sum.Counts.Failed)
	}
	return nil
}

func (o *replayOptions) backfill(ctx context.Context, cfg *config.Config, ops *operations, enq replay.Enqueuer, s *selectOptions) error {
	route, ok := routeNamed(cfg, s.q.Route)
	if !ok {
		return usagef("--from-file needs --route, one of the configured routes (%s)", strings.Join(routeNames(cfg), ", "))
	}
	var in io.Reader = o.env.stdin
	if s.fromFile != "-" {
		f, err := os.Open(s.fromFile)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	var keys []string
	for _, p := range route.Auth.Payload {
		keys = append(keys, p.Key)
	}
	bar := o.progress("backfilling")
	sum, err := replay.Backfill(ctx, in, enq, replay.BackfillOptions{
		Route: route.Name, CredentialKeys: keys, MaxLineBytes: int(cfg.Server.MaxBodyBytes), FromLine: s.fromLine, DryRun: s.dryRun,
		Progress: func(p replay.BackfillProgress) { bar.report(p.Line, -1) },
	})
	bar.finish()
	if s.json {
		if jerr := writeJSON(o.env.stdout, sum); jerr != nil {
			return jerr
		}
	} else {
		if sum.DryRun {
			// A dry run only parses and checks: it asks no dedupe key, so it cannot say how
			// many would be queued rather than dropped as duplicates.
			fmt.Fprintf(o.env.stdout, "dry run, nothing queued: %d line(s), %d call detail(s) pass the receiver's checks, %d challenge(s) skipped, %d invalid line(s)\n",
				sum.Lines, sum.Events, sum.Challenges, sum.Invalid)
		} else {
			fmt.Fprintf(o.env.stdout, "%d line(s), %d call detail(s): queued %d, %d duplicate(s) (already queued or delivered), %d challenge(s) skipped, %d invalid line(s)\n",
				sum.Lines, sum.Events, sum.Queued, sum.Duplicates, sum.Challenges, sum.Invalid)
		}
		for _, le := range sum.Errors {
			fmt.Fprintf(o.env.stdout, "  line %d: %s\n", le.Line, le.Error)
		}
		if sum.StoppedAt > 0 {
			fmt.Fprintf(o.env.stdout, "stopped at line %d; resume with --from-line %d\n", sum.StoppedAt, sum.StoppedAt)
		}
	}
	return err
}

func routeNamed(cfg *config.Config, name string) (config.Route, bool) {
	for _, r := range cfg.Routes {
		if r.Name == name {
			return r, true
		}
	}
	return config.Route{}, false
}

func routeNames(cfg *config.Config) []string {
	var out []string
	for _, r := range cfg.Routes {
		out = append(out, r.Name)
	}
	return out
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func listDead(w io.Writer, entries []deadletter.Entry, loc *time.Location) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "DEAD AT\tROUTE\tCONNECTION\tCALL ID\tDETAIL ID\tKIND\tATTEMPTS\tCLASS\tCODE\tMESSAGE\n")
	for _, e := range entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", clock(e.DeadAt, loc), e.Route, orDash(e.Connection), e.CallID, e.DetailID,
			e.Kind, e.Attempts, e.Error.Class, orDash(e.Error.Code), oneLine(e.Error.Message, 120))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "%d dead call detail(s) selected\n", len(entries))
	return nil
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}

func printReplay(w io.Writer, sum replay.Summary) {
	for _, it := range sum.Items {
		line := fmt.Sprintf("%s (call %s, route %s): %s", it.DetailID, it.CallID, it.Route, it.Outcome)
		if it.Queued {
			line += " (its task is queued now: a replay would be a duplicate)"
		}
		if it.Error != "" {
			line += ": " + it.Error
		}
		fmt.Fprintln(w, line)
		if p := it.Preview; p != nil {
			fmt.Fprintf(w, "  would upsert %s %s (mapping %s)", p.Object, p.ExternalID, p.MappingVersion)
			if p.ContactNumber != "" {
				fmt.Fprintf(w, ", contact by %s", p.ContactNumber)
			}
			if p.OwnerEmail != "" {
				fmt.Fprintf(w, ", owner by %s", p.OwnerEmail)
			}
			fmt.Fprintln(w)
			for _, f := range p.Fields {
				if f.Chars > 0 {
					fmt.Fprintf(w, "    %s: (%d characters)\n", f.Name, f.Chars)
					continue
				}
				fmt.Fprintf(w, "    %s: %v\n", f.Name, f.Value)
			}
		}
	}
	c := sum.Counts
	if sum.DryRun {
		fmt.Fprintf(w, "dry run, nothing sent: %d selected: %d would be sent, %d skipped by the mapping, %d fail to render, %d queued already, %d resolved meanwhile\n",
			sum.Selected, c.WouldSend, c.WouldSkip, c.RenderFails, c.AlreadyQueued, c.Resolved)
		return
	}
	fmt.Fprintf(w, "%d selected: %d queued again, %d already queued, %d failed, %d resolved meanwhile (in %s)\n",
		sum.Selected, c.Queued, c.AlreadyQueued, c.Failed, c.Resolved, sum.Finished.Sub(sum.Started).Round(time.Millisecond))
}

// progressBar draws a bar on stderr when it is a terminal and long runs would otherwise be
// silent; otherwise it stays quiet (the summary says everything).
type progressBar struct{ bar *progressbar.ProgressBar }

func (o *replayOptions) progress(what string) *progressBar {
	if !o.env.terminal(o.env.stderr) {
		return &progressBar{}
	}
	return &progressBar{bar: progressbar.NewOptions(-1, progressbar.OptionSetWriter(o.env.stderr),
		progressbar.OptionSetDescription(what), progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())}
}

// report sets the bar to done of total (total < 0: unknown).
func (p *progressBar) report(done, total int) {
	if p.bar == nil {
		return
	}
	if total >= 0 && int64(total) != p.bar.GetMax64() {
		p.bar.ChangeMax(total)
	}
	_ = p.bar.Set(done)
}

func (p *progressBar) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}

// loadMappings loads every route's mapping once, as the worker would render with it now.
func loadMappings(cfg *config.Config) (map[string]func() *mappers.Mapping, error) {
	kinds := map[string]string{}
	for _, cn := range cfg.Connections {
		kinds[cn.Name] = cn.Type
	}
	out := map[string]func() *mappers.Mapping{}
	for _, r := range cfg.Routes {
		m, err := loadRouteMapping(r, kinds[r.Connection])
		if err != nil {
			return nil, configError(fmt.Errorf("routes %s: %w", r.Name, err))
		}
		out[r.Name] = func() *mappers.Mapping { return m }
	}
	return out, nil
}
