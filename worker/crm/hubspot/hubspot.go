// Package hubspot is the HubSpot connector: it writes each rendered record as one call
// engagement (/crm/v3/objects/calls), owned by the rep found by e-mail and associated with
// the contact found by phone number.
//
// Exactly one call per MiiTel detail: with a unique call property configured
// (config hubspot.unique_property, created with hasUniqueValue: true) HubSpot enforces it:
// first events are created with it set (a taken value is refused, and that call upserted
// by it), later ones upserted by it (unique.go); otherwise the crm.IDMap protocol (pending marker before create, search by
// hs_call_external_id after a crash) keeps the MiiTel-id -> HubSpot-id map. Requests go
// through the shared crm stack: per-connection rate limit (10-second budget, search 5/s),
// the shared OAuth2 token (or a private-app token), and error classification.
//
// Writes, associations and contact searches go in batches (batch.go): the calls concurrent
// deliveries submit share one batch request of up to batch.max_size (100), and each delivery
// is answered for its own input, so every call keeps its own outcome and its own task.
package hubspot

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
)

// Defaults from HubSpot's documentation, for a zero the connector is handed directly
// (config.Load fills them in first). config owns them: one source of truth.
const (
	DefaultBaseURL            = config.HubSpotBaseURL
	DefaultTokenURL           = config.HubSpotTokenURL // v1 sunsets 2027-02-16: /oauth/2026-03/token
	DefaultAuthURL            = config.HubSpotAuthURL
	DefaultPrivateAppRequests = config.HubSpotPrivateAppRequests
	DefaultOAuthRequests      = config.HubSpotOAuthRequests
	DefaultSearchPerSecond    = config.HubSpotSearchPerSecond
)

// DefaultScopes are what the connector needs: calls are written with the contacts scopes,
// owners are read with crm.objects.owners.read.
var DefaultScopes = config.HubSpotScopes()

// Options build a Connector: the connector options every CRM takes, and HubSpot's own.
type Options struct {
	crm.Options
	// SearchLag is how long the id map waits after an unfinished create before searching
	// for it (default 30s; HubSpot's index lags writes by seconds).
	SearchLag time.Duration
}

// Connector writes records into one HubSpot account. It is safe for concurrent use.
type Connector struct {
	name    string
	api     *crm.API
	lookups *crm.LookupCache
	ids     *crm.IDMap
	unique  string
	log     *slog.Logger
	limiter *crm.RateLimiter
	m       *crm.Metrics
	owners  singleflight.Group

	// key: whether the unique property is confirmed unique (unique.go); keyReads shares one
	// read of it among concurrent deliveries.
	key      uniqueKey
	keyReads singleflight.Group

	// batch shapes the batches (batch.go); the batchers run on the connector's context.
	batch                     config.Batch
	upserts, creates, updates *crm.Batcher[*writeItem, writeOut]
	assocs                    *crm.Batcher[assocItem, struct{}]
	searches                  *crm.Batcher[*contactItem, contactOut]
	finds                     *crm.Batcher[string, string]

	// For the check (check.go) and the record links (recordurl.go).
	tokens    crm.TokenProvider
	oauth     bool   // an OAuth app (refresh token), not a private-app token
	privToken string // the private-app token, for its token info
	broken    *crm.BrokenState
	recordURL string
	account   account
}

// OAuthConfig is the x/oauth2 config of a HubSpot OAuth app: form-encoded client
// credentials (AuthStyleInParams), configurable token URL. `oauth connect` uses it for the
// authorization-code flow.
func OAuthConfig(h *config.HubSpot) *oauth2.Config {
	tokenURL, authURL := h.TokenURL, h.AuthURL
	if tokenURL == "" {
		tokenURL = DefaultTokenURL
	}
	if authURL == "" {
		authURL = DefaultAuthURL
	}
	scopes := h.Scopes
	if len(scopes) == 0 {
		scopes = DefaultScopes
	}
	return &oauth2.Config{
		ClientID: h.ClientID, ClientSecret: h.ClientSecret.Value(), RedirectURL: h.RedirectURL, Scopes: scopes,
		Endpoint: oauth2.Endpoint{AuthURL: authURL, TokenURL: tokenURL, AuthStyle: oauth2.AuthStyleInParams},
	}
}

