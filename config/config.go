// Package config is the one typed configuration of miitel-crm-sync. It is built in four
// steps: Default(), then a strict YAML file (unknown keys are errors with line and column),
// then environment variables (MCS_*), then Validate(), which reports every problem at once.
//
// Secrets never live in the YAML file: every secret field is a Secret, written in YAML as
// {env: NAME} or {file: PATH} and resolved at load time; a literal value is an error. The
// resolved configuration is logged with secrets masked.
package config

import "time"

// Config is the whole configuration.
type Config struct {
	Log         Log          `yaml:"log" json:"log"`
	Server      Server       `yaml:"server" json:"server"`
	Redis       Redis        `yaml:"redis" json:"redis"`
	Queue       Queue        `yaml:"queue" json:"queue"`
	Worker      Worker       `yaml:"worker" json:"worker"`
	Routes      []Route      `yaml:"routes" json:"routes"`
	Connections []Connection `yaml:"connections" json:"connections"`
	Ops         Ops          `yaml:"ops" json:"ops"`
	Admin       Admin        `yaml:"admin" json:"admin"`
	Status      Status       `yaml:"status" json:"status"`
	DeadLetter  DeadLetter   `yaml:"dead_letter" json:"dead_letter"`

	// Source is the file the config was read from ("" for the embedded default).
	Source string `yaml:"-" json:"source,omitempty"`
}

// Log configures log/slog.
type Log struct {
	Level string `yaml:"level" json:"level" env:"MCS_LOG_LEVEL"` // debug|info|warn|error
	// Format is auto (text when stderr is a terminal, JSON otherwise), json or text.
	Format string `yaml:"format" json:"format" env:"MCS_LOG_FORMAT"`
}

// Server configures the receiver's HTTP server.
type Server struct {
	Listen            string        `yaml:"listen" json:"listen" env:"MCS_SERVER_LISTEN"`
	MaxBodyBytes      int64         `yaml:"max_body_bytes" json:"max_body_bytes" env:"MCS_SERVER_MAX_BODY_BYTES"`
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout" json:"read_header_timeout"`
	ReadTimeout       time.Duration `yaml:"read_timeout" json:"read_timeout"`
	WriteTimeout      time.Duration `yaml:"write_timeout" json:"write_timeout"`
	IdleTimeout       time.Duration `yaml:"idle_timeout" json:"idle_timeout"`
	// EnqueueTimeout bounds how long a request waits for Redis before answering 503.
	EnqueueTimeout time.Duration `yaml:"enqueue_timeout" json:"enqueue_timeout"`
	// ShutdownTimeout bounds draining in-flight requests on SIGTERM; keep it below the pod's
	// terminationGracePeriodSeconds.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout" json:"shutdown_timeout" env:"MCS_SERVER_SHUTDOWN_TIMEOUT"`
	// TrustedProxies are the CIDRs whose X-Forwarded-For is believed. Empty: none, the
	// source IP is the TCP peer.
	TrustedProxies []string `yaml:"trusted_proxies" json:"trusted_proxies"`
	// RetryAfter is the Retry-After value (seconds) of a 503 when Redis is unavailable.
	RetryAfter time.Duration `yaml:"retry_after" json:"retry_after"`
	// MaxInflightRequests and MaxInflightBytes bound the webhook requests handled at once
	// and the memory their bodies hold (each body byte counts 4 times: the body, the call
	// decoded from it and its encoded tasks). A request over either gets 503 + Retry-After
	// before its body is read. MaxInflightBytes must hold 4 × MaxBodyBytes.
	MaxInflightRequests int   `yaml:"max_inflight_requests" json:"max_inflight_requests" env:"MCS_SERVER_MAX_INFLIGHT_REQUESTS"`
	MaxInflightBytes    int64 `yaml:"max_inflight_bytes" json:"max_inflight_bytes" env:"MCS_SERVER_MAX_INFLIGHT_BYTES"`
}

