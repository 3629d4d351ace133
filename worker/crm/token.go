package crm

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/durable"
)

// TokenProvider gives the access token to put on a CRM request. ctx bounds the wait (for
// Redis, for another replica's refresh); it is never kept.
type TokenProvider interface {
	Token(ctx context.Context) (*oauth2.Token, error)
}

// TokenInvalidator is implemented by providers whose token can be dropped when the CRM
// rejects it (Salesforce 401 INVALID_SESSION_ID), so the next Token call fetches a new one.
type TokenInvalidator interface {
	Invalidate(ctx context.Context, rejected *oauth2.Token) error
}

// StaticToken is a token that never changes: a HubSpot private-app token.
type StaticToken string

// Token returns the static bearer token.
func (s StaticToken) Token(context.Context) (*oauth2.Token, error) {
	return &oauth2.Token{AccessToken: string(s), TokenType: "Bearer"}, nil
}

// TokenFetcher asks a token endpoint for a new token: the flow-specific part of a
// SharedToken. refreshToken is the stored refresh token for refresh-token flows and "" for
// flows without one (client credentials, JWT bearer). ctx is the SharedToken's long-lived
// context with a timeout, never a request's.
type TokenFetcher func(ctx context.Context, refreshToken string) (*oauth2.Token, error)

// RefreshTokenGrant fetches with the refresh_token grant of cfg (x/oauth2 does the request,
// form-encoded, with the endpoint's AuthStyle). A refresh token the endpoint sends back
// (rotation) is in the returned token; x/oauth2 copies the old one in when none came back.
func RefreshTokenGrant(cfg *oauth2.Config) TokenFetcher {
	return func(ctx context.Context, refreshToken string) (*oauth2.Token, error) {
		return cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: refreshToken}).Token()
	}
}

// SourceGrant adapts a flow that x/oauth2 exposes as a TokenSource built from a context,
// e.g. clientcredentials.Config.TokenSource or jwt.Config.TokenSource. A fresh source is
// built for each fetch so it never caches a token the SharedToken has not stored.
func SourceGrant(newSource func(ctx context.Context) oauth2.TokenSource) TokenFetcher {
	return func(ctx context.Context, _ string) (*oauth2.Token, error) {
		return newSource(ctx).Token()
	}
}

// IsRevoked reports whether a token-endpoint error means the grant is gone for good and an
// admin must reconnect: RFC 6749 invalid_grant (revoked, expired or replayed refresh token,
// an uninstalled app) or HubSpot's BAD_REFRESH_TOKEN status.
func IsRevoked(err error) bool {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		return false
	}
	if re.ErrorCode == "invalid_grant" {
		return true
	}
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
	}
	if json.Unmarshal(re.Body, &body) == nil && (body.Status == "BAD_REFRESH_TOKEN" || body.Error == "invalid_grant") {
		return true
	}
	return bytes.Contains(re.Body, []byte("BAD_REFRESH_TOKEN"))
}

// TokenOptions configure a SharedToken.
type TokenOptions struct {
	// Connection names the CRM connection; it scopes the Redis keys.
	Connection string
	Redis      redis.UniversalClient
	// Fetch gets a new token from the endpoint.
	Fetch TokenFetcher
	// UsesRefreshToken says Fetch needs the stored refresh token (refresh-token flow).
	UsesRefreshToken bool
	// InitialRefreshToken is the refresh token from the config file, if any. It is written to
	// Redis when Redis has none, or when it differs from the one the config held last time
	// (the admin pasted a new one); otherwise Redis wins, because it holds rotations.
	InitialRefreshToken string
	// Credentials fingerprints the static credentials (client id and secret, private key),
	// so a broken mark recorded against old credentials does not outlive a config fix.
	Credentials string
	// AssumedLifetime is the lifetime given to tokens that come without expires_in
	// (Salesforce; x/oauth2 would treat them as valid forever, golang/oauth2#738).
	// Default 1h.
	AssumedLifetime time.Duration
	// ExpiryMargin refreshes this long before the expiry, so a token never expires in
	// flight. Default 1m.
	ExpiryMargin time.Duration
	// LockTTL bounds how long one replica holds the refresh lock (a crashed holder frees it
	// after this). Default 30s; must exceed FetchTimeout.
	LockTTL time.Duration
	// FetchTimeout bounds one token request. Default 20s.
	FetchTimeout time.Duration
	// BrokenRetryAfter is the RetryAfter of the Broken error tasks get while the connection
	// is broken. Default 5m.
	BrokenRetryAfter time.Duration
	// KeepExtra names token-response fields stored with the token and restored with
	// Token.Extra, e.g. "instance_url" for Salesforce.
	KeepExtra []string
	// Revoked decides which fetch errors break the connection. Default IsRevoked.
	Revoked func(error) bool
	// Broken is the connection's broken state, shared with the connector so that its own
	// reasons (a missing record key field) and the token's add up. Nil: the token keeps
	// its own.
	Broken *BrokenState
	// Acks holds a rotated refresh token to redis.ack_replicas before its access token is
	// used: the endpoint has invalidated the previous one, so a failover that lost the
	// new one would break the connection until an admin reconnects it. Nil waits for none.
	Acks *durable.Acks
	// Logger is the connector's, which already names the connection.
	Logger  *slog.Logger
	Metrics *Metrics
}