// New builds the connector of one HubSpot connection.
func New(o Options) (*Connector, error) {
	h := o.Connection.HubSpot
	if h == nil {
		return nil, errors.New("hubspot: connection has no hubspot section")
	}
	if o.Redis == nil {
		return nil, errors.New("hubspot: redis is required (shared token, limits, caches, id map)")
	}
	name := o.Connection.Name
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("connection", name, "crm", "hubspot")
	if o.Context == nil {
		o.Context = context.Background()
	}
	m, err := crm.NewMetrics(o.Registerer)
	if err != nil {
		return nil, fmt.Errorf("hubspot: metrics: %w", err)
	}
	base := o.HTTPClient
	if base == nil {
		base = &http.Client{Timeout: 30 * time.Second}
	}

	broken := crm.NewBrokenState(name, m)
	var tokens crm.TokenProvider
	reauth := func(*http.Response, []byte) crm.Reauth { return crm.KeepToken }
	requests := DefaultPrivateAppRequests
	switch {
	case h.PrivateAppToken.Value() != "":
		tokens = crm.StaticToken(h.PrivateAppToken.Value())
	case h.ClientID != "":
		requests = DefaultOAuthRequests
		cfg := OAuthConfig(h)
		// The token endpoint is called through the base client, so tests and proxies apply.
		fetch := crm.RefreshTokenGrant(cfg)
		tokenFetch := func(ctx context.Context, rt string) (*oauth2.Token, error) {
			return fetch(context.WithValue(ctx, oauth2.HTTPClient, base), rt)
		}
		st, err := crm.NewSharedToken(o.Context, crm.TokenOptions{
			Connection: name, Redis: o.Redis, Fetch: tokenFetch, UsesRefreshToken: true,
			InitialRefreshToken: h.RefreshToken.Value(),
			Credentials:         h.ClientID + "\x00" + h.ClientSecret.Value() + "\x00" + cfg.Endpoint.TokenURL,
			Logger:              log, Metrics: m, Broken: broken, Acks: o.Acks,
		})
		if err != nil {
			return nil, fmt.Errorf("hubspot: %w", err)
		}
		tokens = st
		// HubSpot tokens are refreshed from their expiry; a 401 all the same means the
		// token expired early (clock skew) or is no longer valid (the app was uninstalled,
		// its tokens revoked). Either way the shared copy is dropped and the request sent
		// once more with a fresh token: a revoked grant then surfaces at once as Broken and
		// the task parks, instead of every attempt failing on a dead token that stays
		// "valid" in Redis for up to 30 minutes and burning the task's retries.
		reauth = func(*http.Response, []byte) crm.Reauth { return crm.DropTokenAndRetry }
	default:
		return nil, errors.New("hubspot: set private_app_token, or client_id + client_secret + a refresh token")
	}

	rl := o.Connection.RateLimit
	if rl.Requests > 0 {
		requests = rl.Requests
	}
	per := rl.Per
	if per <= 0 {
		per = 10 * time.Second
	}
	search := rl.SearchPerSecond
	if search <= 0 {
		search = DefaultSearchPerSecond
	}
	limiter := crm.NewRateLimiter(o.Redis, name, o.RateLimitMaxWait, m,
		crm.Budget{Name: "requests", Requests: requests, Per: per},
		crm.Budget{Name: "search", Requests: search, Per: time.Second})

	client := &http.Client{
		Timeout: base.Timeout,
		Transport: &crm.RateLimitTransport{
			Limiter: limiter,
			Budgets: func(r *http.Request) []string {
				if strings.HasSuffix(r.URL.Path, "/search") {
					return []string{"search", "requests"}
				}
				return []string{"requests"}
			},
			Next: &crm.AuthTransport{Tokens: tokens, OnUnauthorized: reauth, Next: base.Transport},
		},
	}
	baseURL := strings.TrimRight(h.BaseURL, "/")
	if baseURL == "" {
		baseURL = DefaultBaseURL
	}
	_, static := tokens.(crm.StaticToken)
	c := &Connector{
		name: name,
		api: &crm.API{Client: client, BaseURL: baseURL, Connection: name, Metrics: m,
			ParseError: parseError, Adjust: func(e *crm.Error, resp *http.Response, body []byte) { adjust(e, body, static) }},
		lookups: crm.NewLookupCache(o.Redis, name, o.Connection.LookupTTL, o.Connection.MissTTL, m),
		ids:     crm.NewIDMap(o.Redis, name, o.IDMapTTL, o.SearchLag).WithAcks(o.Acks),
		unique:  h.UniqueProperty,
		log:     log,
		limiter: limiter,
		m:       m,
		batch:   o.Connection.Batch,

		tokens:    tokens,
		oauth:     !static,
		broken:    broken,
		recordURL: cmp.Or(o.Connection.RecordURL, DefaultRecordURL),
	}
	if static {
		c.privToken = h.PrivateAppToken.Value()
	}
	c.newBatchers(o.Context)
	return c, nil
}

