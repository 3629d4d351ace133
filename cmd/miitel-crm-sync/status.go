package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/callstatus"
)

const statusHelp = `Says what happened to a call: whether MiiTel sent it, which events arrived (and which
were re-sends), whether it is waiting, retrying, parked on a broken CRM connection, dead or
written, and where (the CRM record and its link), with the contact and owner it matched.

With an id (a MiiTel call id, which shows every detail of the call, or a detail id) it
describes that call. With filters it lists calls by when they first reached us, newest
first: "which of my calls today failed" is

  miitel-crm-sync status --since 9h --rep sato@example.co.jp --state dead

Phone numbers are masked. --phone finds calls by number only when status.phone_search is
enabled. The same answers come from the admin API (GET /admin/calls/{id}, GET /admin/calls).`

// statusOptions are the flags of status.
type statusOptions struct {
	env    *environment
	config string
	json   bool
	q      callstatus.Query
}

func newStatusCmd(env *environment) *cobra.Command {
	o := &statusOptions{env: env}
	cmd := &cobra.Command{
		Use:   "status [CALL_OR_DETAIL_ID] [--since D] [--until D] [--route R] [--rep EMAIL] [--state S]",
		Short: "What happened to a call: received, waiting, retrying, parked, dead or written, and where",
		Long:  statusHelp,
		Args:  usageArgs(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := ""
			if len(args) == 1 {
				id = args[0]
				if cmd.Flags().NFlag() > btoi(cmd.Flags().Changed("config"))+btoi(cmd.Flags().Changed("json")) {
					return usagef("give a call or detail id, or filters, not both")
				}
			}
			return o.run(cmd.Context(), id)
		},
	}
	configFlag(env, cmd.Flags(), &o.config)
	f := cmd.Flags()
	f.BoolVar(&o.json, "json", false, "print JSON (the admin API's shape)")
	f.StringVar(&o.q.Since, "since", "", "first received at or after: a duration back (9h, 2d), a time (09:00, today, yesterday) or a date-time, in status.time_zone")
	f.StringVar(&o.q.Until, "until", "", "first received before (same forms as --since)")
	f.StringVar(&o.q.Route, "route", "", "only this route's calls")
	f.StringVar(&o.q.Rep, "rep", "", "only calls of the rep with this MiiTel login e-mail")
	f.StringVar(&o.q.State, "state", "", "only calls in this state: "+statesList())
	f.StringVar(&o.q.Phone, "phone", "", "only calls from or to this number (needs status.phone_search)")
	f.IntVar(&o.q.Limit, "limit", 100, "at most this many calls (up to 1000)")
	return cmd
}

