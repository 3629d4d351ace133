// Package salesforce is the Salesforce connector: it writes each rendered call record as one
// Task (a logged call) through the REST API, upserted by an External ID field that holds the
// MiiTel detail id, with WhoId set to the caller's Contact or Lead (SOSL phone search) and
// OwnerId to the rep's User (SOQL by e-mail).
//
// Authentication is OAuth2 through golang.org/x/oauth2 with one of three server flows
// (client credentials, JWT bearer, refresh token), shared by every replica through
// crm.SharedToken. Salesforce tokens carry no expiry and name the API host (instance_url):
// a 401 INVALID_SESSION_ID drops the shared token and the request is sent once more with a
// new one.
//
// Writes go in batches: the records that concurrent deliveries submit for one object and
// External ID field are grouped by a crm.Batcher into one sObject Collections upsert (up to
// 200 records, batch.max_size), answered per record. Each delivery keeps its own outcome: a
// record Salesforce refuses fails alone, with its own error class; a failure of the whole
// request is every record's. API versions before 46.0 have no collection upsert and send
// one upsert per record.
//
// Create or update without asking: TaskSubtype=Call can be set when a Task is created and
// never changed afterwards, and an upsert does not say beforehand which it will do. Nothing
// is read before the write: the id map in Redis (written after every successful upsert)
// knows every Task this connection wrote, and fields marked CreateOnly are sent only when it
// does not. Should the Task exist after all (a map lost with Redis, a batch answer lost on
// the way), Salesforce refuses the create-only field for that record alone, and that record
// is sent again without it.
//
// The record key: when Salesforce says the External ID field does not exist (confirmed by
// the Task describe), the connection is marked broken for that reason (calls wait, no
// attempt burns, mcs_crm_connection_broken is 1, an error log names the fix) instead of
// dead-lettering every call; the first upsert that goes through once the field exists
// clears it. Check verifies the same before the first call.
package salesforce

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
)

// DefaultAPIVersion is the REST API version used when the config names none. 46.0 or later
// is needed for the upsert's "created" flag on updates.
const DefaultAPIVersion = config.SalesforceAPIVersion

// DefaultRequestLimitWait is how long tasks wait after 403 REQUEST_LIMIT_EXCEEDED.
const DefaultRequestLimitWait = config.SalesforceRequestLimitWait

// RecordKeyWait is how long calls wait while the org lacks the record key field: each
// attempt after it is the probe that finds the field created.
const RecordKeyWait = 5 * time.Minute

// DefaultLinger is how long the first record of a batch waits for others when the config
// sets no batch.linger.
const DefaultLinger = time.Second

// collectionsSince is the first API version with the sObject Collections upsert.
const collectionsSince = 46

// DefaultDailyRequests is the request budget per 24 hours when the config sets none: the
// allowance of the smallest Enterprise Edition org (100,000 a day). Orgs with more licences
// have more; set rate_limit to your org's figure (Setup > Company Information).
const DefaultDailyRequests = config.SalesforceDailyRequests

// Contact and owner policies (mappers.ContactLookup).
const (
	OnMultipleMostRecent = "most_recent"
	OnMultipleSkip       = "skip"
	OnNoneUnassociated   = "unassociated"
	OnNoneCreateContact  = "create_contact"
	OnNoneCreateLead     = "create_lead"
)

// NewLeadCompany is the Company of a Lead created for an unknown caller (Company is
// required on Lead); the rep renames it once the caller is known.
const NewLeadCompany = "Unknown (MiiTel caller)"

// Options build a Connector: the connector options every CRM takes.
type Options = crm.Options

// Connector is a crm.Connector for one Salesforce connection.
type Connector struct {
	name      string
	sf        config.Salesforce
	version   string
	limitWait time.Duration

	tokens  *crm.SharedToken
	client  *http.Client
	limiter *crm.RateLimiter
	lookups *crm.LookupCache
	ids     *crm.IDMap
	broken  *crm.BrokenState
	log     *slog.Logger
	m       *crm.Metrics
	// recordURL is the link template of a written record (connections[].record_url).
	recordURL string

	// collections: the API version has the collection upsert; batches by object and
	// External ID field run on base (the worker's long-lived context).
	collections bool
	batch       config.Batch
	base        context.Context
	mu          sync.Mutex
	batchers    map[string]*crm.Batcher[*upsertItem, upsertOut]
}

