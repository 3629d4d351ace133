package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
)

// checkOptions are the flags of `check`.
type checkOptions struct {
	env     *environment
	config  string
	json    bool
	timeout time.Duration
}

func newCheckCmd(env *environment, runF func(context.Context, *checkOptions) error) *cobra.Command {
	o := &checkOptions{env: env}
	cmd := &cobra.Command{
		Use:   "check [--config FILE] [--json]",
		Short: "Check every CRM connection before the first call",
		Long: `Builds each connection's connector exactly as the worker does and asks the CRM, without
writing anything, whether calls could be delivered: the credentials get a token, the app has
the scopes or permissions it needs, the record key the upserts use exists and is unique (an
External ID), and the owner lookup answers for connections[].check.owner_email.

One line per result: pass, FAIL (the fix on the next line), unknown (the CRM could not be
asked, e.g. unreachable: not a failure) or skip. Exit 1 when a line is FAIL, 0 otherwise.
Every worker runs the same check when it starts (logged, in /readyz and as the
mcs_crm_check gauge).`,
		Example: "  miitel-crm-sync check --config config.yaml\n  miitel-crm-sync check --config config.yaml --json | jq '.[] | select(.status == \"fail\")'",
		Args:    usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if runF != nil {
				return runF(cmd.Context(), o)
			}
			return runCheck(cmd.Context(), o)
		},
	}
	configFlag(env, cmd.Flags(), &o.config)
	cmd.Flags().BoolVar(&o.json, "json", false, "print the results as a JSON array (connection, check, status, detail, fix)")
	cmd.Flags().DurationVar(&o.timeout, "timeout", 30*time.Second, "how long the connections together may take; one that has not answered by then is unknown")
	return cmd
}

// errChecksFailed: the failed lines were printed; exit 1.
type errChecksFailed int

func (n errChecksFailed) Error() string { return fmt.Sprintf("%d check(s) failed", int(n)) }

