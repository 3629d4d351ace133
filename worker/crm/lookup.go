package crm

import (
	"context"
	"errors"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/redis/go-redis/v9"
)

// Lookup kinds used by the connectors; the kind is part of the cache key.
const (
	LookupContact = "contact"
	LookupOwner   = "owner"
)

// missValue marks a cached "not found"; CRM ids are never empty.
const missValue = "\x00"

// LookupCache remembers contact-by-phone and owner-by-email answers in Redis, shared by all
// replicas, so a busy line does not spend the CRM's search allowance (HubSpot search: 5/s).
// Found ids live for TTL, "not found" answers for MissTTL (short, so a contact created in the
// CRM is picked up soon). Key names hold a hash of the phone number or e-mail, never the
// value itself. Values are the connector's own strings (usually the CRM id).
type LookupCache struct {
	rdb     redis.UniversalClient
	conn    string
	ttl     time.Duration
	missTTL time.Duration
	m       *Metrics
}

// NewLookupCache returns the cache of a connection; ttl defaults to 24h and missTTL to 5m.
func NewLookupCache(rdb redis.UniversalClient, connection string, ttl, missTTL time.Duration, m *Metrics) *LookupCache {
	if ttl <= 0 {
		ttl = config.LookupTTL
	}
	if missTTL <= 0 {
		missTTL = config.MissTTL
	}
	return &LookupCache{rdb: rdb, conn: connection, ttl: ttl, missTTL: missTTL, m: orNop(m)}
}

func (c *LookupCache) key(kind, lookup string) string {
	return connKey(c.conn, "lookup", kind, hashKey(c.conn, kind, lookup))
}

// Resolve returns the cached answer for (kind, lookup) or calls fetch and caches what it
// returns: a value for TTL, "" (not found) for MissTTL. A fetch error is returned and not
// cached. A Redis failure does not fail the lookup: the cache is an optimisation, so fetch
// is called and the answer returned uncached.
func (c *LookupCache) Resolve(ctx context.Context, kind, lookup string, fetch func(ctx context.Context) (string, error)) (string, error) {
	k := c.key(kind, lookup)
	v, err := c.rdb.Get(ctx, k).Result()
	switch {
	case err == nil && v == missValue:
		c.m.Lookups.WithLabelValues(c.conn, kind, "miss_cached").Inc()
		return "", nil
	case err == nil:
		c.m.Lookups.WithLabelValues(c.conn, kind, "hit").Inc()
		return v, nil
	case !errors.Is(err, redis.Nil) && ctx.Err() != nil:
		return "", ctx.Err()
	}
	v, err = fetch(ctx)
	if err != nil {
		return "", err
	}
	c.m.Lookups.WithLabelValues(c.conn, kind, "fetched").Inc()
	if v == "" {
		_ = c.rdb.Set(ctx, k, missValue, c.missTTL).Err()
	} else {
		_ = c.rdb.Set(ctx, k, v, c.ttl).Err()
	}
	return v, nil
}

// Forget drops a cached answer, e.g. when the CRM says the cached contact no longer exists.
func (c *LookupCache) Forget(ctx context.Context, kind, lookup string) error {
	return c.rdb.Del(ctx, c.key(kind, lookup)).Err()
}
