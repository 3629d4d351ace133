// Package tasks is the contract between the receiver, which enqueues, and the worker, which
// processes: the asynq task type, its payload encoding and the dedupe ledger's Redis keys.
// It is a leaf package so the receiver can import it without pulling in the worker.
package tasks

import (
	"encoding/json"
	"fmt"

	"github.com/hibiken/asynq"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
)

// TypeCallEvent is the asynq task type of one call detail event.
const TypeCallEvent = "miitel:call_event"

// KeyPrefix namespaces every key this service writes itself (asynq uses "asynq:").
const KeyPrefix = "mcs:"

// LedgerKey is the Redis key that remembers, for the dedupe window, that the event with this
// dedupe key was delivered from the asynq queue named queue. It is written by the worker
// after a successful delivery, never by the receiver, so an event that ended in the dead
// letter can be sent again.
//
// The key carries the queue's hash tag, {queue}, as asynq's own keys do
// (asynq:{queue}:...), so that on Redis Cluster the receiver's enqueue script can check the
// ledger and write the task in one slot. (Before, keys were mcs:ledger:<key>; entries under
// that name are no longer read.)
func LedgerKey(queue, dedupeKey string) string {
	return KeyPrefix + "{" + queue + "}:ledger:" + dedupeKey
}

// NewCallEvent encodes an event as a task. The dedupe key is the TaskID, so while the task is
// queued, retrying or archived an exact re-send conflicts instead of queueing twice.
func NewCallEvent(ev *miitel.Event, opts ...asynq.Option) (*asynq.Task, error) {
	b, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("tasks: encode event: %w", err)
	}
	if ev.DedupeKey != "" {
		opts = append([]asynq.Option{asynq.TaskID(ev.DedupeKey)}, opts...)
	}
	return asynq.NewTask(TypeCallEvent, b, opts...), nil
}

// DecodeCallEvent decodes a task's payload. A payload that does not decode can never succeed,
// so the error wraps asynq.SkipRetry and the task goes straight to the dead letter.
func DecodeCallEvent(t *asynq.Task) (*miitel.Event, error) {
	var ev miitel.Event
	if err := json.Unmarshal(t.Payload(), &ev); err != nil {
		return nil, fmt.Errorf("tasks: decode %s payload: %v: %w", t.Type(), err, asynq.SkipRetry)
	}
	return &ev, nil
}

// MaxRetry is the asynq.MaxRetry option for a task that may fail `failures` times after its
// first attempt (config queue.max_retry). asynq (v0.26) archives a task whose retry count has
// reached its MaxRetry whatever the error, so a throttled attempt (429, a broken connection:
// not counted as a failure) after the last allowed failure would be archived. The task
// therefore gets one retry more than the budget and the worker archives the failure that
// exhausts the budget itself (see worker's package comment).
func MaxRetry(failures int) asynq.Option { return asynq.MaxRetry(Retries(failures)) }

// Retries is the MaxRetry value MaxRetry sets, for code that writes asynq's task message
// itself (the receiver's enqueue script).
func Retries(failures int) int { return failures + 1 }

// AppendJSONString appends s as json.Marshal writes it, for payloads and arguments built
// without reflection (the receiver's task envelope, the call status argument). A string of
// printable ASCII without a quote, a backslash or one of the HTML characters json.Marshal
// escapes (<, >, &) is written as it is, between quotes (ids, routes, keys, times are);
// any other goes through json.Marshal, which never fails on a string.
func AppendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	return append(append(append(b, '"'), s...), '"')
}
