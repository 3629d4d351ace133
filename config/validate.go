package config

import (
	"fmt"
	"log/slog"
	"net"
	"net/mail"
	"net/url"
	"regexp"
	"strings"
	"time"
	_ "time/tzdata" // status.time_zone must resolve in a distroless image without zoneinfo
)

var routeName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// fieldError is a problem with the value at path (a YAML path: "routes[1].name"). Load sets
// where: the file position of the key, or the environment variable that set it.
type fieldError struct {
	path, msg, where string
}

func (e *fieldError) Error() string {
	s := e.msg
	if e.path != "" {
		s = e.path + ": " + s
	}
	if e.where != "" {
		s = e.where + ": " + s
	}
	return s
}

// at records a problem with the value at path.
func (l *ErrorList) at(path, format string, a ...any) {
	*l = append(*l, &fieldError{path: path, msg: fmt.Sprintf(format, a...)})
}

// secrets visits every Secret a process of role resolves, with its YAML path.
func (c *Config) secrets(role Role, visit func(path string, s *Secret)) {
	visit("redis.password", &c.Redis.Password)
	visit("redis.sentinel.password", &c.Redis.Sentinel.Password)
	if role.Receiver {
		for i := range c.Routes {
			a := &c.Routes[i].Auth
			p := fmt.Sprintf("routes[%d].auth", i)
			for j := range a.Bearer {
				visit(fmt.Sprintf("%s.bearer[%d]", p, j), &a.Bearer[j])
			}
			for j := range a.Basic {
				visit(fmt.Sprintf("%s.basic[%d].password", p, j), &a.Basic[j].Password)
			}
			for j := range a.Headers {
				visit(fmt.Sprintf("%s.headers[%d].value", p, j), &a.Headers[j].Value)
			}
			for j := range a.Payload {
				visit(fmt.Sprintf("%s.payload[%d].value", p, j), &a.Payload[j].Value)
			}
		}
	}
	if role.Admin {
		for i := range c.Admin.Tokens {
			visit(fmt.Sprintf("admin.tokens[%d].token", i), &c.Admin.Tokens[i].Token)
		}
		for i := range c.Admin.Basic {
			visit(fmt.Sprintf("admin.basic[%d].password", i), &c.Admin.Basic[i].Password)
		}
	}
	// Every process that writes or reads call status hashes phone numbers the same way.
	if role.Receiver || role.Worker || role.Admin {
		visit("status.phone_search.secret", &c.Status.PhoneSearch.Secret)
	}
	if role.Worker {
		for i := range c.Connections {
			cn := &c.Connections[i]
			p := fmt.Sprintf("connections[%d]", i)
			if h := cn.HubSpot; h != nil {
				visit(p+".hubspot.private_app_token", &h.PrivateAppToken)
				visit(p+".hubspot.client_secret", &h.ClientSecret)
				visit(p+".hubspot.refresh_token", &h.RefreshToken)
			}
			if s := cn.Salesforce; s != nil {
				visit(p+".salesforce.client_secret", &s.ClientSecret)
				visit(p+".salesforce.private_key", &s.PrivateKey)
				visit(p+".salesforce.refresh_token", &s.RefreshToken)
			}
		}
	}
}