// errorBody is HubSpot's v3 error body and its 429 body.
type errorBody struct {
	Status     string `json:"status"`
	Message    string `json:"message"`
	Category   string `json:"category"`
	ErrorType  string `json:"errorType"`
	PolicyName string `json:"policyName"`
}

func parseError(body []byte) (code, msg string) {
	var e errorBody
	if json.Unmarshal(body, &e) != nil {
		return "", crm.Snippet(string(body), 500)
	}
	code = e.Category
	if code == "" {
		code = e.ErrorType
	}
	if e.PolicyName != "" {
		code += "/" + e.PolicyName
	}
	return code, crm.Snippet(e.Message, 2000)
}

// adjust applies what only HubSpot's bodies say.
func adjust(e *crm.Error, body []byte, static bool) {
	switch {
	case e.Status == http.StatusForbidden && strings.HasPrefix(e.Code, "MISSING_SCOPES"):
		// The app lacks a scope: an admin must fix the app; tasks wait.
		e.Class, e.After = crm.Broken, 10*time.Minute
	case e.Status == http.StatusUnauthorized && static:
		// A private-app token that is rejected was rotated or deleted.
		e.Class, e.After = crm.Broken, 10*time.Minute
	case e.Status == http.StatusTooManyRequests && strings.HasSuffix(e.Code, "/DAILY"):
		// The daily allowance resets at midnight in the account's time zone.
		e.After = max(e.After, 30*time.Minute)
	}
}

// Deliver writes the record as one HubSpot call (see the package comment).
func (c *Connector) Deliver(ctx context.Context, rec *mappers.Record) (crm.Result, error) {
	if rec.Object != "" && rec.Object != "calls" {
		return crm.Result{}, &crm.Error{Class: crm.Permanent, Op: "hubspot: deliver", Code: "MAPPING",
			Msg: fmt.Sprintf("object %q: the HubSpot connector writes calls", rec.Object)}
	}
	if rec.ExternalID.Value == "" {
		return crm.Result{}, &crm.Error{Class: crm.Permanent, Op: "hubspot: deliver", Code: "MAPPING", Msg: "record has no external id"}
	}
	var res crm.Result
	ownerField := ""
	if rec.Owner != nil && rec.Owner.Email != "" {
		id, err := c.owner(ctx, rec.Owner.Email)
		if err != nil {
			return res, err
		}
		res.OwnerID, ownerField = id, rec.Owner.Field
		if id == "" {
			c.log.Debug("hubspot: no owner for the rep's e-mail; call left without owner", "external_id", rec.ExternalID.Value)
		}
	}
	if rec.Contact != nil {
		id, err := c.contact(ctx, rec.Contact)
		if err != nil {
			return res, err
		}
		res.ContactID = id
	}
	if res.ContactID == "" {
		c.log.Warn("hubspot: call has no contact association and stays invisible on contact timelines", "external_id", rec.ExternalID.Value)
	}
	props, err := RecordProperties(rec, ownerField, res.OwnerID)
	if err != nil {
		return res, err
	}
	if c.unique != "" {
		res.ID, res.Created, err = c.upsertUnique(ctx, rec.ExternalID.Value, props, res.ContactID)
		err = c.recordKeyOutcome(ctx, err)
	} else {
		res.ID, res.Created, err = c.upsertMapped(ctx, rec, props, res.ContactID)
	}
	if err != nil {
		return res, c.forgetStaleContact(ctx, rec, err)
	}
	res.URL = c.recordLink(ctx, res.ID)
	return res, nil
}