// SharedToken is one OAuth2 access token per CRM connection, shared by every worker replica
// through Redis:
//
//   - Token reads the stored token; while it is valid (ExpiryMargin before its expiry) no
//     replica calls the token endpoint.
//   - When it is missing or expiring, one replica takes a lock (SET NX PX LockTTL), reads the
//     token again (another replica may have just stored one), then fetches. The others poll
//     the stored token with a capped exponential backoff bounded by their ctx.
//   - A refresh token that comes back different (rotation) is written to Redis before the new
//     access token is stored or used: if that write fails the access token is discarded and
//     the new refresh token is kept in memory for the next attempt, since the old one may
//     already be revoked.
//   - The fetch runs on the long-lived context given to NewSharedToken, not the caller's:
//     a task cancelled mid-refresh must not lose a rotated refresh token.
//   - A revoked grant (invalid_grant, BAD_REFRESH_TOKEN) marks the connection broken in
//     Redis: every replica then returns a Broken *Error at once, without calling the
//     endpoint, until a new refresh token is saved (TokenStore.SaveRefreshToken, `oauth
//     connect`) or the configured credentials change.
//
// Tokens are stored as compact JSON with a TTL at their expiry; they are never logged.
type SharedToken struct {
	base   context.Context
	o      TokenOptions
	store  *TokenStore
	log    *slog.Logger
	m      *Metrics
	broken *BrokenState

	mu      sync.Mutex
	seeded  bool
	unsaved string // a rotated refresh token whose Redis write failed
}

// NewSharedToken builds the shared token source of one connection. base must be long-lived
// (the worker's run context): fetches run on it.
func NewSharedToken(base context.Context, o TokenOptions) (*SharedToken, error) {
	if o.Connection == "" || o.Redis == nil || o.Fetch == nil {
		return nil, errors.New("crm: shared token needs a connection name, redis and a fetch function")
	}
	if o.AssumedLifetime <= 0 {
		o.AssumedLifetime = time.Hour
	}
	if o.ExpiryMargin <= 0 {
		o.ExpiryMargin = time.Minute
	}
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = 20 * time.Second
	}
	if o.LockTTL <= 0 {
		o.LockTTL = 30 * time.Second
	}
	if o.LockTTL <= o.FetchTimeout {
		o.LockTTL = o.FetchTimeout + 5*time.Second
	}
	if o.BrokenRetryAfter <= 0 {
		o.BrokenRetryAfter = 5 * time.Minute
	}
	if o.Revoked == nil {
		o.Revoked = IsRevoked
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := orNop(o.Metrics)
	broken := o.Broken
	if broken == nil {
		broken = NewBrokenState(o.Connection, m)
	}
	return &SharedToken{
		base:   base,
		o:      o,
		store:  NewTokenStore(o.Redis, o.Connection).withAcks(o.Acks),
		log:    log,
		m:      m,
		broken: broken,
	}, nil
}

