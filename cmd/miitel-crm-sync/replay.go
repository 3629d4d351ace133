package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/hibiken/asynq"
	"github.com/spf13/cobra"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/deadletter"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

const replayHelp = `Re-sends what broke once its cause is fixed (a mapping, a CRM field, a reconnected account),
and backfills calls MiiTel sent while the service could not take them. Needs only Redis's
secrets.

Selected from our own dead letter (every call that went dead, kept for dead_letter.retention,
beyond what asynq's archive keeps), by any combination of:

  miitel-crm-sync replay --since 9h --class permanent --dry-run    # what would be sent now
  miitel-crm-sync replay --route sales --code INVALID_FIELD
  miitel-crm-sync replay --call CALL_ID --detail DETAIL_ID
  miitel-crm-sync replay --match "does not exist" --list            # list only
  miitel-crm-sync replay --all                                      # the whole dead letter

Replaying is idempotent: a call is queued again under its own id, so replaying twice while
it is queued sends it once, and a delivered call leaves the dead letter.

Backfill stored MiiTel payloads (one webhook body per line) through the receiver's checks
and dedupe (authentication skipped): a body MiiTel also sent is a duplicate, never a second
write:

  miitel-crm-sync replay --from-file calls.jsonl --route sales [--dry-run]

The subcommands work on asynq's archive by task id, as before.`

// replayOptions are the flags every replay subcommand shares.
type replayOptions struct {
	env    *environment
	config string
}

func newReplayCmd(env *environment) *cobra.Command {
	o := &replayOptions{env: env}
	cmd := groupCmd(env, "replay [selectors] [--dry-run] | replay --from-file FILE --route R", "Re-send dead calls selected by id, route, connection, error or time; backfill stored payloads", replayHelp)
	configFlag(env, cmd.PersistentFlags(), &o.config)
	sel := &selectOptions{}
	sel.register(cmd)
	help := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if !sel.selected(c) {
			return help(c, args)
		}
		return o.runSelected(c.Context(), sel)
	}
	var limit int
	list := &cobra.Command{
		Use:   "list [--limit N]",
		Short: "Dead-lettered calls: task id, route, call id, detail id, kind, when, reason",
		Long:  "Lists dead-lettered calls, newest first.",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			return o.with(func(r replayer) error { return r.list(limit) })
		},
	}
	list.Flags().IntVar(&limit, "limit", 50, "how many to list")
	var all bool
	var route string
	run := &cobra.Command{
		Use:   "run ID... | run --all [--route R]",
		Short: "Move dead-lettered calls back to the queue; the worker delivers them again",
		Long: "Moves dead-lettered calls back to the queue; the worker delivers them again (an update of\n" +
			"the same CRM activity if one was created).",
		RunE: func(_ *cobra.Command, ids []string) error {
			if all == (len(ids) > 0) {
				return usagef("give task ids or --all, not both, not neither")
			}
			if route != "" && !all {
				return usagef("--route selects among --all; with task ids it means nothing")
			}
			return o.with(func(r replayer) error { return r.run(ids, all, route) })
		},
	}
	run.Flags().BoolVar(&all, "all", false, "every dead-lettered call")
	run.Flags().StringVar(&route, "route", "", "with --all: only this route's calls")
	cmd.AddCommand(
		&cobra.Command{
			Use:   "stats",
			Short: "Queue sizes: pending, active, scheduled, retry, archived",
			Args:  usageArgs(cobra.NoArgs),
			RunE:  func(*cobra.Command, []string) error { return o.with(replayer.stats) },
		},
		list,
		&cobra.Command{
			Use:   "show ID",
			Short: "One dead-lettered call in full (payload metadata, no transcript)",
			Args:  exactArgs(1, "exactly one task id"),
			RunE: func(_ *cobra.Command, args []string) error {
				return o.with(func(r replayer) error { return r.show(args[0]) })
			},
		},
		run,
		&cobra.Command{
			Use:   "delete ID...",
			Short: "Drop dead-lettered calls for good",
			Args:  minArgs(1, "at least one task id"),
			RunE: func(_ *cobra.Command, ids []string) error {
				return o.with(func(r replayer) error { return r.delete(ids) })
			},
		},
	)
	return cmd
}

// with runs f on a replayer of the configured Redis.
func (o *replayOptions) with(f func(replayer) error) error {
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
	dl, err := deadletter.New(rdb, deadletter.Options{Queue: cfg.Queue.Name, Config: cfg.DeadLetter, Routes: cfg.Routes})
	if err != nil {
		return configError(err)
	}
	return f(replayer{in: asynq.NewInspectorFromRedisClient(rdb), dead: dl, queue: cfg.Queue.Name, out: o.env.stdout})
}

type replayer struct {
	in    *asynq.Inspector
	dead  *deadletter.Store // our dead letter: stats counts it, delete removes from it too
	queue string
	out   io.Writer
}

// summary is what an operator needs of a dead-lettered task; it leaves out the transcript and
// phone numbers the payload carries.
type summary struct {
	ID       string    `json:"id"`
	Route    string    `json:"route"`
	CallID   string    `json:"call_id"`
	DetailID string    `json:"detail_id"`
	Kind     string    `json:"kind"`
	FailedAt time.Time `json:"failed_at"`
	Retried  int       `json:"retried"`
	Reason   string    `json:"reason"`
}