// Redis names the Redis that holds the queue and the shared state: one of URL (redis:// or
// rediss://), Sentinel or Cluster. None of them set means the embedded in-process Redis,
// which keeps nothing across restarts (for trying the service out only).
type Redis struct {
	URL      string   `yaml:"url" json:"url" env:"MCS_REDIS_URL"`
	Username string   `yaml:"username" json:"username" env:"MCS_REDIS_USERNAME"`
	Password Secret   `yaml:"password" json:"password"`
	Sentinel Sentinel `yaml:"sentinel" json:"sentinel"`
	Cluster  Cluster  `yaml:"cluster" json:"cluster"`
	TLS      TLS      `yaml:"tls" json:"tls"`
	// DialTimeout, ReadTimeout and WriteTimeout bound each Redis command; the receiver's
	// 503 depends on them failing fast.
	DialTimeout  time.Duration `yaml:"dial_timeout" json:"dial_timeout"`
	ReadTimeout  time.Duration `yaml:"read_timeout" json:"read_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout" json:"write_timeout"`
	// AckReplicas is how many replicas must hold a queued call (Redis WAIT on the connection
	// that wrote it) before the receiver answers 2xx, and before the worker trusts its
	// exactly-once bookkeeping: "auto" (the replicas the master reports; none on a
	// standalone Redis) or a number, 0 off. Too few within AckTimeout: 503, never a 2xx.
	AckReplicas AckReplicas `yaml:"ack_replicas" json:"ack_replicas" env:"MCS_REDIS_ACK_REPLICAS"`
	// AckTimeout bounds that wait.
	AckTimeout time.Duration `yaml:"ack_timeout" json:"ack_timeout" env:"MCS_REDIS_ACK_TIMEOUT"`
}

// Sentinel is a Redis Sentinel deployment.
type Sentinel struct {
	MasterName string   `yaml:"master_name" json:"master_name" env:"MCS_REDIS_SENTINEL_MASTER"`
	Addrs      []string `yaml:"addrs" json:"addrs" env:"MCS_REDIS_SENTINEL_ADDRS" envSeparator:","`
	DB         int      `yaml:"db" json:"db"`
	Password   Secret   `yaml:"password" json:"password"` // the Sentinels' own password
}

// Cluster is a Redis Cluster.
type Cluster struct {
	Addrs []string `yaml:"addrs" json:"addrs" env:"MCS_REDIS_CLUSTER_ADDRS" envSeparator:","`
}

// TLS for Sentinel and Cluster (a rediss:// URL turns it on by itself).
type TLS struct {
	Enabled            bool   `yaml:"enabled" json:"enabled" env:"MCS_REDIS_TLS"`
	CAFile             string `yaml:"ca_file" json:"ca_file"`
	ServerName         string `yaml:"server_name" json:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify" json:"insecure_skip_verify"`
}

// Queue configures the asynq queue shared by receiver and worker.
type Queue struct {
	Name string `yaml:"name" json:"name" env:"MCS_QUEUE_NAME"`
	// DedupeWindow is how long an exact re-send of an event is dropped after it was delivered.
	DedupeWindow time.Duration `yaml:"dedupe_window" json:"dedupe_window" env:"MCS_QUEUE_DEDUPE_WINDOW"`
	// MaxRetry is how many failed attempts a task gets before it is archived (dead letter).
	MaxRetry int `yaml:"max_retry" json:"max_retry" env:"MCS_QUEUE_MAX_RETRY"`
	// TaskTimeout bounds one attempt.
	TaskTimeout time.Duration `yaml:"task_timeout" json:"task_timeout"`
}