var _ crm.Connector = (*Connector)(nil)

// New builds the connector of a connection of type salesforce.
func New(o Options) (*Connector, error) {
	conn := o.Connection
	if conn.Salesforce == nil {
		return nil, fmt.Errorf("salesforce: connection %q has no salesforce section", conn.Name)
	}
	if o.Redis == nil {
		return nil, errors.New("salesforce: redis is required (shared token, limits, caches, id map)")
	}
	ctx := o.Context
	if ctx == nil {
		ctx = context.Background()
	}
	sf := *conn.Salesforce
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("connection", conn.Name, "crm", "salesforce")
	m, err := crm.NewMetrics(o.Registerer)
	if err != nil {
		return nil, fmt.Errorf("salesforce: metrics: %w", err)
	}
	sfm, err := NewMetrics(o.Registerer)
	if err != nil {
		return nil, fmt.Errorf("salesforce: metrics: %w", err)
	}
	hc := o.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 60 * time.Second}
	}
	base := hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	timeout := hc.Timeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	fetch, usesRefresh, err := Fetcher(&sf, hc)
	if err != nil {
		return nil, err
	}
	broken := crm.NewBrokenState(conn.Name, m)
	tokens, err := crm.NewSharedToken(ctx, crm.TokenOptions{
		Connection:          conn.Name,
		Redis:               o.Redis,
		Fetch:               fetch,
		UsesRefreshToken:    usesRefresh,
		InitialRefreshToken: sf.RefreshToken.Value(),
		Credentials:         credentials(&sf),
		KeepExtra:           []string{"instance_url"},
		Broken:              broken,
		Acks:                o.Acks,
		Logger:              log,
		Metrics:             m,
	})
	if err != nil {
		return nil, fmt.Errorf("salesforce: %w", err)
	}
	budgets := []crm.Budget{{Name: "requests", Requests: conn.RateLimit.Requests, Per: conn.RateLimit.Per}}
	if conn.RateLimit.Requests == 0 || conn.RateLimit.Per == 0 {
		budgets[0] = crm.Budget{Name: "requests", Requests: DefaultDailyRequests, Per: 24 * time.Hour}
	}
	if conn.RateLimit.SearchPerSecond > 0 {
		budgets = append(budgets, crm.Budget{Name: "search", Requests: conn.RateLimit.SearchPerSecond, Per: time.Second})
	}
	limiter := crm.NewRateLimiter(o.Redis, conn.Name, o.RateLimitMaxWait, m, budgets...)
	stack := &crm.RateLimitTransport{
		Limiter: limiter,
		Budgets: func(r *http.Request) []string {
			if strings.HasSuffix(strings.TrimSuffix(r.URL.Path, "/"), "/search") {
				return []string{"requests", "search"}
			}
			return []string{"requests"}
		},
		Next: &crm.AuthTransport{
			Tokens:         tokens,
			OnUnauthorized: onUnauthorized,
			Next: &limitTransport{
				usage: sfm.APIUsage.WithLabelValues(conn.Name),
				limit: sfm.APILimit.WithLabelValues(conn.Name),
				next:  base,
			},
		},
	}
	version := sf.APIVersion
	switch {
	case version == "":
		version = DefaultAPIVersion
	case !strings.HasPrefix(version, "v"):
		version = "v" + version
	}
	limitWait := sf.RequestLimitWait
	if limitWait <= 0 {
		limitWait = DefaultRequestLimitWait
	}
	batch := conn.Batch
	if batch.MaxSize <= 0 || batch.MaxSize > config.SalesforceMaxBatch {
		batch.MaxSize = config.SalesforceMaxBatch
	}
	if batch.Linger <= 0 {
		batch.Linger = DefaultLinger
	}
	return &Connector{
		name:        conn.Name,
		sf:          sf,
		version:     version,
		limitWait:   limitWait,
		tokens:      tokens,
		client:      &http.Client{Transport: stack, Timeout: timeout},
		limiter:     limiter,
		lookups:     crm.NewLookupCache(o.Redis, conn.Name, conn.LookupTTL, conn.MissTTL, m),
		ids:         crm.NewIDMap(o.Redis, conn.Name, o.IDMapTTL, 0),
		broken:      broken,
		log:         log,
		m:           m,
		recordURL:   cmp.Or(conn.RecordURL, DefaultRecordURL),
		collections: HasCollections(version),
		batch:       batch,
		base:        ctx,
		batchers:    map[string]*crm.Batcher[*upsertItem, upsertOut]{},
	}, nil
}

