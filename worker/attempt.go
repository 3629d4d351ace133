package worker

import (
	"context"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
)

// attemptNotes is what the pipeline learns during one attempt that the worker records afterwards
// in the dead letter and the call status: the merged event (what a replay must send), the
// mapping version, the rendered record and the CRM's result. It travels in the context
// because a Processor returns only an error; a Processor that does not fill it leaves the
// worker with the task's own event.
type attemptNotes struct {
	merged   *miitel.Event
	hadState bool // the event was merged with the call's stored state
	version  string
	// renderFailed: the mapping failed on this call (the error's code becomes MAPPING).
	renderFailed bool
	rec          *mappers.Record
	skip         *mappers.Skip
	res          crm.Result
}

type attemptKey struct{}

func withAttempt(ctx context.Context, a *attemptNotes) context.Context {
	return context.WithValue(ctx, attemptKey{}, a)
}

// attemptOf is the attempt the worker put in ctx, or nil; every method is a no-op on nil.
func attemptOf(ctx context.Context) *attemptNotes {
	a, _ := ctx.Value(attemptKey{}).(*attemptNotes)
	return a
}

func (a *attemptNotes) noteMerged(merged *miitel.Event, hadState bool) {
	if a != nil {
		a.merged, a.hadState = merged, hadState
	}
}

func (a *attemptNotes) noteRendered(r Renderer, rec *mappers.Record, skip *mappers.Skip, err error) {
	if a == nil {
		return
	}
	if v, ok := r.(interface{ Version() string }); ok {
		a.version = v.Version()
	}
	a.rec, a.skip, a.renderFailed = rec, skip, err != nil
}

func (a *attemptNotes) noteDelivered(res crm.Result) {
	if a != nil {
		a.res = res
	}
}

// event is what the dead letter keeps to replay: the merged state when there was one.
func (a *attemptNotes) event(ev *miitel.Event) *miitel.Event {
	if a != nil && a.merged != nil {
		return a.merged
	}
	return ev
}
