package receiver

import (
	"errors"
	"io"

	"golang.org/x/sync/semaphore"
)

// bodyCostFactor is what one byte of body costs in memory while its request is handled: the
// body itself, the call decoded from it (its strings are copies), the detail encoded once
// for the dedupe hash and the task, and the task message built around it. A heap profile of
// BenchmarkAcceptVsBaselines/270KB shows about 7.5 bytes allocated per body byte, of which
// about 4 are alive at the same time (encoding/json's unquote buffer and its encode buffer
// are garbage or pooled once the copy is made). A request is charged this much per body
// byte against Server.MaxInflightBytes before its body is read.
const bodyCostFactor = 4

// minCharge is charged for a request whatever its body: buffers, the parsed event and the
// answer take a few KB however small the body is.
const minCharge = 16 << 10

// inflight is the budget of requests being handled: a number of requests and the memory
// their bodies hold (charged by bodyCostFactor). Over either, a request is answered 503 +
// Retry-After before its body is read, so memory stays bounded under any flood. It never
// waits: a request that does not fit now is told to come back, which is what MiiTel does
// with a 503.
type inflight struct {
	requests *semaphore.Weighted
	bytes    *semaphore.Weighted
	maxBytes int64
}

func newInflight(maxRequests int, maxBytes int64) *inflight {
	return &inflight{requests: semaphore.NewWeighted(int64(maxRequests)), bytes: semaphore.NewWeighted(maxBytes), maxBytes: maxBytes}
}

// charge is one request's share of the budget.
type charge struct {
	f     *inflight
	bytes int64
}

// admit takes a request slot and n bytes, or nothing.
func (f *inflight) admit(n int64) (*charge, bool) {
	if !f.requests.TryAcquire(1) {
		return nil, false
	}
	if !f.bytes.TryAcquire(n) {
		f.requests.Release(1)
		return nil, false
	}
	return &charge{f: f, bytes: n}, true
}

// grow adds n bytes to the charge, if they fit.
func (c *charge) grow(n int64) bool {
	if n <= 0 {
		return true
	}
	if !c.f.bytes.TryAcquire(n) {
		return false
	}
	c.bytes += n
	return true
}

// atLeast grows the charge to n bytes, if they fit.
func (c *charge) atLeast(n int64) bool { return c.grow(n - c.bytes) }

func (c *charge) release() {
	c.f.bytes.Release(c.bytes)
	c.f.requests.Release(1)
}

// errOverBudget is a chunked body that grew past what the in-flight budget had left.
var errOverBudget = errors.New("receiver: in-flight byte budget exhausted while reading the body")

// chargedReader charges a body of unknown length (chunked) as it is read, in steps, so
// that it is refused once the budget is gone instead of being buffered regardless.
type chargedReader struct {
	r       io.Reader
	c       *charge
	read    int64
	covered int64 // body bytes the charge covers
}

const chargeStep = 64 << 10

func (cr *chargedReader) Read(p []byte) (int, error) {
	if len(p) > chargeStep {
		p = p[:chargeStep] // charge in steps, not by the size of the reader's buffer
	}
	if cr.read+int64(len(p)) > cr.covered {
		step := max(chargeStep, cr.read+int64(len(p))-cr.covered)
		if !cr.c.grow(step * bodyCostFactor) {
			return 0, errOverBudget
		}
		cr.covered += step
	}
	n, err := cr.r.Read(p)
	cr.read += int64(n)
	return n, err
}