// Token returns a valid access token, fetching one when needed (see SharedToken).
func (s *SharedToken) Token(ctx context.Context) (*oauth2.Token, error) {
	const minWait, maxWait = 10 * time.Millisecond, 500 * time.Millisecond
	wait := minWait
	for {
		st, err := s.store.snapshot(ctx)
		if err != nil {
			return nil, s.redisErr(err)
		}
		if tok := st.valid(s.o.ExpiryMargin); tok != nil {
			s.broken.Clear(BrokenToken)
			return tok, nil
		}
		if err := s.brokenErr(st); err != nil {
			return nil, err
		}
		owner, ok, err := s.store.lock(ctx, s.o.LockTTL)
		if err != nil {
			return nil, s.redisErr(err)
		}
		if ok {
			return s.refreshLocked(owner)
		}
		// Another replica is refreshing: poll its result.
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, &Error{Class: Transient, Op: "crm: wait for token refresh", Err: ctx.Err()}
		case <-t.C:
		}
		wait = min(wait*2, maxWait)
	}
}

// refreshLocked runs with the refresh lock held. It takes no caller context on purpose (see
// below): once the lock is taken, the refresh runs to its end.
func (s *SharedToken) refreshLocked(owner string) (*oauth2.Token, error) {
	// Everything below uses the long-lived context so a cancelled task cannot cut a refresh
	// between the endpoint's answer and the write of a rotated refresh token.
	fctx, cancel := context.WithTimeout(s.base, s.o.FetchTimeout)
	defer cancel()
	defer func() { _ = s.store.unlock(context.WithoutCancel(fctx), owner) }()

	if err := s.seed(fctx); err != nil {
		return nil, s.redisErr(err)
	}
	// Re-read under the lock: another replica may have stored a token between our read
	// and our lock.
	st, err := s.store.snapshot(fctx)
	if err != nil {
		return nil, s.redisErr(err)
	}
	if tok := st.valid(s.o.ExpiryMargin); tok != nil {
		return tok, nil
	}
	if err := s.brokenErr(st); err != nil {
		return nil, err
	}

	rt := ""
	if s.o.UsesRefreshToken {
		rt, err = s.currentRefreshToken(fctx, st.refresh)
		if err != nil {
			return nil, err
		}
		if rt == "" {
			return nil, &Error{Class: Broken, Op: "crm: token", After: s.o.BrokenRetryAfter,
				Msg: "no refresh token stored for connection " + s.o.Connection + ": run `miitel-crm-sync oauth connect`"}
		}
	}

	tok, err := s.o.Fetch(fctx, rt)
	if err != nil {
		if s.o.Revoked(err) {
			s.m.TokenFetches.WithLabelValues(s.o.Connection, "broken").Inc()
			return nil, s.markBroken(fctx, rt, err)
		}
		s.m.TokenFetches.WithLabelValues(s.o.Connection, "error").Inc()
		s.log.Warn("crm: token fetch failed", "error", err.Error())
		return nil, &Error{Class: Transient, Op: "crm: token", Err: err}
	}
	s.m.TokenFetches.WithLabelValues(s.o.Connection, "ok").Inc()

	if s.o.UsesRefreshToken && tok.RefreshToken != "" && tok.RefreshToken != rt {
		// Rotation: persist the new refresh token before anything uses the new access token.
		if err := s.store.saveRotated(fctx, tok.RefreshToken); err != nil {
			s.mu.Lock()
			s.unsaved = tok.RefreshToken
			s.mu.Unlock()
			s.log.Error("crm: could not store rotated refresh token; keeping it in memory", "error", err.Error())
			return nil, s.redisErr(err)
		}
		s.mu.Lock()
		s.unsaved = ""
		s.mu.Unlock()
		s.log.Info("crm: refresh token rotated")
	}

	if tok.Expiry.IsZero() {
		tok.Expiry = time.Now().Add(s.o.AssumedLifetime)
	}
	stored := newStoredToken(tok, s.o.KeepExtra)
	if err := s.store.saveAccess(fctx, stored); err != nil {
		// The token is good; only sharing it failed. Use it for this request.
		s.log.Warn("crm: could not share access token through redis", "error", err.Error())
	}
	s.broken.Clear(BrokenToken)
	return stored.token(), nil
}

