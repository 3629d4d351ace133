package receiver

import (
	"bytes"
	"encoding/json"
	"reflect"
	"sync"
	"unsafe"

	"github.com/bytedance/sonic"
	"github.com/bytedance/sonic/encoder"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
)

// The call is decoded with sonic, not encoding/json: on the seed sample sonic decodes the
// call in about a sixth of encoding/json's time (BenchmarkCallCodec), and the typed decode
// was 38% of the receiver's CPU under load (docs/BENCHMARKS.md). encoding/json stays the
// judge of what is valid:
//
//   - the body reaching decodeCall has passed checkText (UTF-8, no lone surrogates),
//     validEscapes (sonic does not check the escapes of values it skips) and the top-level
//     split;
//   - sonic is configured to refuse what encoding/json refuses (control characters in
//     strings, invalid JSON in skipped values), and a call sonic refuses for any reason is
//     decoded again by encoding/json, whose verdict (and error, for the 400) is the answer,
//     so sonic being stricter somewhere costs time, never a call;
//   - FuzzCallCodecMatchesStd checks that whatever sonic accepts encoding/json accepts too,
//     into the same value, and that appendDetail writes json.Marshal's bytes.
//
// Each detail is encoded by sonic too (about twice as fast), into a pooled buffer. Its
// bytes must be json.Marshal's exactly: they are the task payload and the dedupe key, so a
// re-send across an upgrade must encode alike; output sonic may spell differently is
// encoded again by encoding/json (appendDetail).
var callDecoder = sonic.Config{ValidateString: true}.Froze()

// pretouch compiles sonic's decoder for the call and encoder for a detail ahead of the
// first request. sonic compiles a type's code on its first use: about 40 ms for these two
// on this project's development machine, during which the first requests after a start
// (a rolling update, a new replica of an autoscaler) all wait, which alone put the open
// loop's p99 at 1,000 req/s at twice a naive receiver's (docs/BENCHMARKS.md). Compiling
// costs about 100 ms once per process, before the receiver listens. An error leaves the
// compile to the first use, as without it.
var pretouch = sync.OnceValue(func() error {
	return sonic.PretouchMany([]reflect.Type{reflect.TypeFor[miitel.Call](), reflect.TypeFor[miitel.Detail]()})
})

// decodeCall decodes raw into c. Decoded strings may share memory with raw (sonic refers
// into its input instead of copying), so raw must not change while c is in use: the
// handler's body is read once into its own buffer and never written again.
func decodeCall(raw []byte, c *miitel.Call) error {
	if len(raw) > 0 && callDecoder.UnmarshalFromString(unsafe.String(&raw[0], len(raw)), c) == nil {
		return nil
	}
	*c = miitel.Call{} // sonic may have filled part of it
	return json.Unmarshal(raw, c)
}

// appendDetail appends json.Marshal(d)'s bytes to buf.
//
// sonic encodes without EscapeHTML: with it, sonic escapes in a second pass into a new
// buffer, which would defeat the pooled one. Output holding a byte that json.Marshal would
// have escaped (<, >, &, U+2028, U+2029) is rare in call data and is encoded again by
// encoding/json, like output with sonic's \u0008 and \u000c.
func appendDetail(buf []byte, d *miitel.Detail) ([]byte, error) {
	start := len(buf)
	if err := encoder.EncodeInto(&buf, d, 0); err == nil && !needsStdEncoding(buf[start:]) {
		return buf, nil
	}
	b, err := json.Marshal(d)
	return append(buf[:start], b...), err
}

// needsStdEncoding reports whether sonic's output for a detail may differ from
// json.Marshal's: characters encoding/json escapes and sonic (without EscapeHTML) does
// not, or control-character escapes the two spell differently.
//
// It searches with bytes.IndexByte (vectorised) for each byte of interest rather than
// switching on every byte: the scan runs over every detail, transcript included.
func needsStdEncoding(out []byte) bool {
	if bytes.IndexByte(out, '<') >= 0 || bytes.IndexByte(out, '>') >= 0 || bytes.IndexByte(out, '&') >= 0 {
		return true
	}
	for s := out; ; { // U+2028 and U+2029 are E2 80 A8 and E2 80 A9
		i := bytes.IndexByte(s, 0xe2)
		if i < 0 {
			break
		}
		if i+2 < len(s) && s[i+1] == 0x80 && (s[i+2] == 0xa8 || s[i+2] == 0xa9) {
			return true
		}
		s = s[i+1:]
	}
	return bytes.Contains(out, []byte(`\u0008`)) || bytes.Contains(out, []byte(`\u000c`))
}

// detailBuffers hold encoded details until their request's tasks are enqueued.
var detailBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// maxPooledDetail bounds the buffers kept for reuse: a seed-sized detail (a few KB) is
// the common case; a 270 KB or 10 MiB transcript's buffer must not stay in the pool, where
// it would hold memory the in-flight budget no longer counts.
const maxPooledDetail = 64 << 10

func getDetailBuffer() *[]byte { return detailBuffers.Get().(*[]byte) }

func putDetailBuffer(b *[]byte) {
	if cap(*b) <= maxPooledDetail {
		*b = (*b)[:0]
		detailBuffers.Put(b)
	}
}
