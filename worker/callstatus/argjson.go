package callstatus

import (
	"encoding/json"
	"fmt"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// appendArg appends a's JSON: what json.Marshal(a) means (the same fields, omitempty alike),
// written without reflection. The receiver encodes one argument per event on every webhook
// request, where json.Marshal took 4% of its CPU under load; the Lua side decodes it with
// cjson, so only the meaning must match, not the bytes (TestAppendArgMatchesMarshal).
func appendArg(b []byte, a *arg) ([]byte, error) {
	b = append(b, `{"m":`...)
	b = tasks.AppendJSONString(b, a.M)
	b = append(b, `,"f":{`...)
	first := true
	for _, kv := range [...]struct{ k, v string }{
		{"route", a.F.Route}, {"detail", a.F.Detail}, {"call", a.F.Call}, {"call_at", a.F.CallAt},
		{"type", a.F.Type}, {"dir", a.F.Dir}, {"rep", a.F.Rep}, {"from", a.F.From}, {"to", a.F.To},
		{"cust", a.F.Cust}, {"kind", a.F.Kind},
	} {
		if kv.v == "" {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(append(append(b, '"'), kv.k...), `":`...)
		b = tasks.AppendJSONString(b, kv.v)
	}
	b = append(b, `},"k":`...)
	b = tasks.AppendJSONString(b, a.K)
	b = appendOptional(b, "at", a.At)
	b = appendOptional(b, "rat", a.RAt)
	if a.T != nil {
		t, err := json.Marshal(a.T) // a worker's transition: not on the webhook's path
		if err != nil {
			return nil, fmt.Errorf("callstatus: encode: %w", err)
		}
		b = append(append(b, `,"t":`...), t...)
	}
	b = appendOptional(b, "repk", a.RepK)
	if len(a.Ph) > 0 {
		b = append(b, `,"ph":[`...)
		for i, h := range a.Ph {
			if i > 0 {
				b = append(b, ',')
			}
			b = tasks.AppendJSONString(b, h)
		}
		b = append(b, ']')
	}
	for _, kv := range [...]struct{ k, v string }{{"ttl", a.TTL}, {"max", a.Max}, {"maxev", a.MaxEv}, {"now", a.Now}} {
		b = append(append(append(b, `,"`...), kv.k...), `":`...)
		b = tasks.AppendJSONString(b, kv.v)
	}
	return append(b, '}'), nil
}

// appendOptional appends ,"k":v unless v is empty (omitempty).
func appendOptional(b []byte, k, v string) []byte {
	if v == "" {
		return b
	}
	b = append(append(append(b, `,"`...), k...), `":`...)
	return tasks.AppendJSONString(b, v)
}