// resolveSecrets reads every Secret of the role from its env var or file; each failure is
// recorded with the secret's place in the config.
func (c *Config) resolveSecrets(getenv func(string) string, role Role, errs *ErrorList) {
	c.secrets(role, func(path string, s *Secret) {
		if err := s.Resolve(getenv); err != nil {
			errs.at(path, "%v", err)
		}
	})
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
		errs.at("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "auto", "json", "text":
	default:
		errs.at("log.format", "%q is not auto, json or text", c.Log.Format)
	}
	c.validateServer(errs)
	c.validateRedis(errs)
	if c.Queue.Name == "" {
		errs.at("queue.name", "must not be empty")
	}
	positive(errs, "queue.dedupe_window", c.Queue.DedupeWindow)
	positive(errs, "queue.task_timeout", c.Queue.TaskTimeout)
	if c.Queue.MaxRetry < 0 {
		errs.at("queue.max_retry", "must not be negative")
	}
	if c.Worker.Concurrency < 1 {
		errs.at("worker.concurrency", "must be at least 1")
	}
	positive(errs, "worker.shutdown_timeout", c.Worker.ShutdownTimeout)
	positive(errs, "worker.state_ttl", c.Worker.StateTTL)
	positive(errs, "worker.id_map_ttl", c.Worker.IDMapTTL)
	positive(errs, "worker.retry_base", c.Worker.RetryBase)
	positive(errs, "worker.poll_interval", c.Worker.PollInterval)
	positive(errs, "worker.check_interval", c.Worker.CheckInterval)
	if c.Worker.RetryMax < c.Worker.RetryBase {
		errs.at("worker.retry_max", "must not be below worker.retry_base")
	}
	c.validateConnections(errs)
	c.validateRoutes(errs)
	c.validateOps(errs)
}

// validateOps checks the ops listener, the admin credentials, call status and the dead letter.
func (c *Config) validateOps(errs *ErrorList) {
	if _, _, err := net.SplitHostPort(c.Ops.Listen); err != nil {
		errs.at("ops.listen", "%q is not host:port: %v", c.Ops.Listen, err)
	}
	roles := func(p, role string) {
		if role != RoleReadOnly && role != RoleReadWrite {
			errs.at(p+".role", "%q is not read_only or read_write", role)
		}
	}
	for i, t := range c.Admin.Tokens {
		p := fmt.Sprintf("admin.tokens[%d]", i)
		if !t.Token.Set() {
			errs.at(p+".token", "required ({env: NAME} or {file: PATH})")
		}
		roles(p, t.Role)
	}
	for i, b := range c.Admin.Basic {
		p := fmt.Sprintf("admin.basic[%d]", i)
		if b.Username == "" || strings.Contains(b.Username, ":") {
			errs.at(p+".username", "must be non-empty and contain no ':'")
		}
		if !b.Password.Set() {
			errs.at(p+".password", "required ({env: NAME} or {file: PATH})")
		}
		roles(p, b.Role)
	}
	positive(errs, "status.retention", c.Status.Retention)
	if c.Status.MaxRecords < 1 {
		errs.at("status.max_records", "must be at least 1")
	}
	if _, err := time.LoadLocation(c.Status.TimeZone); err != nil || c.Status.TimeZone == "" {
		errs.at("status.time_zone", "%q is not a time zone (e.g. Asia/Tokyo, UTC)", c.Status.TimeZone)
	}
	if c.Status.PhoneSearch.Enabled && !c.Status.PhoneSearch.Secret.Set() {
		errs.at("status.phone_search.secret", "required when phone_search is enabled (the key of the stored number hashes)")
	}
	positive(errs, "dead_letter.retention", c.DeadLetter.Retention)
	if c.DeadLetter.MaxEntries < 1 {
		errs.at("dead_letter.max_entries", "must be at least 1")
	}
	if c.DeadLetter.MaxBytes < 1<<20 {
		errs.at("dead_letter.max_bytes", "%d is too small (at least 1048576, one MiB)", c.DeadLetter.MaxBytes)
	}
}