// currentRefreshToken is the refresh token to use: one that could not be stored earlier
// (written now), else Redis's.
func (s *SharedToken) currentRefreshToken(ctx context.Context, stored string) (string, error) {
	s.mu.Lock()
	unsaved := s.unsaved
	s.mu.Unlock()
	if unsaved == "" {
		return stored, nil
	}
	if err := s.store.saveRotated(ctx, unsaved); err != nil {
		return "", s.redisErr(err)
	}
	s.mu.Lock()
	if s.unsaved == unsaved {
		s.unsaved = ""
	}
	s.mu.Unlock()
	return unsaved, nil
}

// seed writes the config's refresh token to Redis once per process (see InitialRefreshToken).
func (s *SharedToken) seed(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seeded || s.o.InitialRefreshToken == "" || !s.o.UsesRefreshToken {
		return nil
	}
	if _, err := s.store.seed(ctx, s.o.InitialRefreshToken); err != nil {
		return err
	}
	s.seeded = true
	return nil
}

func (s *SharedToken) markBroken(ctx context.Context, rt string, cause error) error {
	reason := "token endpoint rejected the grant"
	var re *oauth2.RetrieveError
	if errors.As(cause, &re) && re.ErrorCode != "" {
		reason += ": " + re.ErrorCode
	} else if IsRevoked(cause) {
		reason += ": BAD_REFRESH_TOKEN"
	}
	b := BrokenInfo{Reason: reason, Since: time.Now().UTC().Truncate(time.Millisecond), credentials: fingerprint(s.o.Credentials, rt)}
	if err := s.store.markBroken(ctx, b); err != nil {
		s.log.Error("crm: could not record broken connection in redis", "error", err.Error())
	}
	s.broken.Set(BrokenToken, reason)
	s.log.Error("crm: connection broken, an admin must reconnect it", "reason", reason)
	return &Error{Class: Broken, Op: "crm: token", Code: "invalid_grant", Msg: reason, After: s.o.BrokenRetryAfter, Err: cause}
}

// brokenErr returns the Broken error when the connection is marked broken for the
// credentials in use now.
func (s *SharedToken) brokenErr(st tokenSnapshot) error {
	if st.broken == nil {
		return nil
	}
	rt := st.refresh
	if !s.o.UsesRefreshToken {
		rt = ""
	} else if s.o.InitialRefreshToken != "" && !s.isSeeded() {
		// A changed config refresh token has not been seeded yet; the next refresh will, and
		// that clears the mark.
		if st.seedHash != fingerprint(s.o.InitialRefreshToken) {
			return nil
		}
	}
	if st.broken.credentials != fingerprint(s.o.Credentials, rt) {
		return nil // credentials changed since: try them
	}
	s.broken.Set(BrokenToken, st.broken.Reason)
	return &Error{Class: Broken, Op: "crm: token", Code: "invalid_grant", Msg: st.broken.Reason, After: s.o.BrokenRetryAfter}
}

func (s *SharedToken) isSeeded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seeded
}

func (s *SharedToken) redisErr(err error) error {
	var ce *Error
	if errors.As(err, &ce) {
		return err
	}
	// A write the replicas did not confirm is Redis's trouble, not the call's: the task
	// retries without using an attempt.
	var de *durable.Error
	if errors.As(err, &de) {
		return &Error{Class: Throttled, Op: "crm: token store", Code: "NOT_REPLICATED", After: de.RetryAfter(), Err: err}
	}
	return &Error{Class: Transient, Op: "crm: token store", Err: err}
}

// Invalidate drops the shared access token when it is still the rejected one (a replica
// that already stored a newer token keeps it); rejected nil drops whatever is stored.
func (s *SharedToken) Invalidate(ctx context.Context, rejected *oauth2.Token) error {
	access := ""
	if rejected != nil {
		access = rejected.AccessToken
	}
	if err := s.store.dropAccess(ctx, access); err != nil {
		return s.redisErr(err)
	}
	return nil
}

