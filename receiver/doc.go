// Package receiver is the HTTP side of miitel-crm-sync: a gin router that takes MiiTel
// "Outgoing Webhook" (call history) requests on POST /webhooks/miitel/{route} and queues one
// asynq task per call detail in Redis. It answers 2xx only once Redis holds every task of the
// request, so nothing MiiTel sees acknowledged can be lost.
//
// A request goes through these steps, and the first that fails decides the answer:
//
//	route lookup           unknown route                         404 route_not_found
//	source-IP allowlist    peer (or trusted-proxy XFF) not listed 403 ip_not_allowed
//	header auth            no credential presented                401 unauthorized (+ WWW-Authenticate)
//	  (header routes)      a credential presented, none valid     403 forbidden
//	content type           not application/json (utf-8)           415 unsupported_media_type
//	in-flight budget       over server.max_inflight_requests/_bytes 503 overloaded (+ Retry-After)
//	size-limited read      body over Server.MaxBodyBytes          413 body_too_large
//	auth (payload routes:  as above, headers then payload keys    401 / 403, then 415
//	  body needed)
//	parse                  not UTF-8 text (or a lone \ud800 escape) 400 invalid_utf8 (names the offset)
//	                       not a JSON object, duplicate top key   400 malformed_json
//	                       both "challenge" and "call"            400 challenge_with_call
//	challenge              {"challenge": token}                   200 text/plain token (no Redis call)
//	validate               "video" and no "call"                  422 unsupported_event (ErrVideoEvent)
//	                       decodes beyond the in-flight budget    413 body_too_complex
//	                       a MiiTel essential missing or mistyped 400 invalid_payload
//	enqueue                Redis down or slower than EnqueueTimeout 503 unavailable (+ Retry-After)
//	                       otherwise                              200 {"queued": n, "duplicates": m, ...}
//
// Everything that needs no body is checked before a byte of it is read (and the connection
// is closed after such an answer rather than drained), so a sender that is not allowed or
// not authenticated cannot make us buffer megabytes. Only routes with payload-key
// credentials read the body first, since the credential is in it. 401 and 403 are split so
// an admin can tell a missing "additional header" from a wrong one; neither says which
// credential kinds exist beyond the WWW-Authenticate challenge. Authentication comes before
// content-type and JSON checks, so an unauthenticated caller learns nothing about the parser.
// A body with both "challenge" and "call" is refused (400): MiiTel sends the challenge only
// when an admin saves the webhook setting, with the admin's additional payload and never
// with a call, and answering either half would acknowledge the other without acting on it.
// The configured payload-credential keys are removed before anything is queued, matched or
// not (a rotated-out key is still a secret).
//
// Memory: a request is charged 4 bytes per body byte (bodyCostFactor: body, decoded call,
// encoded tasks) against Server.MaxInflightBytes before its body is read, a chunked body as
// it grows, and a call whose structure decodes into more than that is charged for it
// before it is decoded (topLevel.decodeCost), so memory stays bounded whatever arrives.
//
// Parsing is one pass: splitTop walks the top-level object once (collecting credentials and
// additional-payload keys and finding the call's bytes), encoding/json decodes the call once
// into the typed miitel.Call, each detail is encoded once (json.Marshal) and those bytes
// are both hashed into the dedupe key and spliced into the task payload, which is exactly
// what tasks.NewCallEvent would have encoded.
//
// Deduplication: each task's TaskID is a dedupe key, a hash over the route, call id, detail
// id, event kind and the canonical (typed-encoding) content of the detail plus the queued
// additional-payload keys. MiiTel re-sends the last minutes of call history every 10 minutes;
// such a re-send is dropped while its task is still in the queue (TaskID conflict) and,
// after the worker delivered it, for Queue.DedupeWindow through a small ledger key the worker
// writes (tasks.LedgerKey). A changed memo or the later minutes event hashes differently and
// is queued. A re-send whose earlier task sits in the dead letter (archived) replaces that
// task, so a legitimate re-send never vanishes. asynq's Retention is not used: it would keep
// every transcript in Redis for the whole window.
//
// Enqueueing is one Redis round trip per request: one Lua script (package
// receiver/internal/enqueue) checks the ledger and the TaskID of every detail and writes the
// tasks exactly as asynq v0.26's client would. Redis runs a script atomically, so a request
// is queued whole or not at all; when the reply is lost the answer is 503 and MiiTel's
// re-send finds every detail already queued (duplicates), so nothing is lost and nothing
// doubles. Requests arriving while two scripts are on their way share the next one
// (enqueue.Batcher, group commit): under load Redis then reads and answers one command for
// many requests, and each is still acknowledged only once its own tasks are written.
package receiver
