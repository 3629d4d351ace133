// Package durable holds the worker's Redis writes that guard exactly-once to the replicated
// acknowledgement rule (config redis.ack_replicas, redis.ack_timeout): a write counts only
// once WAIT, sent on the connection that made the write, reports that many replicas hold it.
//
// Redis replication is asynchronous. A write only the master holds is lost when a replica is
// promoted without it (SENTINEL FAILOVER demotes the old master and flushes what it took
// after the promotion; a killed master's last writes may never have left it). For most keys
// that costs a retry. For a few it breaks exactly-once: a call lease that vanishes lets a
// second worker deliver the same call at the same time, a HubSpot pending marker that
// vanishes makes a retry create the activity again, a lost id map entry or written-length
// record lets a later event create a second activity or shorten a body. The worker routes
// those writes through Acks.Write; everything else (status, metrics, caches) does not wait.
//
// WAIT narrows the window, it does not make replication synchronous: a promoted replica
// holds every write WAIT confirmed on it. With ack_replicas below the number of replicas
// the promoted one may be one that did not confirm; "auto" (every online replica the
// master reports, never fewer than the most seen within DefaultHold: Replicas, the policy
// the receiver's enqueue shares) leaves no such gap.
package durable

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
)

// DefaultTimeout bounds one WAIT when the config gives none (config's default is 300ms).
const DefaultTimeout = 300 * time.Millisecond

// DefaultHold is how long auto keeps waiting for a replica the master stopped reporting.
// In a planned failover the old master keeps a replica the Sentinels have not moved yet:
// it still confirms writes that the demotion then flushes. Following the master's own view
// at once would confirm exactly those; holding the highest count seen makes them fail (and
// retry on the new master). The cost: a replica that is gone for good is waited for, and
// writes retried, for this long.
const DefaultHold = 15 * time.Second

// RetryAfter is how long a task waits before retrying a write that was not replicated: a
// failover or a paused replica takes seconds, not milliseconds.
const RetryAfter = 2 * time.Second

// Error says a write was made on the master but not confirmed by enough replicas within the
// timeout (or the WAIT itself failed). The write may or may not survive a failover, so the
// caller must not act on it; the task is retried. It is a Redis problem, not the call's:
// Throttled reports true, so the retry does not use up one of the task's attempts.
type Error struct {
	Op        string // what was written, e.g. "worker: lock call"
	Want, Got int    // replicas asked for and replicas that confirmed
	Err       error  // the WAIT's own error, if any
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: not confirmed by %d replica(s): WAIT: %v", e.Op, e.Want, e.Err)
	}
	return fmt.Sprintf("%s: only %d of %d replica(s) confirmed the write within the ack timeout", e.Op, e.Got, e.Want)
}

func (e *Error) Unwrap() error { return e.Err }

// Throttled: the worker's retry policy does not count it as a failed attempt.
func (e *Error) Throttled() bool { return true }

// RetryAfter is when the task tries again.
func (e *Error) RetryAfter() time.Duration { return RetryAfter }

// Acks runs writes that must reach replicas before the worker acts on them. It is safe for
// concurrent use; build one per Redis client.
type Acks struct {
	rdb     redis.UniversalClient
	want    config.AckReplicas
	timeout time.Duration

	auto *Replicas // "auto": the policy the receiver's enqueue shares
}

// New returns the Acks of a client: want is redis.ack_replicas (config.AckAuto, 0 for off,
// or a number), timeout redis.ack_timeout.
func New(rdb redis.UniversalClient, want config.AckReplicas, timeout time.Duration) *Acks {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return &Acks{rdb: rdb, want: want, timeout: timeout, auto: NewReplicas(DefaultRefresh, DefaultHold)}
}

// WithHold changes DefaultHold (tests; 0 follows the master's view at once).
func (a *Acks) WithHold(d time.Duration) *Acks {
	a.auto = NewReplicas(DefaultRefresh, d)
	return a
}

// Off returns an Acks that never waits (tests, and callers built without one).
func Off(rdb redis.UniversalClient) *Acks { return New(rdb, 0, 0) }

// Client is the client writes go through when they need no wait.
func (a *Acks) Client() redis.UniversalClient { return a.rdb }

// Write runs write against the master that holds key and, when replicas are to be waited
// for, sends WAIT on the same connection afterwards. write's own error is returned as it is;
// a WAIT that fails or falls short is an *Error. write must only touch key's slot (on a
// Cluster it runs on that slot's master alone) and must not treat redis.Nil as a failure
// it returns: a script that wrote and then answered nil still needs its WAIT.
func (a *Acks) Write(ctx context.Context, op, key string, write func(ctx context.Context, c redis.Cmdable) error) error {
	if a.want == 0 {
		return write(ctx, a.rdb)
	}
	node, err := a.master(ctx, key)
	if err != nil {
		return fmt.Errorf("%s: find the master of the key: %w", op, err)
	}
	if node == nil { // a client kind WAIT cannot be pinned on (not built by config)
		if a.want > 0 {
			return fmt.Errorf("%s: redis.ack_replicas needs a standalone, Sentinel or Cluster client, got %T", op, a.rdb)
		}
		return write(ctx, a.rdb)
	}
	// WAIT counts the writes of its own connection: the write and the WAIT must share one.
	conn := node.Conn()
	defer conn.Close()
	want := int(a.want)
	if a.want == config.AckAuto {
		// INFO on conn, the connection the write will use: the count is the one of the
		// node that takes the write.
		info := func(ctx context.Context) (string, error) { return conn.Info(ctx, "replication").Result() }
		if want, err = a.auto.Want(ctx, node.Options().Addr, info); err != nil {
			return fmt.Errorf("%s: read the master's replicas: %w", op, err)
		}
	}
	if err := write(ctx, conn); err != nil {
		return err
	}
	if want == 0 {
		return nil
	}
	got, err := conn.Wait(ctx, want, a.timeout).Result()
	if err != nil {
		return &Error{Op: op, Want: want, Err: err}
	}
	if int(got) < want {
		a.auto.Forget(node.Options().Addr)
		return &Error{Op: op, Want: want, Got: int(got)}
	}
	return nil
}

// master is the client of the node that holds key: the client itself on a standalone or
// Sentinel setup (a FailoverClient is a *redis.Client whose dialer follows the master), the
// slot's master on a Cluster; nil for other clients.
func (a *Acks) master(ctx context.Context, key string) (*redis.Client, error) {
	switch c := a.rdb.(type) {
	case *redis.Client:
		return c, nil
	case *redis.ClusterClient:
		return c.MasterForKey(ctx, key)
	}
	return nil, nil
}
