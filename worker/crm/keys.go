package crm

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// Redis keys of the shared CRM state. Every key starts with tasks.KeyPrefix + "crm:" and the
// connection name. The OAuth keys of a connection carry the name in a hash tag ({name}) so
// they live in one Redis Cluster slot and the token scripts may touch them together; the
// other keys are spread over the cluster.

func oauthKey(conn, part string) string {
	return tasks.KeyPrefix + "crm:{" + conn + "}:oauth:" + part
}

func connKey(conn string, parts ...string) string {
	k := tasks.KeyPrefix + "crm:" + conn
	for _, p := range parts {
		k += ":" + p
	}
	return k
}

// hashKey pseudonymises a lookup value (phone number, e-mail) for use in a key name, so
// `redis-cli --scan` never lists personal data. The connection and kind are mixed in so the
// same number in two connections gives unrelated keys.
func hashKey(conn, kind, value string) string {
	h := sha256.Sum256([]byte(conn + "\x00" + kind + "\x00" + value))
	return hex.EncodeToString(h[:16])
}

// fingerprint is a short one-way digest of credentials, stored to recognise "the same
// credentials as before" without storing them.
func fingerprint(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}