// TokenSource adapts the shared token to oauth2.TokenSource for libraries that want one.
// Each Token call runs on the long-lived context, bounded by LockTTL + FetchTimeout.
func (s *SharedToken) TokenSource() oauth2.TokenSource { return sharedSource{s} }

type sharedSource struct{ s *SharedToken }

func (ss sharedSource) Token() (*oauth2.Token, error) {
	ctx, cancel := context.WithTimeout(ss.s.base, ss.s.o.LockTTL+ss.s.o.FetchTimeout)
	defer cancel()
	return ss.s.Token(ctx)
}

// storedToken is the compact form of an access token in Redis.
type storedToken struct {
	Access string            `json:"a"`
	Type   string            `json:"t,omitempty"`
	Expiry int64             `json:"e"` // unix milliseconds
	Extra  map[string]string `json:"x,omitempty"`
}

func newStoredToken(tok *oauth2.Token, keep []string) storedToken {
	st := storedToken{Access: tok.AccessToken, Type: tok.TokenType, Expiry: tok.Expiry.UnixMilli()}
	for _, k := range keep {
		if v, ok := tok.Extra(k).(string); ok && v != "" {
			if st.Extra == nil {
				st.Extra = map[string]string{}
			}
			st.Extra[k] = v
		}
	}
	return st
}

func (st storedToken) token() *oauth2.Token {
	tok := &oauth2.Token{AccessToken: st.Access, TokenType: st.Type, Expiry: time.UnixMilli(st.Expiry)}
	if len(st.Extra) > 0 {
		extra := make(map[string]any, len(st.Extra))
		for k, v := range st.Extra {
			extra[k] = v
		}
		tok = tok.WithExtra(extra)
	}
	return tok
}

// BrokenInfo describes why a connection is broken.
type BrokenInfo struct {
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
	// credentials fingerprints the credentials that were rejected.
	credentials string
}

type brokenJSON struct {
	Reason      string    `json:"reason"`
	Since       time.Time `json:"since"`
	Credentials string    `json:"cred"`
}

// TokenStore is a connection's OAuth state in Redis: the refresh token (the source of
// truth, written by `oauth connect`, seeded from config, replaced on rotation), the shared
// access token, the refresh lock and the broken mark.
type TokenStore struct {
	rdb  redis.UniversalClient
	conn string
	acks *durable.Acks // a rotated refresh token waits for replicas (TokenOptions.Acks)
}

// NewTokenStore returns the token store of a connection.
func NewTokenStore(rdb redis.UniversalClient, connection string) *TokenStore {
	return &TokenStore{rdb: rdb, conn: connection, acks: durable.Off(rdb)}
}

// withAcks makes saveRotated wait for replicas; nil waits for none.
func (s *TokenStore) withAcks(a *durable.Acks) *TokenStore {
	if a != nil {
		s.acks = a
	}
	return s
}

func (s *TokenStore) key(part string) string { return oauthKey(s.conn, part) }

// RefreshToken returns the stored refresh token, "" when none is stored.
func (s *TokenStore) RefreshToken(ctx context.Context) (string, error) {
	v, err := s.rdb.Get(ctx, s.key("refresh")).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("crm: read refresh token: %w", err)
	}
	return v, nil
}

// SaveRefreshToken stores a refresh token obtained by an admin (`oauth connect`): it
// replaces the stored one, drops the shared access token (it belongs to the old grant) and
// clears the broken mark.
func (s *TokenStore) SaveRefreshToken(ctx context.Context, refreshToken string) error {
	if refreshToken == "" {
		return errors.New("crm: empty refresh token")
	}
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, s.key("refresh"), refreshToken, 0)
		p.Del(ctx, s.key("access"), s.key("broken"))
		return nil
	})
	if err != nil {
		return fmt.Errorf("crm: save refresh token: %w", err)
	}
	return nil
}

// Broken returns why the connection is marked broken, nil when it is not.
func (s *TokenStore) Broken(ctx context.Context) (*BrokenInfo, error) {
	v, err := s.rdb.Get(ctx, s.key("broken")).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("crm: read broken mark: %w", err)
	}
	return decodeBroken(v), nil
}

