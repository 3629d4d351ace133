package config

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"
	_ "time/tzdata" // status.time_zone must resolve in a distroless image without zoneinfo
)

var routeName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// resolveSecrets reads every Secret from its env var or file; each failure is recorded with
// the secret's place in the config.
func (c *Config) resolveSecrets(getenv func(string) string, role Role, errs *ErrorList) {
	resolve := func(where string, s *Secret) {
		if err := s.Resolve(getenv); err != nil {
			errs.add("%s: %v", where, err)
		}
	}
	resolve("redis.password", &c.Redis.Password)
	resolve("redis.sentinel.password", &c.Redis.Sentinel.Password)
	if role.Receiver {
		for i := range c.Routes {
			a := &c.Routes[i].Auth
			p := fmt.Sprintf("routes[%d].auth", i)
			for j := range a.Bearer {
				resolve(fmt.Sprintf("%s.bearer[%d]", p, j), &a.Bearer[j])
			}
			for j := range a.Basic {
				resolve(fmt.Sprintf("%s.basic[%d].password", p, j), &a.Basic[j].Password)
			}
			for j := range a.Headers {
				resolve(fmt.Sprintf("%s.headers[%d].value", p, j), &a.Headers[j].Value)
			}
			for j := range a.Payload {
				resolve(fmt.Sprintf("%s.payload[%d].value", p, j), &a.Payload[j].Value)
			}
		}
	}
	if role.Admin {
		for i := range c.Admin.Tokens {
			resolve(fmt.Sprintf("admin.tokens[%d].token", i), &c.Admin.Tokens[i].Token)
		}
		for i := range c.Admin.Basic {
			resolve(fmt.Sprintf("admin.basic[%d].password", i), &c.Admin.Basic[i].Password)
		}
	}
	// Every process that writes or reads call status hashes phone numbers the same way.
	if role.Receiver || role.Worker || role.Admin {
		resolve("status.phone_search.secret", &c.Status.PhoneSearch.Secret)
	}
	if role.Worker {
		for i := range c.Connections {
			cn := &c.Connections[i]
			p := fmt.Sprintf("connections[%d]", i)
			if h := cn.HubSpot; h != nil {
				resolve(p+".hubspot.private_app_token", &h.PrivateAppToken)
				resolve(p+".hubspot.client_secret", &h.ClientSecret)
				resolve(p+".hubspot.refresh_token", &h.RefreshToken)
			}
			if s := cn.Salesforce; s != nil {
				resolve(p+".salesforce.client_secret", &s.ClientSecret)
				resolve(p+".salesforce.private_key", &s.PrivateKey)
				resolve(p+".salesforce.refresh_token", &s.RefreshToken)
			}
		}
	}
}

// Validate reports every problem of an already loaded configuration at once.
func (c *Config) Validate() error {
	var errs ErrorList
	c.validate(&errs)
	if len(errs) > 0 {
		return errs
	}
	return nil
}

func (c *Config) validate(errs *ErrorList) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.Log.Level)); err != nil {
		errs.add("log.level: %q is not one of debug, info, warn, error", c.Log.Level)
	}
	if c.Log.Format != "json" && c.Log.Format != "text" {
		errs.add("log.format: %q is not json or text", c.Log.Format)
	}
	c.validateServer(errs)
	c.validateRedis(errs)
	if c.Queue.Name == "" {
		errs.add("queue.name: must not be empty")
	}
	positive(errs, "queue.dedupe_window", c.Queue.DedupeWindow)
	positive(errs, "queue.task_timeout", c.Queue.TaskTimeout)
	if c.Queue.MaxRetry < 0 {
		errs.add("queue.max_retry: must not be negative")
	}
	if c.Worker.Concurrency < 1 {
		errs.add("worker.concurrency: must be at least 1")
	}
	positive(errs, "worker.shutdown_timeout", c.Worker.ShutdownTimeout)
	positive(errs, "worker.state_ttl", c.Worker.StateTTL)
	positive(errs, "worker.id_map_ttl", c.Worker.IDMapTTL)
	positive(errs, "worker.retry_base", c.Worker.RetryBase)
	positive(errs, "worker.poll_interval", c.Worker.PollInterval)
	if c.Worker.RetryMax < c.Worker.RetryBase {
		errs.add("worker.retry_max: must not be below worker.retry_base")
	}
	c.validateConnections(errs)
	c.validateRoutes(errs)
	c.validateOps(errs)
}