// Worker configures the asynq server that delivers calls to the CRMs.
type Worker struct {
	Concurrency int `yaml:"concurrency" json:"concurrency" env:"MCS_WORKER_CONCURRENCY"`
	// ShutdownTimeout is how long in-flight tasks may finish on SIGTERM; keep it below the
	// pod's terminationGracePeriodSeconds.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout" json:"shutdown_timeout" env:"MCS_WORKER_SHUTDOWN_TIMEOUT"`
	// StateTTL is how long a call's merged event state is kept (minutes can come hours later).
	StateTTL time.Duration `yaml:"state_ttl" json:"state_ttl" env:"MCS_WORKER_STATE_TTL"`
	// IDMapTTL is how long the MiiTel-id -> CRM-id map and written-field marks are kept.
	IDMapTTL time.Duration `yaml:"id_map_ttl" json:"id_map_ttl"`
	// RetryBase and RetryMax shape the exponential backoff between attempts.
	RetryBase time.Duration `yaml:"retry_base" json:"retry_base"`
	RetryMax  time.Duration `yaml:"retry_max" json:"retry_max"`
	// PollInterval is how often a worker looks for retries that have come due (asynq's
	// delayed-task check), and at most how long an idle worker waits before looking for new
	// work. Shorter means lower latency for retries and more Redis round trips.
	PollInterval time.Duration `yaml:"poll_interval" json:"poll_interval"`
	// HotReload watches mapping files and switches to a changed valid one without restart.
	HotReload bool `yaml:"hot_reload" json:"hot_reload" env:"MCS_WORKER_HOT_RELOAD"`
	// MetricsListen is deprecated: ops.listen is where every process serves its probes,
	// metrics and admin API. Unset by default and left out of the effective configuration
	// when unset; a value set still moves the ops listener there when ops.listen is left at
	// its default, so existing configs keep working.
	MetricsListen string `yaml:"metrics_listen,omitempty" json:"metrics_listen,omitempty" env:"MCS_WORKER_METRICS_LISTEN"`
	// CheckInterval is how often a worker runs the connection check again while any line of
	// it failed or could not be verified, so a fixed CRM setting clears without a restart.
	CheckInterval time.Duration `yaml:"check_interval" json:"check_interval"`
}

// Route is one MiiTel webhook setting: its URL path /webhooks/miitel/{name}, the credentials
// it accepts, the mapping that turns its calls into CRM records and the connection they go to.
type Route struct {
	Name       string `yaml:"name" json:"name"`
	Mapping    string `yaml:"mapping" json:"mapping"`       // mapping file path; "" = built-in default
	Connection string `yaml:"connection" json:"connection"` // Connections[].name; "" = dry-run
	Auth       Auth   `yaml:"auth" json:"auth"`
}

// Auth lists the credentials a route accepts. A request passes when it carries ANY one of
// them, so a secret can be rotated by listing old and new together. All comparisons are
// constant-time. AllowCIDRs, when set, must match as well.
type Auth struct {
	Bearer  []Secret            `yaml:"bearer" json:"bearer"`
	Basic   []BasicCredential   `yaml:"basic" json:"basic"`
	Headers []HeaderCredential  `yaml:"headers" json:"headers"`
	Payload []PayloadCredential `yaml:"payload" json:"payload"`
	// AllowCIDRs restricts source IPs, e.g. MiiTel's 18.177.83.94/32 and 35.73.236.241/32.
	AllowCIDRs []string `yaml:"allow_cidrs" json:"allow_cidrs"`
	// Insecure accepts requests without any credential. Only the embedded default sets it.
	Insecure bool `yaml:"insecure" json:"insecure"`
}

// BasicCredential is one accepted user/password pair for HTTP Basic auth.
type BasicCredential struct {
	Username string `yaml:"username" json:"username"`
	Password Secret `yaml:"password" json:"password"`
}

// HeaderCredential is one accepted value of a request header (MiiTel "additional headers").
type HeaderCredential struct {
	Name  string `yaml:"name" json:"name"`
	Value Secret `yaml:"value" json:"value"`
}

// PayloadCredential is one accepted value of a top-level body key (MiiTel "additional
// payload", e.g. params_key). The key is removed before the call is queued.
type PayloadCredential struct {
	Key   string `yaml:"key" json:"key"`
	Value Secret `yaml:"value" json:"value"`
}

