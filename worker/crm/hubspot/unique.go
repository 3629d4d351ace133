package hubspot

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
)

// The unique-property path. HubSpot's batch upsert inputs carry no associations, so a call
// upserted as new needs a second input in a v4 associations batch: two requests per 100
// new calls. A first event therefore goes through batch create instead, with its contact
// association inline and the unique property set: HubSpot refuses to create a second call
// with a value the property already holds, so the create cannot duplicate, and a refused
// create means the call exists (an interrupted attempt wrote it, its answer was lost, or
// the id map lost the entry): that call alone falls back to the upsert (without the
// create-only fields, since the call exists) plus its association. Later events, whose call
// the id map knows, use the upsert as before.
//
// The create is only as safe as the property: one that exists without hasUniqueValue (or
// was deleted) would let a create duplicate or be refused, where the upsert is refused
// outright ("non-unique property", which parks the connection as broken). So first events
// are created only while the property is confirmed unique, by the properties API or by an
// upsert by it that went through, for UniqueRecheck; otherwise they are upserted.

// UniqueRecheck is how long a confirmation that the unique property has unique values
// holds before the properties API is read again (upserts by it renew it for free).
const UniqueRecheck = 10 * time.Minute

// uniqueUnconfirmedWait is how long first events are upserted after the property could not
// be confirmed (missing, not unique, or unreadable) before it is read again.
const uniqueUnconfirmedWait = 30 * time.Second

// uniqueKey remembers whether the unique property is known to have unique values.
type uniqueKey struct {
	mu      sync.Mutex
	until   time.Time // confirmed until
	retryAt time.Time // not confirmed: do not read the property again before
}

func (k *uniqueKey) set(ok bool, now time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if ok {
		k.until, k.retryAt = now.Add(UniqueRecheck), time.Time{}
	} else {
		k.until, k.retryAt = time.Time{}, now.Add(uniqueUnconfirmedWait)
	}
}

// state: confirmed, or (not confirmed) whether the property should be read now.
func (k *uniqueKey) state(now time.Time) (confirmed, ask bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return now.Before(k.until), !now.Before(k.retryAt)
}

// uniqueConfirmed reports whether the unique property is known to have unique values,
// reading it (once for all concurrent deliveries) when that is not known.
func (c *Connector) uniqueConfirmed(ctx context.Context) bool {
	confirmed, ask := c.key.state(time.Now())
	if confirmed || !ask {
		return confirmed
	}
	v, _, _ := c.keyReads.Do("", func() (any, error) {
		if confirmed, ask := c.key.state(time.Now()); confirmed || !ask {
			return confirmed, nil
		}
		problem, _, err := c.keyProblem(ctx)
		ok := err == nil && problem == ""
		if ctx.Err() == nil { // a cancelled delivery learnt nothing about the property
			c.key.set(ok, time.Now())
		}
		return ok, nil
	})
	ok, _ := v.(bool)
	return ok
}

// refusedAsExisting reports whether a create carrying the unique property was refused for
// that property: per input (207, errors[] naming it) or for the whole request (400/409).
// With the property confirmed unique, that is HubSpot saying the value is taken. Nothing
// was written for the input either way.
func (c *Connector) refusedAsExisting(err error) bool {
	var ce *crm.Error
	if !errors.As(err, &ce) {
		return false
	}
	switch ce.Status {
	case http.StatusMultiStatus, http.StatusBadRequest, http.StatusConflict:
	default:
		return false
	}
	return ce.Code == "CONFLICT" || strings.Contains(strings.ToLower(ce.Msg), strings.ToLower(c.unique))
}

// upsertUnique writes the call by the unique property: a first event by batch create with
// the association inline (falling back to the upsert when the call exists), a later one by
// batch upsert. The id map remembers that the call exists and its contact, so create-only
// fields are sent on the first write only and an association only when it is new.
func (c *Connector) upsertUnique(ctx context.Context, ext string, props Properties, contact string) (string, bool, error) {
	entry, known, err := c.ids.Get(ctx, "calls", ext)
	if err != nil {
		return "", false, &crm.Error{Class: crm.Transient, Op: "hubspot: id map", Err: err}
	}
	send, existed := props.All(), false
	if known && entry.ID != "" {
		send = props.Always
	} else if c.uniqueConfirmed(ctx) {
		all := props.All()
		all[c.unique] = ext
		out, err := c.creates.Do(ctx, &writeItem{key: ext, props: all, contact: contact})
		if err == nil {
			c.remember(ctx, ext, crm.IDEntry{ID: out.id, Contact: contact})
			return out.id, true, nil
		}
		if !c.refusedAsExisting(err) {
			return "", false, err
		}
		c.log.Debug("hubspot: the call exists already (unique value taken); updating it", "external_id", ext)
		send, existed = props.Always, true
	}
	out, err := c.upserts.Do(ctx, &writeItem{key: ext, props: send})
	if err != nil {
		return "", false, err
	}
	c.key.set(true, time.Now()) // HubSpot upserts only by a property with unique values
	id, created := out.id, out.created
	if existed && created && len(props.CreateOnly) > 0 {
		// The call HubSpot said existed was gone by the upsert (deleted in between): it
		// was created now without the create-only fields; add them.
		if _, err := c.updates.Do(ctx, &writeItem{key: id, props: props.CreateOnly}); err != nil {
			return "", false, err
		}
	}
	if contact != "" && entry.Contact != contact {
		if _, err := c.assocs.Do(ctx, assocItem{call: id, contact: contact}); err != nil {
			return "", false, err
		}
	}
	c.remember(ctx, ext, crm.IDEntry{ID: id, Contact: cmp.Or(contact, entry.Contact)})
	return id, created, nil
}

func (c *Connector) remember(ctx context.Context, ext string, e crm.IDEntry) {
	if err := c.ids.Put(ctx, "calls", ext, e); err != nil {
		c.log.Warn("hubspot: could not record the call id; the next event re-sends create-only fields", "error", err.Error())
	}
}
