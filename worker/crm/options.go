package crm

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/durable"
)

// Options is what every connector's constructor takes, so the worker builds one value per
// connection whatever the CRM, and a new CRM package takes the same.
type Options struct {
	// Connection is the config of this CRM account (Name, vendor section, RateLimit, TTLs).
	Connection config.Connection
	// IDMapTTL is config worker.id_map_ttl: how long the external id -> CRM id map is kept.
	IDMapTTL time.Duration
	Redis    redis.UniversalClient
	Logger   *slog.Logger
	// Registerer receives the crm metrics (and a connector's own); nil registers none.
	Registerer prometheus.Registerer
	// HTTPClient is the base client (timeouts, proxies, a test server's transport); its
	// Transport becomes the bottom of the crm transport stack. Nil: the connector's default.
	HTTPClient *http.Client
	// Context is long-lived (the worker's run context): token fetches run on it, never on
	// a task's context.
	Context context.Context
	// Acks holds the id map's pending marker and stored ids, and a rotated refresh token,
	// to redis.ack_replicas (worker/durable); nil waits for no replica.
	Acks *durable.Acks
	// RateLimitMaxWait bounds how long a request waits for the shared limit inside a task
	// (default 2s); beyond it the task is retried later as Throttled.
	RateLimitMaxWait time.Duration
}
