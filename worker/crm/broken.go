package crm

import (
	"maps"
	"sync"
)

// BrokenToken is the BrokenState reason the shared token sets while the grant is revoked.
const BrokenToken = "token"

// BrokenState is why one connection is broken in this process. A connection can be broken
// for more than one reason at once (its refresh token revoked, the record key field missing
// in the CRM, ...), each set and cleared by the part that found it, so the token coming back
// does not hide a missing field and the other way round. The gauge
// mcs_crm_connection_broken{connection} is 1 while any reason holds;
// mcs_crm_connection_broken_total counts reasons newly set.
//
// A connector builds one and hands it to its SharedToken (TokenOptions.Broken). It is safe
// for concurrent use.
type BrokenState struct {
	conn string
	m    *Metrics

	mu      sync.Mutex
	reasons map[string]string
}

// NewBrokenState returns the (empty) broken state of a connection.
func NewBrokenState(connection string, m *Metrics) *BrokenState {
	return &BrokenState{conn: connection, m: orNop(m), reasons: map[string]string{}}
}

// Set records that the connection is broken for reason key, described by why. It reports
// whether key was not set before, so the caller logs the news once, not on every attempt.
func (b *BrokenState) Set(key, why string) (changed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, had := b.reasons[key]
	b.reasons[key] = why
	if !had {
		b.m.BrokenTotal.WithLabelValues(b.conn).Inc()
	}
	b.m.Broken.WithLabelValues(b.conn).Set(1)
	return !had
}

// Clear drops reason key and reports whether it was set. The gauge goes to 0 only when no
// other reason holds.
func (b *BrokenState) Clear(key string) (changed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, had := b.reasons[key]
	delete(b.reasons, key)
	if len(b.reasons) == 0 {
		b.m.Broken.WithLabelValues(b.conn).Set(0)
	}
	return had
}

// Reasons returns a copy of the reasons that hold now (key -> why).
func (b *BrokenState) Reasons() map[string]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.reasons)
}