func (c *Config) validateServer(errs *ErrorList) {
	s := c.Server
	if _, _, err := net.SplitHostPort(s.Listen); err != nil {
		errs.at("server.listen", "%q is not host:port: %v", s.Listen, err)
	}
	if s.MaxBodyBytes < 1<<10 {
		errs.at("server.max_body_bytes", "%d is too small (at least 1024)", s.MaxBodyBytes)
	}
	positive(errs, "server.read_header_timeout", s.ReadHeaderTimeout)
	positive(errs, "server.read_timeout", s.ReadTimeout)
	positive(errs, "server.write_timeout", s.WriteTimeout)
	positive(errs, "server.idle_timeout", s.IdleTimeout)
	positive(errs, "server.enqueue_timeout", s.EnqueueTimeout)
	positive(errs, "server.shutdown_timeout", s.ShutdownTimeout)
	positive(errs, "server.retry_after", s.RetryAfter)
	if s.MaxInflightRequests < 1 {
		errs.at("server.max_inflight_requests", "%d must be at least 1", s.MaxInflightRequests)
	}
	if s.MaxInflightBytes < 4*s.MaxBodyBytes {
		errs.at("server.max_inflight_bytes", "%d must be at least 4 x server.max_body_bytes (%d): each body byte is charged 4 times, and the largest body must fit", s.MaxInflightBytes, 4*s.MaxBodyBytes)
	}
	for i, p := range s.TrustedProxies {
		if _, _, err := net.ParseCIDR(p); err != nil {
			errs.at(fmt.Sprintf("server.trusted_proxies[%d]", i), "%q is not a CIDR", p)
		}
	}
}

func (c *Config) validateRedis(errs *ErrorList) {
	r := c.Redis
	positive(errs, "redis.ack_timeout", r.AckTimeout)
	if r.AckTimeout >= c.Server.EnqueueTimeout && c.Server.EnqueueTimeout > 0 {
		errs.at("redis.ack_timeout", "must be below server.enqueue_timeout (%s), which bounds the enqueue and the wait together", c.Server.EnqueueTimeout)
	}
	set := 0
	if r.URL != "" {
		set++
		u, err := url.Parse(r.URL)
		switch {
		case err != nil:
			errs.at("redis.url", "%v", err)
		case u.Scheme != "redis" && u.Scheme != "rediss":
			errs.at("redis.url", "scheme %q is not redis or rediss", u.Scheme)
		case u.User != nil:
			if _, hasPass := u.User.Password(); hasPass {
				errs.at("redis.url", "must not contain a password; use redis.password {env|file}")
			}
		}
	}
	if r.Sentinel.MasterName != "" || len(r.Sentinel.Addrs) > 0 {
		set++
		if r.Sentinel.MasterName == "" || len(r.Sentinel.Addrs) == 0 {
			errs.at("redis.sentinel", "needs both master_name and addrs")
		}
	}
	if len(r.Cluster.Addrs) > 0 {
		set++
	}
	if set > 1 {
		errs.at("redis", "set only one of url, sentinel or cluster")
	}
}

func (c *Config) validateConnections(errs *ErrorList) {
	seen := map[string]bool{}
	for i, cn := range c.Connections {
		p := fmt.Sprintf("connections[%d]", i)
		checkName(errs, seen, p, cn.Name, "")
		switch cn.Type {
		case "hubspot":
			h := cn.HubSpot
			switch {
			case h == nil:
				errs.at(p+".hubspot", "required for type hubspot")
			case !h.PrivateAppToken.Set() && !h.ClientSecret.Set():
				errs.at(p+".hubspot", "set private_app_token, or client_id + client_secret for OAuth")
			case h.ClientSecret.Set() && h.ClientID == "":
				errs.at(p+".hubspot.client_id", "required with client_secret")
			}
		case "salesforce":
			if cn.Salesforce == nil {
				errs.at(p+".salesforce", "required for type salesforce")
				continue
			}
			s := cn.Salesforce
			if s.LoginURL == "" && s.TokenURL == "" {
				errs.at(p+".salesforce.login_url", "required (your My Domain URL)")
			}
			if s.ClientID == "" {
				errs.at(p+".salesforce.client_id", "required")
			}
			if s.ExternalIDField == "" {
				errs.at(p+".salesforce.external_id_field", "required (the Task External ID field, e.g. MiiTel_Detail_Id__c)")
			}
			switch s.Flow {
			case "client_credentials":
				if !s.ClientSecret.Set() {
					errs.at(p+".salesforce.client_secret", "required for flow client_credentials")
				}
			case "jwt":
				if !s.PrivateKey.Set() || s.Username == "" {
					errs.at(p+".salesforce", "flow jwt needs private_key and username")
				}
			case "refresh_token":
			default:
				errs.at(p+".salesforce.flow", "%q is not client_credentials, jwt or refresh_token", s.Flow)
			}
		case "dryrun":
		default:
			errs.at(p+".type", "%q is not hubspot, salesforce or dryrun", cn.Type)
		}
		if cn.RateLimit.Requests < 0 || cn.RateLimit.Per < 0 || cn.RateLimit.SearchPerSecond < 0 {
			errs.at(p+".rate_limit", "values must not be negative")
		}
		if e := cn.Check.OwnerEmail; e != "" && !emailLike(e) {
			errs.at(p+".check.owner_email", "%q is not an e-mail address (a rep's CRM login, e.g. rep@example.com)", e)
		}
		maxBatch := map[string]int{"hubspot": HubSpotMaxBatch, "salesforce": SalesforceMaxBatch}[cn.Type]
		switch {
		case cn.Batch.MaxSize < 0:
			errs.at(p+".batch.max_size", "must not be negative")
		case maxBatch > 0 && cn.Batch.MaxSize > maxBatch:
			errs.at(p+".batch.max_size", "%d is over %s's limit of %d per request", cn.Batch.MaxSize, cn.Type, maxBatch)
		}
		if cn.RecordURL != "" && !strings.Contains(cn.RecordURL, "{id}") {
			errs.at(p+".record_url", "%q must contain {id}, the CRM record id", cn.RecordURL)
		}
		if cn.Batch.Linger < 0 || cn.Batch.Linger > 30*time.Second {
			errs.at(p+".batch.linger", "%s is outside 0s..30s (calls wait this long for a batch)", cn.Batch.Linger)
		}
	}
}