// forgetStaleContact handles a cached contact that was deleted or merged in HubSpot: the
// association fails, the cache entry goes, and the task retries with a fresh lookup instead
// of dead-lettering.
func (c *Connector) forgetStaleContact(ctx context.Context, rec *mappers.Record, err error) error {
	var ce *crm.Error
	if rec.Contact == nil || !errors.As(err, &ce) {
		return err
	}
	assoc := strings.Contains(strings.ToLower(ce.Msg), "association") || strings.Contains(ce.Op, "associate")
	if !assoc || (ce.Status != http.StatusBadRequest && ce.Status != http.StatusNotFound) {
		return err
	}
	_ = c.lookups.Forget(ctx, crm.LookupContact, contactCacheKey(rec.Contact))
	retry := *ce
	retry.Class, retry.Msg = crm.Transient, ce.Msg+" (cached contact dropped; retrying with a fresh lookup)"
	return &retry
}

// owner resolves the rep's owner id, cached as before. Concurrent deliveries of one rep's
// calls share one lookup (a burst would otherwise send one owner request per call before the
// first answer is cached).
func (c *Connector) owner(ctx context.Context, email string) (string, error) {
	v, err, _ := c.owners.Do(strings.ToLower(email), func() (any, error) { return c.resolveOwner(ctx, email) })
	id, _ := v.(string)
	return id, err
}

func (c *Connector) resolveOwner(ctx context.Context, email string) (string, error) {
	return c.lookups.Resolve(ctx, crm.LookupOwner, strings.ToLower(email), func(ctx context.Context) (string, error) {
		return c.findOwner(ctx, email)
	})
}

func contactCacheKey(l *mappers.ContactLookup) string {
	n := l.E164
	if n == "" {
		n = l.National
	}
	return n + "|" + l.OnMultiple + "|" + l.OnNone
}

func (c *Connector) contact(ctx context.Context, l *mappers.ContactLookup) (string, error) {
	if len(PhoneForms(l)) == 0 {
		return "", nil
	}
	return c.lookups.Resolve(ctx, crm.LookupContact, contactCacheKey(l), func(ctx context.Context) (string, error) {
		out, err := c.searches.Do(ctx, &contactItem{forms: PhoneForms(l)})
		if err != nil {
			return "", err
		}
		switch {
		case len(out.ids) > 1 && l.OnMultiple == "skip":
			c.log.Warn("hubspot: several contacts match the caller's number; policy skip leaves the call unassociated", "matches", len(out.ids))
			return "", nil
		case len(out.ids) > 0:
			if len(out.ids) > 1 {
				c.log.Info("hubspot: several contacts match the caller's number; using the most recently modified", "matches", len(out.ids))
			}
			return out.ids[0], nil
		case l.OnNone == "create_contact" || l.OnNone == "create_lead":
			var created struct {
				ID string `json:"id"`
			}
			if _, err := c.api.Do(ctx, CreateContactRequest(l), &created); err != nil {
				return "", err
			}
			c.log.Info("hubspot: created a contact for an unknown caller", "contact_id", created.ID)
			return created.ID, nil
		}
		return "", nil
	})
}

// upsertMapped writes through the id map protocol (crm.IDMap).
func (c *Connector) upsertMapped(ctx context.Context, rec *mappers.Record, props Properties, contact string) (string, bool, error) {
	return c.ids.Upsert(ctx, "calls", rec.ExternalID.Value, contact, crm.IDMapOps{
		Update: func(ctx context.Context, e crm.IDEntry) error {
			if _, err := c.updates.Do(ctx, &writeItem{key: e.ID, props: props.Always}); err != nil {
				if errors.Is(err, crm.ErrNotFound) {
					return fmt.Errorf("hubspot: call %s: %w", e.ID, crm.ErrNotFound)
				}
				return err
			}
			if contact != "" && e.Contact != contact {
				if _, err := c.assocs.Do(ctx, assocItem{call: e.ID, contact: contact}); err != nil {
					return err
				}
			}
			return nil
		},
		Find: func(ctx context.Context) (string, error) {
			id, err := c.finds.Do(ctx, rec.ExternalID.Value)
			if err == nil && id != "" {
				c.log.Info("hubspot: adopted a call created by an interrupted attempt", "external_id", rec.ExternalID.Value, "call_id", id)
			}
			return id, err
		},
		Create: func(ctx context.Context) (string, error) {
			out, err := c.creates.Do(ctx, &writeItem{key: rec.ExternalID.Value, props: props.All(), contact: contact})
			return out.id, err
		},
	})
}