// HasCollections reports whether an API version ("v62.0", "45.0") has the sObject
// Collections upsert (46.0 and later); an unreadable version counts as current.
func HasCollections(version string) bool {
	major, _, _ := strings.Cut(strings.TrimPrefix(version, "v"), ".")
	n, err := strconv.Atoi(major)
	return err != nil || n >= collectionsSince
}

// api returns the REST client for the org the current token belongs to: instance_url from
// the token response is the API host (login URLs do not serve the REST API reliably).
func (c *Connector) api(ctx context.Context) (*crm.API, error) {
	tok, err := c.tokens.Token(ctx)
	if err != nil {
		return nil, err
	}
	instance, _ := tok.Extra("instance_url").(string)
	if instance == "" {
		instance = c.sf.LoginURL // a My Domain URL serves the API too
	}
	return &crm.API{
		Client:     c.client,
		BaseURL:    strings.TrimRight(instance, "/") + "/services/data/" + c.version,
		Connection: c.name,
		ParseError: parseError,
		Adjust:     adjust(c.limitWait),
		Metrics:    c.m,
	}, nil
}

// Deliver upserts rec as one Task (see the package comment for create vs update).
func (c *Connector) Deliver(ctx context.Context, rec *mappers.Record) (crm.Result, error) {
	res, err := c.deliver(ctx, rec)
	if err != nil {
		return crm.Result{}, c.explainUnauthorized(ctx, err)
	}
	return res, nil
}

// explainUnauthorized: when fetching the new token for the resend after a 401 fails,
// crm.AuthTransport reports the 401 itself. The token's own error is the one the retry
// policy needs (Broken when the refresh token was revoked, so tasks park instead of
// burning retries); the shared token answers it from Redis without another fetch.
func (c *Connector) explainUnauthorized(ctx context.Context, err error) error {
	var ce *crm.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusUnauthorized {
		return err
	}
	if _, terr := c.tokens.Token(ctx); terr != nil {
		return terr
	}
	return err
}