// validateOps checks the ops listener, the admin credentials, call status and the dead letter.
func (c *Config) validateOps(errs *ErrorList) {
	if _, _, err := net.SplitHostPort(c.Ops.Listen); err != nil {
		errs.add("ops.listen: %q is not host:port: %v", c.Ops.Listen, err)
	}
	roles := func(p, role string) {
		if role != RoleReadOnly && role != RoleReadWrite {
			errs.add("%s.role: %q is not read_only or read_write", p, role)
		}
	}
	for i, t := range c.Admin.Tokens {
		p := fmt.Sprintf("admin.tokens[%d]", i)
		if !t.Token.Set() {
			errs.add("%s.token: required ({env: NAME} or {file: PATH})", p)
		}
		roles(p, t.Role)
	}
	for i, b := range c.Admin.Basic {
		p := fmt.Sprintf("admin.basic[%d]", i)
		if b.Username == "" || strings.Contains(b.Username, ":") {
			errs.add("%s.username: must be non-empty and contain no ':'", p)
		}
		if !b.Password.Set() {
			errs.add("%s.password: required ({env: NAME} or {file: PATH})", p)
		}
		roles(p, b.Role)
	}
	positive(errs, "status.retention", c.Status.Retention)
	if c.Status.MaxRecords < 1 {
		errs.add("status.max_records: must be at least 1")
	}
	if _, err := time.LoadLocation(c.Status.TimeZone); err != nil || c.Status.TimeZone == "" {
		errs.add("status.time_zone: %q is not a time zone (e.g. Asia/Tokyo, UTC)", c.Status.TimeZone)
	}
	if c.Status.PhoneSearch.Enabled && !c.Status.PhoneSearch.Secret.Set() {
		errs.add("status.phone_search.secret: required when phone_search is enabled (the key of the stored number hashes)")
	}
	positive(errs, "dead_letter.retention", c.DeadLetter.Retention)
	if c.DeadLetter.MaxEntries < 1 {
		errs.add("dead_letter.max_entries: must be at least 1")
	}
	if c.DeadLetter.MaxBytes < 1<<20 {
		errs.add("dead_letter.max_bytes: %d is too small (at least 1048576, one MiB)", c.DeadLetter.MaxBytes)
	}
}

func (c *Config) validateServer(errs *ErrorList) {
	s := c.Server
	if _, _, err := net.SplitHostPort(s.Listen); err != nil {
		errs.add("server.listen: %q is not host:port: %v", s.Listen, err)
	}
	if s.MaxBodyBytes < 1<<10 {
		errs.add("server.max_body_bytes: %d is too small (at least 1024)", s.MaxBodyBytes)
	}
	positive(errs, "server.read_header_timeout", s.ReadHeaderTimeout)
	positive(errs, "server.read_timeout", s.ReadTimeout)
	positive(errs, "server.write_timeout", s.WriteTimeout)
	positive(errs, "server.idle_timeout", s.IdleTimeout)
	positive(errs, "server.enqueue_timeout", s.EnqueueTimeout)
	positive(errs, "server.shutdown_timeout", s.ShutdownTimeout)
	positive(errs, "server.retry_after", s.RetryAfter)
	for i, p := range s.TrustedProxies {
		if _, _, err := net.ParseCIDR(p); err != nil {
			errs.add("server.trusted_proxies[%d]: %q is not a CIDR", i, p)
		}
	}
}

func (c *Config) validateRedis(errs *ErrorList) {
	r := c.Redis
	set := 0
	if r.URL != "" {
		set++
		u, err := url.Parse(r.URL)
		switch {
		case err != nil:
			errs.add("redis.url: %v", err)
		case u.Scheme != "redis" && u.Scheme != "rediss":
			errs.add("redis.url: scheme %q is not redis or rediss", u.Scheme)
		case u.User != nil:
			if _, hasPass := u.User.Password(); hasPass {
				errs.add("redis.url: must not contain a password; use redis.password {env|file}")
			}
		}
	}
	if r.Sentinel.MasterName != "" || len(r.Sentinel.Addrs) > 0 {
		set++
		if r.Sentinel.MasterName == "" || len(r.Sentinel.Addrs) == 0 {
			errs.add("redis.sentinel: needs both master_name and addrs")
		}
	}
	if len(r.Cluster.Addrs) > 0 {
		set++
	}
	if set > 1 {
		errs.add("redis: set only one of url, sentinel or cluster")
	}
}

