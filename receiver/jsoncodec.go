package receiver

import (
	"bytes"
	"encoding/json"
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
// re-send across an upgrade must encode alike. sonic's encoding differs in one known way,
// \u0008 and \u000c where encoding/json writes \b and \f; output containing either is
// encoded again by encoding/json.
var callDecoder = sonic.Config{ValidateString: true}.Froze()

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
func appendDetail(buf []byte, d *miitel.Detail) ([]byte, error) {
	start := len(buf)
	// EscapeHTML: json.Marshal escapes <, > and & (and U+2028, U+2029).
	if err := encoder.EncodeInto(&buf, d, encoder.EscapeHTML); err == nil {
		out := buf[start:]
		if !bytes.Contains(out, []byte(`\u0008`)) && !bytes.Contains(out, []byte(`\u000c`)) {
			return buf, nil
		}
	}
	b, err := json.Marshal(d)
	return append(buf[:start], b...), err
}

// detailBuffers hold encoded details until their request's tasks are enqueued.
var detailBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// maxPooledDetail bounds the buffers kept for reuse: one 10 MiB transcript must not stay
// in the pool after its request.
const maxPooledDetail = 1 << 20

func getDetailBuffer() *[]byte { return detailBuffers.Get().(*[]byte) }

func putDetailBuffer(b *[]byte) {
	if cap(*b) <= maxPooledDetail {
		*b = (*b)[:0]
		detailBuffers.Put(b)
	}
}
