package callstatus

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
)

// appendArg must mean what json.Marshal means: the same object once decoded, with the same
// fields left out, for whatever strings the fields hold.
func FuzzAppendArgMatchesMarshal(f *testing.F) {
	f.Add("sales:d1", "sato@example.co.jp", "090-****-5678", "abc123", "1714000000000", "", "")
	f.Add("s\"a\\l:d\n1", "<a&b>@x", "\u2028\x00\x7f", "", "", "rk", "h1")
	f.Add("営業:詳細", "佐藤@例.jp", "\xff\xfe", "k", "", "", "")
	f.Fuzz(func(t *testing.T, m, rep, number, key, at, repk, ph string) {
		a := arg{M: m, K: key, At: at, RepK: repk, TTL: "2592000000", Max: "100000", MaxEv: "32", Now: at,
			F: facts{Route: m, Detail: key, Call: m, CallAt: at, Type: "OUTGOING_CALL", Dir: "outbound", Rep: rep,
				From: number, To: number, Cust: number, Kind: "analysis"}}
		if ph != "" {
			a.Ph = []string{ph, repk}
		}
		if len(key)%2 == 1 {
			a.RAt, a.T = at, &transition{State: Retry, At: at, Next: at, Err: &errorRec{Class: "transient", Msg: rep}}
		}
		got, err := appendArg(nil, &a)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		var g, w map[string]any
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatalf("appendArg wrote invalid JSON %q: %v", got, err)
		}
		if err := json.Unmarshal(want, &w); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(w, g); diff != "" {
			t.Errorf("appendArg differs from json.Marshal (-marshal +appendArg):\n%s", diff)
		}
	})
}

// The receipt argument of a real event (phone search on, so every field is there) decodes
// as json.Marshal's would.
func TestReceiveArgsOfASample(t *testing.T) {
	s, _, _ := newStore(t, nil, func(c *config.Status) {
		c.PhoneSearch = config.PhoneSearch{Enabled: true, Secret: config.FromValue("k")}
	})
	ev := parse(t, "sales", "call_analysis_completed/sample1.json", t0)[0]
	_, _, arg, err := s.ReceiveArgs(ev, t0)
	if err != nil {
		t.Fatal(err)
	}
	a := s.base(ev)
	a.At = ms(t0)
	want, _ := json.Marshal(a)
	var g, w map[string]any
	if err := json.Unmarshal([]byte(arg), &g); err != nil {
		t.Fatal(err)
	}
	_ = json.Unmarshal(want, &w)
	if diff := cmp.Diff(w, g); diff != "" {
		t.Errorf("(-marshal +ReceiveArgs):\n%s", diff)
	}
	if len(a.Ph) == 0 || a.RepK == "" || a.F.Cust == "" {
		t.Errorf("the sample leaves fields empty: %+v", a)
	}
}