func runCheck(ctx context.Context, o *checkOptions) error {
	if o.timeout <= 0 {
		return usagef("--timeout must be positive")
	}
	// The worker's secrets: the check runs with the credentials the worker runs with.
	cfg, err := config.LoadFor(o.config, o.env.getenv, config.Role{Worker: true})
	if err != nil {
		return configError(err)
	}
	if len(cfg.Connections) == 0 {
		fmt.Fprintln(o.env.stdout, "no connections configured: routes without one use the dry run, which needs no check")
		return nil
	}
	// The configured Redis holds what the workers share (a refresh token stored by `oauth
	// connect`, the cached access token); without one, a private in-process Redis stands in.
	var rdb redis.UniversalClient
	if cfg.Redis.Embedded() {
		c, stop, err := embeddedRedis()
		if err != nil {
			return err
		}
		defer stop()
		rdb = c
	} else {
		if rdb, err = dialRedis(cfg.Redis); err != nil {
			return err
		}
		defer rdb.Close()
	}
	ctx, cancel := context.WithCancel(ctx) // the connectors' long-lived context
	defer cancel()
	log := slog.New(slog.DiscardHandler) // what goes wrong is in the check's lines
	conns, err := buildConnectors(ctx, cfg, o.env.connectorBuilder(), rdb, log, prometheus.NewRegistry(), io.Discard)
	if err != nil {
		return err
	}
	mappings := map[string]func() *mappers.Mapping{}
	kinds := map[string]string{}
	for _, cn := range cfg.Connections {
		kinds[cn.Name] = cn.Type
	}
	for _, rt := range cfg.Routes {
		if rt.Connection == "" {
			continue
		}
		m, err := loadRouteMapping(rt, kinds[rt.Connection])
		if err != nil {
			return err
		}
		mappings[rt.Name] = func() *mappers.Mapping { return m }
	}
	results := runChecks(ctx, checkTargets(cfg, conns, mappings), o.timeout)
	if o.json {
		enc := json.NewEncoder(o.env.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(results); err != nil {
			return err
		}
	} else {
		printChecks(o.env.stdout, results)
	}
	if n := countStatus(results, crm.CheckFail); n > 0 {
		return errChecksFailed(n)
	}
	return nil
}

// checkTarget is one connection to check and what to check on it.
type checkTarget struct {
	name string
	conn crm.Connector
	opts crm.CheckOptions
}

// checkTargets lists the connections in config order with their check options: the record
// keys in use (the connection's own and any a route's mapping names for a route using the
// connection) and the owner e-mail to look up.
func checkTargets(cfg *config.Config, conns map[string]crm.Connector, mappings map[string]func() *mappers.Mapping) []checkTarget {
	var out []checkTarget
	for _, cn := range cfg.Connections {
		t := checkTarget{name: cn.Name, conn: conns[cn.Name], opts: crm.CheckOptions{OwnerEmail: cn.Check.OwnerEmail}}
		keys := []string{cn.RecordKey()}
		for _, rt := range cfg.Routes {
			if get := mappings[rt.Name]; rt.Connection == cn.Name && get != nil {
				keys = append(keys, mappingRecordKey(get()))
			}
		}
		for _, k := range keys {
			if k != "" && !slices.Contains(t.opts.RecordKeys, k) {
				t.opts.RecordKeys = append(t.opts.RecordKeys, k)
			}
		}
		out = append(out, t)
	}
	return out
}

// mappingRecordKey is the external_id.field a mapping names ("" when it names none, and the
// connection's own key is used). It asks the mapping through a one-method interface:
// mappers.Mapping gains that accessor with external_id.field becoming optional.
func mappingRecordKey(m any) string {
	if f, ok := m.(interface{ ExternalIDField() string }); ok {
		return f.ExternalIDField()
	}
	return ""
}

// runChecks checks every target at once and returns their lines in target order. A
// connector that is no crm.Checker gets one skip line; one that has not answered when
// timeout is over gets an unknown line (its check goes on in the background until ctx ends,
// and is then ignored).
func runChecks(ctx context.Context, targets []checkTarget, timeout time.Duration) []crm.CheckResult {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type answer struct {
		i   int
		res []crm.CheckResult
	}
	answers := make(chan answer, len(targets)) // buffered: a late answer never blocks
	got := make([][]crm.CheckResult, len(targets))
	pending := 0
	for i, t := range targets {
		checker, ok := t.conn.(crm.Checker)
		if !ok {
			got[i] = []crm.CheckResult{{Connection: t.name, Name: "connector", Status: crm.CheckSkipped, Detail: "this connector has no check"}}
			continue
		}
		pending++
		go func() { answers <- answer{i, checker.Check(ctx, t.opts)} }()
	}
wait:
	for ; pending > 0; pending-- {
		select {
		case a := <-answers:
			got[a.i] = a.res
		case <-ctx.Done():
			break wait
		}
	}
	var out []crm.CheckResult
	for i, t := range targets {
		res := got[i]
		if res == nil && t.conn != nil {
			if _, ok := t.conn.(crm.Checker); ok {
				res = []crm.CheckResult{{Connection: t.name, Name: "connector", Status: crm.CheckUnknown,
					Detail: fmt.Sprintf("the check did not finish within %s", timeout)}}
			}
		}
		for _, r := range res {
			if r.Connection == "" {
				r.Connection = t.name
			}
			out = append(out, r)
		}
	}
	return out
}

func countStatus(results []crm.CheckResult, s crm.CheckStatus) int {
	n := 0
	for _, r := range results {
		if r.Status == s {
			n++
		}
	}
	return n
}

// printChecks writes one aligned line per result, and under a failed one its fix:
//
//	pass  hubspot  token       private-app token accepted
//	FAIL  sf       record_key  Task.MiiTel_Detail_Id__c does not exist
//	                           fix: create the field ... (docs/crm-salesforce.md)
func printChecks(w io.Writer, results []crm.CheckResult) {
	var wStatus, wConn, wCheck int
	for _, r := range results {
		wStatus = max(wStatus, len(r.Status.String()))
		wConn = max(wConn, len(r.Connection))
		wCheck = max(wCheck, len(r.Name))
	}
	indent := strings.Repeat(" ", wStatus+wConn+wCheck+6)
	for _, r := range results {
		line := fmt.Sprintf("%-*s  %-*s  %-*s  %s", wStatus, r.Status, wConn, r.Connection, wCheck, r.Name, r.Detail)
		fmt.Fprintln(w, strings.TrimRight(line, " "))
		if r.Status == crm.CheckFail && r.Fix != "" {
			fmt.Fprintf(w, "%sfix: %s\n", indent, r.Fix)
		}
	}
	fmt.Fprintf(w, "%d passed, %d failed, %d unknown, %d skipped\n",
		countStatus(results, crm.CheckPass), countStatus(results, crm.CheckFail), countStatus(results, crm.CheckUnknown), countStatus(results, crm.CheckSkipped))
}

// connChecks is the connection check a worker runs in the background when it starts: it
// logs every line, exports mcs_crm_check{connection,check} and keeps the last results for
// /readyz. While a line is FAIL or unknown it checks again every interval, so a field an
// admin fixes, or a CRM that comes back, clears without a restart.
type connChecks struct {
	targets  []checkTarget // set before Run
	timeout  time.Duration
	interval time.Duration
	log      *slog.Logger
	gauge    *prometheus.GaugeVec

	mu   sync.Mutex
	last []crm.CheckResult
}

func newConnChecks(interval time.Duration, log *slog.Logger, reg prometheus.Registerer) (*connChecks, error) {
	c := &connChecks{
		timeout: 30 * time.Second, interval: interval, log: log,
		gauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mcs_crm_check",
			Help: "Result of the connection check at worker start, per connection and check: 1 pass, 0 fail, -1 unknown (re-checked while not 1).",
		}, []string{"connection", "check"}),
	}
	if err := reg.Register(c.gauge); err != nil {
		return nil, fmt.Errorf("check: metrics: %w", err)
	}
	return c, nil
}

