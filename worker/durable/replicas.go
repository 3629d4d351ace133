package durable

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultRefresh is how long a master's replica count ("auto") is trusted before INFO is
// read again. A WAIT that falls short forgets it at once (Forget), so a replica that left
// stops being waited for on the next write once the hold has passed, not later.
const DefaultRefresh = 2 * time.Second

// Replicas is redis.ack_replicas "auto": how many replicas a write must reach, from what
// the master reports. It is the one policy of every writer that waits (the receiver's
// enqueue and the worker's exactly-once writes), so both refuse the same writes in a
// failover:
//
//   - only replicas in state=online count: a replica still loading its first sync is in
//     connected_slaves but cannot acknowledge a WAIT, and waiting for it would refuse every
//     write until the sync ends;
//   - the most replicas seen within the hold is kept (DefaultHold): in a planned failover
//     the old master still holds a replica the Sentinels have not moved yet, which would
//     confirm exactly the writes the demotion then flushes.
//
// Counts are kept per master address. It is safe for concurrent use: while one caller
// reads INFO, the others use the count they have; only the first caller ever waits.
type Replicas struct {
	refresh, hold time.Duration
	now           func() time.Time

	mu    sync.Mutex
	known map[string]*replicaCount
}

type replicaCount struct {
	known      bool
	n          int
	at         time.Time // when n was read; zero: read again
	refreshing bool
	// high is the most replicas seen since highAt; it is waited for until hold passed.
	high   int
	highAt time.Time
}

// NewReplicas returns the policy: refresh (0: DefaultRefresh) is how long a count is used
// before INFO is read again, hold how long the most replicas seen stays the count (0
// follows the master's view at once: tests).
func NewReplicas(refresh, hold time.Duration) *Replicas {
	if refresh <= 0 {
		refresh = DefaultRefresh
	}
	return &Replicas{refresh: refresh, hold: max(hold, 0), now: time.Now, known: map[string]*replicaCount{}}
}

// Want is how many replicas a write to the master at addr must reach. info reads the
// master's INFO replication (on the connection the write will use where the caller can).
// An INFO that fails or names a node that is no longer a master (a failover under way) is
// an error only while no count is known; otherwise the known count stands and the write's
// own answer tells whether the master is still there.
func (r *Replicas) Want(ctx context.Context, addr string, info func(context.Context) (string, error)) (int, error) {
	r.mu.Lock()
	c := r.known[addr]
	if c == nil {
		c = &replicaCount{}
		r.known[addr] = c
	}
	if c.known && (r.now().Sub(c.at) < r.refresh || c.refreshing) {
		n := c.value()
		r.mu.Unlock()
		return n, nil
	}
	c.refreshing = true
	r.mu.Unlock()

	text, err := info(ctx)
	var n int
	if err == nil {
		n, err = OnlineReplicas(text)
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	c.refreshing = false
	if err != nil {
		if c.known {
			return c.value(), nil
		}
		return 0, fmt.Errorf("ack_replicas auto: %w", err)
	}
	now := r.now()
	c.known, c.n, c.at = true, n, now
	if n >= c.high || now.Sub(c.highAt) >= r.hold {
		c.high, c.highAt = n, now
	}
	return c.value(), nil
}

func (c *replicaCount) value() int { return max(c.n, c.high) }

// Forget makes the next write read the master's replicas again (a failover or a replica
// lost changes them); the held high stays until the hold passed.
func (r *Replicas) Forget(addr string) {
	r.mu.Lock()
	if c := r.known[addr]; c != nil {
		c.at = time.Time{}
	}
	r.mu.Unlock()
}

// OnlineReplicas reads INFO replication of a master: its replicas (slaveN lines) in state
// online. A node whose role is not master is an error: it takes no writes, and its count
// says nothing about a master's.
func OnlineReplicas(info string) (int, error) {
	seen, n, role := false, 0, ""
	for line := range strings.SplitSeq(info, "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "role:"); ok {
			role = v
			continue
		}
		if v, ok := strings.CutPrefix(line, "connected_slaves:"); ok {
			if _, err := strconv.Atoi(v); err != nil {
				return 0, fmt.Errorf("INFO replication: connected_slaves %q", v)
			}
			seen = true
			continue
		}
		if strings.HasPrefix(line, "slave") && strings.Contains(line, "state=online") {
			n++
		}
	}
	if role != "" && role != "master" {
		return 0, fmt.Errorf("INFO replication: the node is not a master (role %q)", role)
	}
	if !seen {
		return 0, errors.New("INFO replication has no connected_slaves")
	}
	return n, nil
}