// emailLike accepts a bare address (no display name) with a dot in its domain: what a CRM
// user's login e-mail looks like.
func emailLike(s string) bool {
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" {
		return false
	}
	_, domain, _ := strings.Cut(s, "@")
	return strings.Contains(strings.Trim(domain, "."), ".")
}

func (c *Config) validateRoutes(errs *ErrorList) {
	if len(c.Routes) == 0 {
		errs.at("routes", "at least one route is required")
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
			errs.at(p+".connection", "%q is not a configured connection", r.Connection)
		}
		a := r.Auth
		if len(a.Bearer)+len(a.Basic)+len(a.Headers)+len(a.Payload) == 0 && !a.Insecure {
			errs.at(p+".auth", "no credential configured; add bearer, basic, headers or payload (MiiTel's additional headers/payload)")
		}
		for j, b := range a.Basic {
			if b.Username == "" || strings.Contains(b.Username, ":") {
				errs.at(fmt.Sprintf("%s.auth.basic[%d].username", p, j), "must be non-empty and contain no ':'")
			}
		}
		for j, h := range a.Headers {
			if h.Name == "" {
				errs.at(fmt.Sprintf("%s.auth.headers[%d].name", p, j), "required")
			}
		}
		for j, pl := range a.Payload {
			if pl.Key == "" || pl.Key == "call" || pl.Key == "challenge" {
				errs.at(fmt.Sprintf("%s.auth.payload[%d].key", p, j), "%q cannot be used (empty, call or challenge)", pl.Key)
			}
		}
		for j, cidr := range a.AllowCIDRs {
			if _, _, err := net.ParseCIDR(cidr); err != nil {
				errs.at(fmt.Sprintf("%s.auth.allow_cidrs[%d]", p, j), "%q is not a CIDR", cidr)
			}
		}
	}
}

// checkName reports a route or connection name that is not a plain identifier (names end
// up in URLs, Redis keys and env var names) or that is used twice.
func checkName(errs *ErrorList, seen map[string]bool, p, name, hint string) {
	if !routeName.MatchString(name) {
		errs.at(p+".name", "%q must be lower-case letters, digits, - or _%s", name, hint)
	}
	if seen[name] {
		errs.at(p+".name", "%q is used twice", name)
	}
	seen[name] = true
}

func positive(errs *ErrorList, name string, d time.Duration) {
	if d <= 0 {
		errs.at(name, "must be a positive duration (e.g. 30s, 24h)")
	}
}
