// Package receiver is the HTTP side of miitel-crm-sync: a gin router that takes MiiTel
// "Outgoing Webhook" (call history) requests on POST /webhooks/miitel/{route} and queues one
// asynq task per call detail in Redis. It answers 2xx only once Redis holds every task of the
// request, so nothing MiiTel sees acknowledged can be lost.
//
// A request goes through these steps, and the first that fails decides the answer:
//
//	route lookup           unknown route                         404 route_not_found
//	source-IP allowlist    peer (or trusted-proxy XFF) not listed 403 ip_not_allowed
//	size-limited read      body over Server.MaxBodyBytes          413 body_too_large
//	auth (headers, then    no credential presented                401 unauthorized (+ WWW-Authenticate)
//	  payload keys)        a credential presented, none valid     403 forbidden
//	content type           not application/json (utf-8)           415 unsupported_media_type
//	parse                  not UTF-8 text (or a lone \ud800 escape) 400 invalid_utf8 (names the offset)
//	                       not a JSON object                      400 malformed_json
//	                       both "challenge" and "call"            400 challenge_with_call
//	challenge              {"challenge": token}                   200 text/plain token (no Redis call)
//	validate               "video" and no "call"                  422 unsupported_event (ErrVideoEvent)
//	                       a MiiTel essential missing or mistyped 400 invalid_payload
//	enqueue                Redis down or slower than EnqueueTimeout 503 unavailable (+ Retry-After)
//	                       otherwise                              200 {"queued": n, "duplicates": m, ...}
//
// The allowlist is checked before the body is read, because it needs no body and a sender
// that is not allowed should not make us buffer megabytes. 401 and 403 are split so an
// admin can tell a missing "additional header" from a wrong one; neither says which
// credential kinds exist beyond the WWW-Authenticate challenge. Authentication comes before
// content-type and JSON checks, so an unauthenticated caller learns nothing about the parser.
// A body with both "challenge" and "call" is refused (400): MiiTel sends the challenge only
// when an admin saves the webhook setting, with the admin's additional payload and never
// with a call, and answering either half would acknowledge the other without acting on it.
// The configured payload-credential keys are removed before anything is queued,
// matched or not (a rotated-out key is still a secret).
//
// Deduplication: each task's TaskID is a dedupe key, a hash over the route, call id, detail
// id, event kind and the canonical (key-sorted) content of the detail plus the queued
// additional-payload keys. MiiTel re-sends the last minutes of call history every 10 minutes;
// such a re-send is dropped while its task is still in the queue (asynq TaskID conflict) and,
// after the worker delivered it, for Queue.DedupeWindow through a small ledger key the worker
// writes (tasks.LedgerKey). A changed memo or the later minutes event hashes differently and
// is queued. A re-send whose earlier task sits in the dead letter (archived) replaces that
// task, so a legitimate re-send never vanishes. asynq's Retention is not used: it would keep
// every transcript in Redis for the whole window.
//
// A request with several details is enqueued detail by detail. If Redis fails part-way the
// answer is 503; MiiTel's re-send then finds the tasks already queued (duplicates) and queues
// the rest, so nothing is lost and nothing doubles.
package receiver