func (c *Connector) deliver(ctx context.Context, rec *mappers.Record) (crm.Result, error) {
	object := rec.Object
	if object == "" {
		object = "Task"
	}
	extField := rec.ExternalID.Field
	if extField == "" {
		extField = c.sf.ExternalIDField
	}
	value := rec.ExternalID.Value
	if extField == "" || value == "" {
		return crm.Result{}, &crm.Error{Class: crm.Permanent, Op: "salesforce: upsert " + object, Msg: "the record has no external id field or value"}
	}
	fields, createOnly, err := Fields(rec.Fields, extField)
	if err != nil {
		return crm.Result{}, &crm.Error{Class: crm.Permanent, Op: "salesforce: upsert " + object, Msg: err.Error()}
	}
	api, err := c.api(ctx)
	if err != nil {
		return crm.Result{}, err
	}
	var res crm.Result
	if rec.Owner != nil && rec.Owner.Email != "" {
		if res.OwnerID, err = c.owner(ctx, api, rec.Owner.Email); err != nil {
			return crm.Result{}, err
		}
		if res.OwnerID != "" {
			fields[OwnerField(rec.Owner)] = res.OwnerID
		}
	}
	if rec.Contact != nil {
		if res.ContactID, err = c.contact(ctx, api, rec.Contact, res.OwnerID); err != nil {
			return crm.Result{}, err
		}
		if res.ContactID != "" {
			fields[ContactField(rec.Contact)] = res.ContactID
		}
	}

	// The id map knows every Task this connection wrote: create-only fields go only to a
	// Task it does not know (see the package comment). No request asks Salesforce first.
	mapObject := object + ":" + extField
	known := ""
	if e, ok, err := c.ids.Get(ctx, mapObject, value); err != nil {
		c.log.Warn("salesforce: id map unavailable; sending create-only fields, salesforce refuses them if the task exists", "error", err.Error())
	} else if ok {
		known = e.ID
	}
	item := &upsertItem{value: value, fields: fields}
	if known == "" {
		item.createOnly = createOnly
	}
	out, err := c.upsert(ctx, object, extField, item)
	if err != nil {
		return crm.Result{}, c.staleLookup(ctx, err, rec)
	}
	if out.created && known != "" {
		c.log.Warn("salesforce: task was deleted in salesforce and created again without its create-only fields", "external_id", value, "task_id", out.id)
	}
	if out.id == "" {
		out.id = known // an update answered 204 (before API 46.0)
	}
	if err := c.ids.Put(ctx, mapObject, value, crm.IDEntry{ID: out.id, Contact: res.ContactID}); err != nil {
		// The Task is written; without the entry the next event sends the create-only
		// fields again and Salesforce refuses them once.
		c.log.Warn("salesforce: could not record task id", "external_id", value, "error", err.Error())
	}
	res.ID, res.Created = out.id, out.created
	res.URL = RecordLink(c.recordURL, strings.TrimSuffix(api.BaseURL, "/services/data/"+c.version), object, res.ID)
	return res, nil
}

// DefaultRecordURL is the Lightning page of a record; {instance_url} is the org's host from
// the token response.
const DefaultRecordURL = "{instance_url}/lightning/r/{object}/{id}/view"

// RecordLink fills a record_url template: {instance_url}, {object} and {id}. An empty id
// gives no link.
func RecordLink(template, instance, object, id string) string {
	if id == "" {
		return ""
	}
	return strings.NewReplacer("{instance_url}", strings.TrimRight(instance, "/"), "{object}", url.PathEscape(object), "{id}", url.PathEscape(id)).Replace(template)
}

// refusesCreateOnly reports whether err is Salesforce refusing to update one of the
// create-only fields.
func refusesCreateOnly(err error, createOnly map[string]any) bool {
	var ce *crm.Error
	if !errors.As(err, &ce) || ce.Code != "INVALID_FIELD_FOR_INSERT_UPDATE" {
		return false
	}
	for name := range createOnly {
		if strings.Contains(ce.Msg, name) {
			return true
		}
	}
	return false
}

// staleLookup handles an upsert refused because a cached contact or owner id no longer
// works (deleted, merged, deactivated): the cached answers are dropped and the failure
// becomes Transient, so the retry looks them up again instead of dead-lettering the call.
func (c *Connector) staleLookup(ctx context.Context, err error, rec *mappers.Record) error {
	var ce *crm.Error
	if !errors.As(err, &ce) || ce.Class != crm.Permanent {
		return err
	}
	switch ce.Code {
	case "INVALID_CROSS_REFERENCE_KEY", "ENTITY_IS_DELETED", "INACTIVE_OWNER_OR_USER", "MALFORMED_ID":
	default:
		return err
	}
	forgot := false
	if rec.Contact != nil && strings.Contains(ce.Msg, ContactField(rec.Contact)) {
		_ = c.lookups.Forget(ctx, crm.LookupContact, contactKey(rec.Contact))
		forgot = true
	}
	if rec.Owner != nil && strings.Contains(ce.Msg, OwnerField(rec.Owner)) {
		_ = c.lookups.Forget(ctx, crm.LookupOwner, strings.ToLower(rec.Owner.Email))
		forgot = true
	}
	if !forgot {
		return err
	}
	c.log.Warn("salesforce: cached contact or owner refused; looking it up again on retry", "code", ce.Code)
	re := *ce
	re.Class = crm.Transient
	re.Msg = "cached lookup refused, retrying with a fresh lookup: " + ce.Msg
	return &re
}
