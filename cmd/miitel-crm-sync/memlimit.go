package main

import (
	"github.com/miitel-crm-sync/miitel-crm-sync/config"
)

// memoryHeadroom is what a receiver's Go heap may hold beside its in-flight bodies: the
// runtime, sonic's decoders and encoders, pools, connections, and the garbage of a cycle.
// 32 MiB keeps 270 KB bodies at 500 req/s under 150 MB resident (docs/BENCHMARKS.md
// "Receiver"; 64 MiB peaked at 156-163 MB).
const memoryHeadroom = 32 << 20

// receiverMemoryLimit is the soft memory limit (runtime/debug.SetMemoryLimit) a process
// that runs the receiver alone sets when GOMEMLIMIT does not: server.max_inflight_bytes
// plus memoryHeadroom. The in-flight budget bounds what requests hold live; without a
// limit the Go heap grows to about twice the live heap (GOGC=100) before it is collected,
// so a flood spending the budget on 270 KB bodies peaked at 216 MB resident where the
// live data is under 100 MB. A set GOMEMLIMIT (the Helm chart sets it from the container's
// memory limit; GOMEMLIMIT=off disables any) always wins, and a process that also runs
// the worker sets none: the worker's heap (batches, connectors) is not bounded by the
// budget, and a soft limit below it would only make the GC run without end.
func receiverMemoryLimit(getenv func(string) string, role config.Role, s config.Server) (int64, bool) {
	if !role.Receiver || role.Worker || getenv("GOMEMLIMIT") != "" || s.MaxInflightBytes <= 0 {
		return 0, false
	}
	return s.MaxInflightBytes + memoryHeadroom, true
}

// receiverGCPercent is the GC target (runtime/debug.SetGCPercent) of a process that runs
// the receiver alone under a memory limit (its default one or a set GOMEMLIMIT) when GOGC
// is not set: 400 instead of the runtime's 100. The receiver's live heap is small (a few
// MiB beside its in-flight bodies) and nearly all it allocates is one request's garbage, so
// with GOGC=100 the collector ran every few MiB: 9% of the receiver's CPU in a closed-loop
// run. The memory limit, not GOGC, is what bounds its heap under a flood; below it a
// larger target only lets the garbage of more requests wait for one collection
// (docs/BENCHMARKS.md "Receiver"). A set GOGC always wins; with GOMEMLIMIT=off nothing would
// bound a larger target, so it stays the runtime's.
func receiverGCPercent(getenv func(string) string, role config.Role, s config.Server) (int, bool) {
	_, ownLimit := receiverMemoryLimit(getenv, role, s)
	limited := ownLimit || (getenv("GOMEMLIMIT") != "" && getenv("GOMEMLIMIT") != "off")
	if !role.Receiver || role.Worker || getenv("GOGC") != "" || !limited {
		return 0, false
	}
	return 400, true
}