// Run checks until every line passes or is skipped, or ctx ends.
func (c *connChecks) Run(ctx context.Context) {
	if len(c.targets) == 0 {
		return
	}
	for {
		res := runChecks(ctx, c.targets, c.timeout)
		if ctx.Err() != nil {
			return // stopping: the results are cut short, not the CRM's answer
		}
		c.publish(res)
		bad := countStatus(res, crm.CheckFail) + countStatus(res, crm.CheckUnknown)
		if bad == 0 {
			return
		}
		c.log.Info("connection check: checking again", "in", c.interval.String(), "failed_or_unknown", bad)
		t := time.NewTimer(c.interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (c *connChecks) publish(res []crm.CheckResult) {
	c.gauge.Reset() // a check a connector no longer reports must not linger
	for _, r := range res {
		attrs := []any{"connection", r.Connection, "check", r.Name, "status", r.Status, "detail", r.Detail}
		switch r.Status {
		case crm.CheckPass:
			c.gauge.WithLabelValues(r.Connection, r.Name).Set(1)
			c.log.Info("connection check", attrs...)
		case crm.CheckFail:
			c.gauge.WithLabelValues(r.Connection, r.Name).Set(0)
			c.log.Error("connection check", append(attrs, "fix", r.Fix)...)
		case crm.CheckUnknown:
			c.gauge.WithLabelValues(r.Connection, r.Name).Set(-1)
			c.log.Warn("connection check", attrs...)
		default:
			c.log.Info("connection check", attrs...)
		}
	}
	c.mu.Lock()
	c.last = res
	c.mu.Unlock()
}

// results is the last check's lines ([] before the first has finished), for /readyz.
func (c *connChecks) results() any {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil {
		return []crm.CheckResult{}
	}
	return slices.Clone(c.last)
}

// logRecordKeys says, at worker start, which field each route's upserts are keyed by: the
// field the route's mapping names in external_id.field wins for that route; without one
// the connection's key is used. When both are set and differ, a warning names both.
func logRecordKeys(log *slog.Logger, cfg *config.Config, mappings map[string]func() *mappers.Mapping) {
	conns := map[string]config.Connection{}
	for _, cn := range cfg.Connections {
		conns[cn.Name] = cn
	}
	for _, rt := range cfg.Routes {
		cn, ok := conns[rt.Connection]
		get := mappings[rt.Name]
		if !ok || get == nil {
			continue // the dry run keys nothing
		}
		field, source, conflict := recordKey(mappingRecordKey(get()), cn.RecordKey())
		attrs := []any{"route", rt.Name, "connection", cn.Name, "record_key", field, "from", source}
		switch {
		case conflict:
			log.Warn("record key: the route's mapping and its connection name different fields; the mapping's wins for this route",
				append(attrs, "mapping_field", field, "connection_field", cn.RecordKey())...)
		case field == "":
			log.Info("record key: none; the connection keeps a MiiTel id -> CRM id map", attrs...)
		default:
			log.Info("record key", attrs...)
		}
	}
}

// recordKey decides which field a route's upserts are keyed by (see logRecordKeys).
func recordKey(mappingField, connectionField string) (field, source string, conflict bool) {
	switch {
	case mappingField != "":
		return mappingField, "mapping external_id.field", connectionField != "" && connectionField != mappingField
	case connectionField != "":
		return connectionField, "connection", false
	}
	return "", "", false
}