func statesList() string {
	var s []string
	for _, st := range callstatus.States {
		s = append(s, string(st))
	}
	return strings.Join(s, ", ")
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (o *statusOptions) run(ctx context.Context, id string) error {
	// Only Redis's secrets (and the phone-search key): reading status needs no credential of
	// MiiTel or a CRM.
	cfg, err := config.LoadFor(o.config, o.env.getenv, config.Role{Admin: true})
	if err != nil {
		return configError(err)
	}
	rdb, err := dialRedis(cfg.Redis)
	if err != nil {
		return err
	}
	defer rdb.Close()
	ops, err := newOperations(opsDeps{cfg: cfg, rdb: rdb, log: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	var calls []callstatus.Status
	if id != "" {
		calls, err = ops.status.Get(ctx, id)
	} else {
		calls, err = ops.status.List(ctx, o.q)
	}
	var nf *callstatus.NotFoundError
	if errors.As(err, &nf) {
		return errors.New(nf.Error())
	}
	if err != nil {
		return err
	}
	if o.json {
		enc := json.NewEncoder(o.env.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(calls)
	}
	if id != "" {
		for i := range calls {
			describeCall(o.env.stdout, &calls[i], ops.loc)
		}
		return nil
	}
	return listCalls(o.env.stdout, calls, ops.loc)
}

func clock(t time.Time, loc *time.Location) string {
	if t.IsZero() {
		return "-"
	}
	return t.In(loc).Format("2006-01-02 15:04:05 MST")
}

// describeCall prints one call detail for a person.
func describeCall(w io.Writer, s *callstatus.Status, loc *time.Location) {
	fmt.Fprintf(w, "call %s, detail %s (route %s)\n", s.CallID, s.DetailID, s.Route)
	var what []string
	for _, v := range []string{s.Direction, string(s.Kind), s.CallType} {
		if v != "" {
			what = append(what, v)
		}
	}
	fmt.Fprintf(w, "  call:      %s at %s", strings.Join(what, ", "), clock(s.CallAt, loc))
	if s.Rep != "" {
		fmt.Fprintf(w, ", rep %s", s.Rep)
	}
	if s.Customer != "" {
		fmt.Fprintf(w, ", customer %s", s.Customer)
	}
	fmt.Fprintln(w)
	state := fmt.Sprintf("%s since %s, %d attempt(s)", s.State, clock(s.StateAt, loc), s.Attempts)
	if s.NextAttemptAt != nil {
		state += ", next attempt " + clock(*s.NextAttemptAt, loc)
	}
	fmt.Fprintf(w, "  state:     %s\n", state)
	switch s.State {
	case callstatus.Parked:
		fmt.Fprintf(w, "             the CRM connection is broken; the call waits (no attempt is used) until an admin fixes it (see `miitel-crm-sync check`)\n")
	case callstatus.Dead:
		// The selector form of replay (our dead letter), not `replay run`, which takes
		// asynq task ids and has no --detail.
		fmt.Fprintf(w, "             in the dead letter: fix the cause, check with `miitel-crm-sync replay --detail %s --dry-run`, then run it without --dry-run\n", s.DetailID)
	case callstatus.Skipped:
		fmt.Fprintf(w, "             skipped by the mapping: %s\n", s.SkipReason)
	}
	if c := s.CRM; c != nil {
		verb := "updated"
		if c.Created {
			verb = "created"
		}
		on := c.Connection
		if on == "" { // a route with no connection: the dry-run connector wrote nothing
			on = "the dry run (nothing written)"
		}
		fmt.Fprintf(w, "  CRM:       %s %s %s on %s at %s (mapping %s)\n", c.Object, c.ID, verb, on, clock(c.DeliveredAt, loc), c.MappingVersion)
		if c.URL != "" {
			fmt.Fprintf(w, "             %s\n", c.URL)
		}
	}
	lookup := func(l *callstatus.Lookup) string {
		if l == nil {
			return "-"
		}
		if l.ID != "" {
			return fmt.Sprintf("%s (%s)", l.Match, l.ID)
		}
		return string(l.Match)
	}
	if s.Contact != nil || s.Owner != nil {
		fmt.Fprintf(w, "  contact:   %s; owner: %s\n", lookup(s.Contact), lookup(s.Owner))
	}
	if e := s.LastError; e != nil {
		msg := e.Class
		if e.Code != "" {
			msg += " " + e.Code
		}
		if e.Status != 0 {
			msg += fmt.Sprintf(" (HTTP %d)", e.Status)
		}
		fmt.Fprintf(w, "  error:     %s at %s: %s\n", msg, clock(e.At, loc), e.Message)
	}
	for i, ev := range s.Events {
		label := "events:"
		if i > 0 {
			label = ""
		}
		line := fmt.Sprintf("%s received %s", ev.Kind, clock(ev.ReceivedAt, loc))
		if ev.Duplicates > 0 {
			line += fmt.Sprintf(", %d re-send(s) dropped (last %s)", ev.Duplicates, clock(derefTime(ev.LastDuplicateAt), loc))
		}
		if ev.State != "" {
			line += fmt.Sprintf(", %s after %d attempt(s)", ev.State, ev.Attempts)
		}
		fmt.Fprintf(w, "  %-10s %s\n", label, line)
	}
	if s.EventsDropped > 0 {
		fmt.Fprintf(w, "             (%d older event(s) not kept)\n", s.EventsDropped)
	}
}

func derefTime(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// listCalls prints a table of calls, newest first.
func listCalls(w io.Writer, calls []callstatus.Status, loc *time.Location) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "FIRST RECEIVED\tSTATE\tATTEMPTS\tROUTE\tCALL ID\tDETAIL ID\tREP\tCUSTOMER\tCRM\tLAST ERROR\n")
	for _, s := range calls {
		crmID, lastErr := "-", "-"
		if s.CRM != nil {
			crmID = s.CRM.ID
		}
		if s.LastError != nil {
			lastErr = strings.TrimSpace(s.LastError.Class + " " + s.LastError.Code)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", clock(s.FirstReceivedAt, loc), s.State, s.Attempts,
			s.Route, s.CallID, s.DetailID, orDash(s.Rep), orDash(s.Customer), crmID, lastErr)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "%d call detail(s)\n", len(calls))
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