func summarize(t *asynq.TaskInfo) summary {
	s := summary{ID: t.ID, FailedAt: t.LastFailedAt, Retried: t.Retried, Reason: t.LastErr}
	if ev, err := tasks.DecodeCallEvent(asynq.NewTask(t.Type, t.Payload)); err == nil {
		s.Route, s.CallID, s.DetailID, s.Kind = ev.Route, ev.CallID, ev.Detail.ID, string(ev.Kind)
	}
	return s
}

func (r replayer) stats() error {
	qi, err := r.in.GetQueueInfo(r.queue)
	if err != nil {
		return fmt.Errorf("queue %q: %w", r.queue, err)
	}
	w := tabwriter.NewWriter(r.out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "queue\tpending\tactive\tscheduled\tretry\tarchived\tprocessed today\tfailed today\tlatency\n")
	fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", qi.Queue, qi.Pending, qi.Active, qi.Scheduled, qi.Retry, qi.Archived, qi.Processed, qi.Failed, qi.Latency.Round(time.Millisecond))
	if err := w.Flush(); err != nil {
		return err
	}
	n, err := r.dead.Count(context.Background())
	if err != nil {
		return fmt.Errorf("dead letter: %w", err)
	}
	fmt.Fprintf(r.out, "dead letter: %d call detail(s) (replay them with `replay --all --dry-run` first)\n", n)
	return nil
}

func (r replayer) list(limit int) error {
	ts, err := r.in.ListArchivedTasks(r.queue, asynq.PageSize(limit))
	if err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
		return fmt.Errorf("list the dead letter: %w", err)
	}
	w := tabwriter.NewWriter(r.out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "TASK ID\tROUTE\tCALL ID\tDETAIL ID\tKIND\tFAILED AT\tREASON\n")
	for _, t := range ts {
		s := summarize(t)
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Route, s.CallID, s.DetailID, s.Kind, s.FailedAt.Format(time.RFC3339), s.Reason)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(r.out, "%d dead-lettered call(s) shown\n", len(ts))
	return nil
}

func (r replayer) show(id string) error {
	t, err := r.in.GetTaskInfo(r.queue, id)
	if err != nil {
		return fmt.Errorf("task %s: %w", id, err)
	}
	b, _ := json.MarshalIndent(struct {
		summary
		State string `json:"state"`
	}{summarize(t), t.State.String()}, "", "  ")
	fmt.Fprintln(r.out, string(b))
	return nil
}

func (r replayer) run(ids []string, all bool, route string) error {
	if all {
		var err error
		if ids, err = r.archivedIDs(route); err != nil {
			return err
		}
	}
	var failed int
	for _, id := range ids {
		if err := r.in.RunTask(r.queue, id); err != nil {
			fmt.Fprintf(r.out, "%s: %v\n", id, err)
			failed++
			continue
		}
		fmt.Fprintf(r.out, "%s: queued again\n", id)
	}
	fmt.Fprintf(r.out, "%d queued again, %d failed\n", len(ids)-failed, failed)
	if failed > 0 {
		return fmt.Errorf("%d task(s) could not be queued again", failed)
	}
	return nil
}

// archivePageSize is how many dead-lettered tasks archivedIDs holds at once: each carries
// its payload, transcript included, and the archive holds up to 10,000 (asynq's cap).
const archivePageSize = 500

// archivedIDs lists the ids of every dead-lettered task of route ("" = every route), a page
// at a time. All ids are collected before any task is run, since running one takes it out
// of the archive and would shift the pages.
func (r replayer) archivedIDs(route string) ([]string, error) {
	var ids []string
	for page := 1; ; page++ {
		ts, err := r.in.ListArchivedTasks(r.queue, asynq.PageSize(archivePageSize), asynq.Page(page))
		if errors.Is(err, asynq.ErrQueueNotFound) {
			return ids, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list the dead letter: %w", err)
		}
		for _, t := range ts {
			if route == "" || summarize(t).Route == route {
				ids = append(ids, t.ID)
			}
		}
		if len(ts) < archivePageSize {
			return ids, nil
		}
	}
}

func (r replayer) delete(ids []string) error {
	var failed int
	for _, id := range ids {
		// The archived task names its call detail: its dead-letter entry goes with it, so a
		// deleted call is not replayed from there later.
		var s summary
		if t, err := r.in.GetTaskInfo(r.queue, id); err == nil {
			s = summarize(t)
		}
		if err := r.in.DeleteTask(r.queue, id); err != nil {
			fmt.Fprintf(r.out, "%s: %v\n", id, err)
			failed++
			continue
		}
		if s.DetailID != "" {
			if _, err := r.dead.Delete(context.Background(), s.Route, s.DetailID); err != nil {
				fmt.Fprintf(r.out, "%s: deleted from the archive, but not from the dead letter: %v\n", id, err)
				failed++
				continue
			}
		}
		fmt.Fprintf(r.out, "%s: deleted\n", id)
	}
	if failed > 0 {
		return fmt.Errorf("%d task(s) could not be deleted", failed)
	}
	return nil
}
