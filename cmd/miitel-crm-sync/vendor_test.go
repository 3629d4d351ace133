package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/hubspot"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce"
)

// config owns the vendors' defaults and fills them in; the connectors still keep their own
// for a zero they are handed directly. The two must not drift apart (until the connectors
// read config's constants).
func TestVendorDefaultsMatchTheConnectors(t *testing.T) {
	for name, pair := range map[string][2]any{
		"hubspot base url":           {config.HubSpotBaseURL, hubspot.DefaultBaseURL},
		"hubspot token url":          {config.HubSpotTokenURL, hubspot.DefaultTokenURL},
		"hubspot auth url":           {config.HubSpotAuthURL, hubspot.DefaultAuthURL},
		"hubspot private app":        {config.HubSpotPrivateAppRequests, hubspot.DefaultPrivateAppRequests},
		"hubspot oauth":              {config.HubSpotOAuthRequests, hubspot.DefaultOAuthRequests},
		"hubspot search":             {config.HubSpotSearchPerSecond, hubspot.DefaultSearchPerSecond},
		"salesforce api version":     {config.SalesforceAPIVersion, salesforce.DefaultAPIVersion},
		"salesforce limit wait":      {config.SalesforceRequestLimitWait, salesforce.DefaultRequestLimitWait},
		"salesforce daily requests":  {config.SalesforceDailyRequests, salesforce.DefaultDailyRequests},
		"hubspot window (connector)": {config.HubSpotRequestWindow, 10 * time.Second},
	} {
		if pair[0] != pair[1] {
			t.Errorf("%s: config %v, connector %v", name, pair[0], pair[1])
		}
	}
	if !slices.Equal(config.HubSpotScopes(), hubspot.DefaultScopes) {
		t.Errorf("scopes: config %v, connector %v", config.HubSpotScopes(), hubspot.DefaultScopes)
	}
}

// A batch cannot hold more calls than the worker runs at once: max_size above
// worker.concurrency is capped (and said), so batches of a small worker flush when full
// instead of each waiting out the linger.
func TestBatchCappedAtWorkerConcurrency(t *testing.T) {
	cfg := config.Default()
	cfg.Worker.Concurrency = 8
	cfg.Connections = []config.Connection{
		{Name: "hs", Type: "hubspot", Batch: config.Batch{MaxSize: 100, Linger: time.Second}},
		{Name: "sf", Type: "salesforce", Batch: config.Batch{MaxSize: 5, Linger: time.Second}},
	}
	got := map[string]config.Batch{}
	build := func(_ context.Context, _ *config.Config, cn config.Connection, _ redis.UniversalClient, _ *slog.Logger, _ prometheus.Registerer, _ io.Writer) (crm.Connector, error) {
		got[cn.Name] = cn.Batch
		return nil, nil
	}
	var logs bytes.Buffer
	if _, err := buildConnectors(context.Background(), cfg, build, nil, slog.New(slog.NewTextHandler(&logs, nil)), nil, io.Discard); err != nil {
		t.Fatal(err)
	}
	if got["hs"].MaxSize != 8 || got["hs"].Linger != time.Second || got["sf"].MaxSize != 5 {
		t.Errorf("batches built: %+v, want hs capped at 8, sf left at 5", got)
	}
	if !strings.Contains(logs.String(), "batch max_size capped at worker.concurrency") || !strings.Contains(logs.String(), "connection=hs") || strings.Contains(logs.String(), "connection=sf") {
		t.Errorf("log:\n%s", logs.String())
	}
}