func decodeBroken(v []byte) *BrokenInfo {
	var bj brokenJSON
	if json.Unmarshal(v, &bj) != nil {
		return &BrokenInfo{Reason: "unreadable broken mark"}
	}
	return &BrokenInfo{Reason: bj.Reason, Since: bj.Since, credentials: bj.Credentials}
}

func (s *TokenStore) markBroken(ctx context.Context, b BrokenInfo) error {
	v, _ := json.Marshal(brokenJSON{Reason: b.Reason, Since: b.Since, Credentials: b.credentials})
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, s.key("broken"), v, 0)
		p.Del(ctx, s.key("access"))
		return nil
	})
	return err
}

// tokenSnapshot is everything Token needs, read in one round trip.
type tokenSnapshot struct {
	access   *storedToken
	refresh  string
	seedHash string
	broken   *BrokenInfo
}

func (st tokenSnapshot) valid(margin time.Duration) *oauth2.Token {
	if st.access == nil || st.access.Access == "" {
		return nil
	}
	if time.Now().Add(margin).UnixMilli() >= st.access.Expiry {
		return nil
	}
	return st.access.token()
}

func (s *TokenStore) snapshot(ctx context.Context) (tokenSnapshot, error) {
	vals, err := s.rdb.MGet(ctx, s.key("access"), s.key("refresh"), s.key("seed"), s.key("broken")).Result()
	if err != nil {
		return tokenSnapshot{}, err
	}
	var st tokenSnapshot
	if v, ok := vals[0].(string); ok {
		var t storedToken
		if json.Unmarshal([]byte(v), &t) == nil {
			st.access = &t
		}
	}
	st.refresh, _ = vals[1].(string)
	st.seedHash, _ = vals[2].(string)
	if v, ok := vals[3].(string); ok {
		st.broken = decodeBroken([]byte(v))
	}
	return st, nil
}

func (s *TokenStore) saveAccess(ctx context.Context, t storedToken) error {
	ttl := time.Until(time.UnixMilli(t.Expiry))
	if ttl <= 0 {
		return nil
	}
	v, _ := json.Marshal(t)
	return s.rdb.Set(ctx, s.key("access"), v, ttl).Err()
}

// saveRotated stores a refresh token the endpoint rotated and waits for the replicas
// (Acks); a *durable.Error says they did not confirm it.
func (s *TokenStore) saveRotated(ctx context.Context, refreshToken string) error {
	key := s.key("refresh")
	return s.acks.Write(ctx, "crm: store the rotated refresh token", key, func(ctx context.Context, c redis.Cmdable) error {
		return c.Set(ctx, key, refreshToken, 0).Err()
	})
}

// seedScript writes the config refresh token unless the config still holds the token it was
// seeded from last time and Redis has one (possibly rotated since).
var seedScript = redis.NewScript(`
if redis.call('GET', KEYS[2]) == ARGV[2] and redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[3], KEYS[4])
return 1`)

func (s *TokenStore) seed(ctx context.Context, refreshToken string) (bool, error) {
	n, err := seedScript.Run(ctx, s.rdb,
		[]string{s.key("refresh"), s.key("seed"), s.key("access"), s.key("broken")},
		refreshToken, fingerprint(refreshToken)).Int()
	return n == 1, err
}

func (s *TokenStore) lock(ctx context.Context, ttl time.Duration) (owner string, ok bool, err error) {
	var b [12]byte
	_, _ = rand.Read(b[:])
	owner = hex.EncodeToString(b[:])
	ok, err = s.rdb.SetNX(ctx, s.key("lock"), owner, ttl).Result()
	return owner, ok, err
}

var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

func (s *TokenStore) unlock(ctx context.Context, owner string) error {
	return unlockScript.Run(ctx, s.rdb, []string{s.key("lock")}, owner).Err()
}

// dropScript deletes the access token when it is the rejected one (ARGV[1], "" = any).
var dropScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
if ARGV[1] == '' then return redis.call('DEL', KEYS[1]) end
local ok, t = pcall(cjson.decode, v)
if ok and type(t) == 'table' and t['a'] == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

func (s *TokenStore) dropAccess(ctx context.Context, access string) error {
	return dropScript.Run(ctx, s.rdb, []string{s.key("access")}, access).Err()
}
