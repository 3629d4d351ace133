// Package worker delivers queued MiiTel call events to the CRMs. It is an asynq server whose
// one task type (tasks.TypeCallEvent) is handled by a Processor, the delivery Pipeline: lock
// the call, merge the event into the call's state, render the route's mapping, hand the
// record to the route's CRM connector (worker/crm/...; the dry-run connector when a route
// names no CRM connection).
//
// Retries are asynq's alone, decided by the error a Processor returns:
//   - nil: delivered. The event's dedupe key is written to the ledger (with the dedupe
//     window as TTL) so MiiTel's periodic re-sends of it are dropped by the receiver.
//   - an error wrapping asynq.SkipRetry (mapping errors, CRM validation errors): archived at
//     once, the error text kept as the dead letter's reason.
//   - an error with RetryAfter() > 0 (Retry-After, rate-limit windows): retried after that.
//   - an error with Throttled() true (429, daily allowance, a broken CRM connection): retried
//     without counting as a failed attempt, so throttling never exhausts a task's retries.
//   - anything else: retried with capped exponential backoff and jitter, counted, and
//     archived when it fails once more after queue.max_retry retries. The worker archives
//     that failure itself (it wraps asynq.SkipRetry): asynq's own limit, which it applies to
//     throttled attempts too, sits one retry higher (tasks.MaxRetry).
//
// With Options.DeadLetter and Options.Status set, every attempt is recorded (the pipeline
// reports the merged event, the mapping version and the CRM's result through the context):
// started, failed (retry with the next attempt time the worker chose and hands to asynq,
// parked on a broken connection, dead) and delivered or skipped. A call that goes dead is
// written to the dead letter before asynq archives it; if that write fails the task is
// retried instead, so no call is archived without its entry. A delivery resolves the call's
// entry. Failures asynq raises itself (a panic, the task timeout) are recorded by the error
// handler.
package worker