func (c *Config) validateConnections(errs *ErrorList) {
	seen := map[string]bool{}
	for i, cn := range c.Connections {
		p := fmt.Sprintf("connections[%d]", i)
		checkName(errs, seen, p, cn.Name, "")
		switch cn.Type {
		case "hubspot":
			if cn.HubSpot == nil {
				errs.add("%s.hubspot: required for type hubspot", p)
			} else if !cn.HubSpot.PrivateAppToken.Set() && !cn.HubSpot.ClientSecret.Set() {
				errs.add("%s.hubspot: set private_app_token, or client_id + client_secret for OAuth", p)
			} else if cn.HubSpot.ClientSecret.Set() && cn.HubSpot.ClientID == "" {
				errs.add("%s.hubspot.client_id: required with client_secret", p)
			}
		case "salesforce":
			if cn.Salesforce == nil {
				errs.add("%s.salesforce: required for type salesforce", p)
				continue
			}
			s := cn.Salesforce
			if s.LoginURL == "" && s.TokenURL == "" {
				errs.add("%s.salesforce.login_url: required (your My Domain URL)", p)
			}
			if s.ClientID == "" {
				errs.add("%s.salesforce.client_id: required", p)
			}
			if s.ExternalIDField == "" {
				errs.add("%s.salesforce.external_id_field: required (the Task External ID field, e.g. MiiTel_Detail_Id__c)", p)
			}
			switch s.Flow {
			case "client_credentials":
				if !s.ClientSecret.Set() {
					errs.add("%s.salesforce.client_secret: required for flow client_credentials", p)
				}
			case "jwt":
				if !s.PrivateKey.Set() || s.Username == "" {
					errs.add("%s.salesforce: flow jwt needs private_key and username", p)
				}
			case "refresh_token":
			default:
				errs.add("%s.salesforce.flow: %q is not client_credentials, jwt or refresh_token", p, s.Flow)
			}
		case "dryrun":
		default:
			errs.add("%s.type: %q is not hubspot, salesforce or dryrun", p, cn.Type)
		}
		if cn.RateLimit.Requests < 0 || cn.RateLimit.Per < 0 || cn.RateLimit.SearchPerSecond < 0 {
			errs.add("%s.rate_limit: values must not be negative", p)
		}
		maxBatch := map[string]int{"hubspot": HubSpotMaxBatch, "salesforce": SalesforceMaxBatch}[cn.Type]
		switch {
		case cn.Batch.MaxSize < 0:
			errs.add("%s.batch.max_size: must not be negative", p)
		case maxBatch > 0 && cn.Batch.MaxSize > maxBatch:
			errs.add("%s.batch.max_size: %d is over %s's limit of %d per request", p, cn.Batch.MaxSize, cn.Type, maxBatch)
		}
		if cn.RecordURL != "" && !strings.Contains(cn.RecordURL, "{id}") {
			errs.add("%s.record_url: %q must contain {id}, the CRM record id", p, cn.RecordURL)
		}
		if cn.Batch.Linger < 0 || cn.Batch.Linger > 30*time.Second {
			errs.add("%s.batch.linger: %s is outside 0s..30s (calls wait this long for a batch)", p, cn.Batch.Linger)
		}
	}
}

func (c *Config) validateRoutes(errs *ErrorList) {
	if len(c.Routes) == 0 {
		errs.add("routes: at least one route is required")
	}
	conns := map[string]bool{}
	for _, cn := range c.Connections {
		conns[cn.Name] = true
	}
	seen := map[string]bool{}
	for i, r := range c.Routes {
		p := fmt.Sprintf("routes[%d]", i)
		checkName(errs, seen, p, r.Name, " (it is the URL path /webhooks/miitel/<name>)")
		if r.Connection != "" && !conns[r.Connection] {
			errs.add("%s.connection: %q is not a configured connection", p, r.Connection)
		}
		a := r.Auth
		if len(a.Bearer)+len(a.Basic)+len(a.Headers)+len(a.Payload) == 0 && !a.Insecure {
			errs.add("%s.auth: no credential configured; add bearer, basic, headers or payload (MiiTel's additional headers/payload)", p)
		}
		for j, b := range a.Basic {
			if b.Username == "" || strings.Contains(b.Username, ":") {
				errs.add("%s.auth.basic[%d].username: must be non-empty and contain no ':'", p, j)
			}
		}
		for j, h := range a.Headers {
			if h.Name == "" {
				errs.add("%s.auth.headers[%d].name: required", p, j)
			}
		}
		for j, pl := range a.Payload {
			if pl.Key == "" || pl.Key == "call" || pl.Key == "challenge" {
				errs.add("%s.auth.payload[%d].key: %q cannot be used (empty, call or challenge)", p, j, pl.Key)
			}
		}
		for j, cidr := range a.AllowCIDRs {
			if _, _, err := net.ParseCIDR(cidr); err != nil {
				errs.add("%s.auth.allow_cidrs[%d]: %q is not a CIDR", p, j, cidr)
			}
		}
	}
}

// checkName reports a route or connection name that is not a plain identifier (names end
// up in URLs, Redis keys and env var names) or that is used twice.
func checkName(errs *ErrorList, seen map[string]bool, p, name, hint string) {
	if !routeName.MatchString(name) {
		errs.add("%s.name: %q must be lower-case letters, digits, - or _%s", p, name, hint)
	}
	if seen[name] {
		errs.add("%s.name: %q is used twice", p, name)
	}
	seen[name] = true
}

func positive(errs *ErrorList, name string, d time.Duration) {
	if d <= 0 {
		errs.add("%s: must be a positive duration (e.g. 30s, 24h)", name)
	}
}

func (l *ErrorList) add(format string, a ...any) { *l = append(*l, fmt.Errorf(format, a...)) }