// Connection is one CRM account the worker writes to.
type Connection struct {
	Name       string      `yaml:"name" json:"name"`
	Type       string      `yaml:"type" json:"type"` // hubspot | salesforce | dryrun
	HubSpot    *HubSpot    `yaml:"hubspot,omitempty" json:"hubspot,omitempty"`
	Salesforce *Salesforce `yaml:"salesforce,omitempty" json:"salesforce,omitempty"`
	RateLimit  RateLimit   `yaml:"rate_limit" json:"rate_limit"`
	Batch      Batch       `yaml:"batch" json:"batch"`
	// Cache TTLs for contact and owner lookups; misses are cached for MissTTL.
	LookupTTL time.Duration `yaml:"lookup_ttl" json:"lookup_ttl"`
	MissTTL   time.Duration `yaml:"miss_ttl" json:"miss_ttl"`
	// RecordURL is the link to a written activity that call status shows, a template with
	// {id} (the CRM record id) and what the connector knows ({portal_id} and {ui_domain} for HubSpot,
	// {instance_url} for Salesforce). Empty: the connector's default (HubSpot
	// https://{ui_domain}/contacts/{portal_id}/record/0-48/{id}, whose path HubSpot does not
	// document; Salesforce {instance_url}/lightning/r/Task/{id}/view).
	RecordURL string `yaml:"record_url" json:"record_url,omitempty"`
	// Check configures the connection check (`miitel-crm-sync check`, and at worker start).
	Check Check `yaml:"check" json:"check"`
}

// Check is what the connection check verifies beyond the connection itself.
type Check struct {
	// OwnerEmail is a rep's CRM login e-mail; the check looks it up as the worker looks up
	// a call's owner. Empty: the owner lookup is not checked.
	OwnerEmail string `yaml:"owner_email" json:"owner_email"`
}

// RateLimit is the per-connection request budget shared by every worker replica through
// Redis. Load fills what the file leaves out with the vendor's documented limits (see
// vendor.go).
type RateLimit struct {
	Requests int           `yaml:"requests" json:"requests"` // per Per
	Per      time.Duration `yaml:"per" json:"per"`
	// SearchPerSecond limits contact searches separately (HubSpot search is 5/s).
	SearchPerSecond int `yaml:"search_per_second" json:"search_per_second"`
}

// Batch shapes how a connection groups calls into one CRM request (HubSpot batch APIs,
// Salesforce sObject Collections). A batch goes when it is full or its first call has waited
// Linger; while it waits for rate-limit budget, later calls join it.
type Batch struct {
	// MaxSize is the most calls one request carries; 0 takes the vendor's maximum (HubSpot
	// 100, Salesforce 200), which is also the upper bound. 1 turns batching off.
	MaxSize int `yaml:"max_size" json:"max_size"`
	// Linger is how long the first call of a batch waits for others (0: the default, 1s).
	Linger time.Duration `yaml:"linger" json:"linger"`
}

// HubSpot is a HubSpot account: a private-app token, or an OAuth app with a refresh token
// (stored by `miitel-crm-sync oauth connect hubspot` or given here).
type HubSpot struct {
	BaseURL         string   `yaml:"base_url" json:"base_url"`
	TokenURL        string   `yaml:"token_url" json:"token_url"`
	AuthURL         string   `yaml:"auth_url" json:"auth_url"`
	PrivateAppToken Secret   `yaml:"private_app_token" json:"private_app_token"`
	ClientID        string   `yaml:"client_id" json:"client_id"`
	ClientSecret    Secret   `yaml:"client_secret" json:"client_secret"`
	RefreshToken    Secret   `yaml:"refresh_token" json:"refresh_token"`
	RedirectURL     string   `yaml:"redirect_url" json:"redirect_url"`
	Scopes          []string `yaml:"scopes" json:"scopes"`
	// UniqueProperty is a custom call property created with hasUniqueValue: true; when set,
	// calls are upserted by it, otherwise through the stored id map.
	UniqueProperty string `yaml:"unique_property" json:"unique_property"`
}

