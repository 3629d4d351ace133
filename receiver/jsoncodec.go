package receiver

import (
	"encoding/json"
	"unsafe"

	"github.com/bytedance/sonic"

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
//     into the same value.
//
// Details are still encoded with encoding/json: sonic's encoding is not byte for byte
// json.Marshal's (it writes \u0008 where encoding/json writes \b), and the task payload
// and the dedupe key are those bytes, so a re-send across an upgrade must encode alike.
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