// Salesforce is a Salesforce org, reached with one of three OAuth2 flows.
type Salesforce struct {
	// LoginURL is the My Domain URL (https://<domain>.my.salesforce.com) or the login host.
	LoginURL     string `yaml:"login_url" json:"login_url"`
	TokenURL     string `yaml:"token_url" json:"token_url"` // default LoginURL + /services/oauth2/token
	AuthURL      string `yaml:"auth_url" json:"auth_url"`
	APIVersion   string `yaml:"api_version" json:"api_version"`
	Flow         string `yaml:"flow" json:"flow"` // client_credentials | jwt | refresh_token
	ClientID     string `yaml:"client_id" json:"client_id"`
	ClientSecret Secret `yaml:"client_secret" json:"client_secret"`
	Username     string `yaml:"username" json:"username"` // JWT subject
	PrivateKey   Secret `yaml:"private_key" json:"private_key"`
	RefreshToken Secret `yaml:"refresh_token" json:"refresh_token"`
	RedirectURL  string `yaml:"redirect_url" json:"redirect_url"`
	// ExternalIDField is the Task custom field (External ID, unique) holding the MiiTel id.
	ExternalIDField string `yaml:"external_id_field" json:"external_id_field"`
	// Audience is the aud claim of JWT bearer assertions; default LoginURL
	// (https://login.salesforce.com, https://test.salesforce.com for sandboxes).
	Audience string `yaml:"audience" json:"audience,omitempty"`
	// RequestLimitWait is how long tasks wait after 403 REQUEST_LIMIT_EXCEEDED (the org's
	// daily API allowance is used up); default 15m.
	RequestLimitWait time.Duration `yaml:"request_limit_wait" json:"request_limit_wait,omitempty"`
}

// Ops is the operations listener: /metrics, /healthz, /readyz, the admin API and, when
// enabled, pprof, apart from the webhook port.
type Ops struct {
	Listen string `yaml:"listen" json:"listen" env:"MCS_OPS_LISTEN"`
	// MetricsAuth asks for an admin credential (either role) on /metrics.
	MetricsAuth bool `yaml:"metrics_auth" json:"metrics_auth"`
	// Pprof serves /debug/pprof/ to read-write admin credentials.
	Pprof bool `yaml:"pprof" json:"pprof"`
}

// Admin lists the credentials of the admin API (/admin/...). A request passes with ANY one of
// them, so a credential rotates like a route's: add the new one, switch, remove the old one.
// None configured: the admin API answers 401 to everyone.
type Admin struct {
	Tokens []AdminToken `yaml:"tokens" json:"tokens"`
	Basic  []AdminBasic `yaml:"basic" json:"basic"`
}

// Admin roles.
const (
	RoleReadOnly  = "read_only"  // status, dead letter and queue views
	RoleReadWrite = "read_write" // also replay, backfill and queue actions
)

// AdminToken is one accepted bearer token and what it may do.
type AdminToken struct {
	Token Secret `yaml:"token" json:"token"`
	Role  string `yaml:"role" json:"role"` // read_only | read_write
}

// AdminBasic is one accepted user/password pair for HTTP Basic and what it may do.
type AdminBasic struct {
	Username string `yaml:"username" json:"username"`
	Password Secret `yaml:"password" json:"password"`
	Role     string `yaml:"role" json:"role"` // read_only | read_write
}

// Status configures the per-call sync status: what happened to each call detail (events
// received, task state, errors, the CRM record written), kept in Redis.
type Status struct {
	// Retention is how long a record is kept after its last change, and how far back list
	// queries reach.
	Retention time.Duration `yaml:"retention" json:"retention"`
	// MaxRecords caps the records kept; the oldest calls go first.
	MaxRecords int `yaml:"max_records" json:"max_records"`
	// TimeZone reads clock times and dates in queries ("since 09:00", "2026-04-01").
	TimeZone    string      `yaml:"time_zone" json:"time_zone"`
	PhoneSearch PhoneSearch `yaml:"phone_search" json:"phone_search"`
}

// PhoneSearch makes phone numbers a status search key. Only an HMAC of the E.164 number is
// stored, keyed with Secret, so Redis never holds a number that can be read back or found by
// hashing every possible number.
type PhoneSearch struct {
	Enabled bool   `yaml:"enabled" json:"enabled"`
	Secret  Secret `yaml:"secret" json:"secret"`
}

// DeadLetter configures our own record of every call that went dead (asynq's archive keeps
// at most 10,000 tasks per queue for 90 days and drops the rest silently).
type DeadLetter struct {
	Retention  time.Duration `yaml:"retention" json:"retention"`
	MaxEntries int           `yaml:"max_entries" json:"max_entries"`
	// MaxBytes caps the size (compressed events, metadata and Redis's overhead per entry,
	// close to the memory it takes); the oldest go first.
	MaxBytes int64 `yaml:"max_bytes" json:"max_bytes"`
}
