package receiver

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
)

// digest is a SHA-256 of a credential. Secrets are kept and compared only as digests: the
// comparison is then over 32 bytes whatever was presented, so neither the secret's length
// nor a matching prefix shows in the time it takes.
type digest [sha256.Size]byte

func digestOf(s string) digest { return sha256.Sum256([]byte(s)) }

// anyMatch compares d against every candidate without stopping at a match, so the time
// does not tell which candidate (old or new token during a rotation) matched.
func anyMatch(d digest, candidates []digest) bool {
	ok := 0
	for i := range candidates {
		ok |= subtle.ConstantTimeCompare(d[:], candidates[i][:])
	}
	return ok == 1
}

// authenticator is a route's compiled config.Auth.
type authenticator struct {
	insecure bool
	bearer   []digest
	basic    []digest            // digest of "user:password", as Basic carries it
	headers  map[string][]digest // canonical header name -> accepted values
	payload  map[string][]digest // top-level body key -> accepted values
	// payloadKeys are every configured payload-credential key, removed from what is queued
	// whether they matched or not (a rotated-out key is still a secret).
	payloadKeys []string
	allow       []netip.Prefix
}

func compileAuth(name string, a config.Auth) (*authenticator, []error) {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("route %q: "+format, append([]any{name}, args...)...))
	}
	au := &authenticator{insecure: a.Insecure, headers: map[string][]digest{}, payload: map[string][]digest{}}
	for i, s := range a.Bearer {
		if s.Value() == "" {
			bad("auth.bearer[%d] is empty (unresolved secret?)", i)
			continue
		}
		au.bearer = append(au.bearer, digestOf(s.Value()))
	}
	for i, b := range a.Basic {
		switch {
		case strings.Contains(b.Username, ":"):
			bad("auth.basic[%d].username must not contain ':'", i)
		case b.Password.Value() == "":
			bad("auth.basic[%d].password is empty (unresolved secret?)", i)
		default:
			au.basic = append(au.basic, digestOf(b.Username+":"+b.Password.Value()))
		}
	}
	for i, h := range a.Headers {
		n := http.CanonicalHeaderKey(strings.TrimSpace(h.Name))
		switch {
		case n == "":
			bad("auth.headers[%d].name is empty", i)
		case h.Value.Value() == "":
			bad("auth.headers[%d].value is empty (unresolved secret?)", i)
		default:
			au.headers[n] = append(au.headers[n], digestOf(h.Value.Value()))
		}
	}
	for i, p := range a.Payload {
		switch {
		case p.Key == "", p.Key == "call", p.Key == "challenge":
			bad("auth.payload[%d].key %q cannot carry a credential", i, p.Key)
		case p.Value.Value() == "":
			bad("auth.payload[%d].value is empty (unresolved secret?)", i)
		default:
			if _, seen := au.payload[p.Key]; !seen {
				au.payloadKeys = append(au.payloadKeys, p.Key)
			}
			au.payload[p.Key] = append(au.payload[p.Key], digestOf(p.Value.Value()))
		}
	}
	for i, c := range a.AllowCIDRs {
		p, err := parsePrefix(c)
		if err != nil {
			bad("auth.allow_cidrs[%d]: %v", i, err)
			continue
		}
		au.allow = append(au.allow, p)
	}
	if !au.insecure && len(au.bearer)+len(au.basic)+len(au.headers)+len(au.payload) == 0 && len(errs) == 0 {
		bad("no credentials configured: set auth.bearer, auth.basic, auth.headers or auth.payload (auth.insecure is for the embedded default only)")
	}
	return au, errs
}

// parsePrefix accepts a CIDR or a single address (as a /32 or /128).
func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR", s)
		}
		return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR", s)
	}
	return p.Masked(), nil
}

// needsBody reports whether the verdict may depend on the body (payload-key credentials).
func (a *authenticator) needsBody() bool { return len(a.payload) > 0 }

// ipAllowed checks the client IP (already resolved through trusted proxies) against the
// allowlist; an empty allowlist allows every source.
func (a *authenticator) ipAllowed(clientIP string) bool {
	if len(a.allow) == 0 {
		return true
	}
	ip, err := netip.ParseAddr(clientIP)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	for _, p := range a.allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// checkHeaders looks at Authorization (bearer, basic) and the configured header names.
// presented reports whether the request carried anything this route would look at.
func (a *authenticator) checkHeaders(h http.Header) (ok, presented bool) {
	if len(a.bearer)+len(a.basic) > 0 {
		for _, v := range h.Values("Authorization") {
			presented = true
			scheme, cred, _ := strings.Cut(strings.TrimSpace(v), " ")
			cred = strings.TrimSpace(cred)
			switch {
			case strings.EqualFold(scheme, "Bearer") && len(a.bearer) > 0:
				ok = anyMatch(digestOf(cred), a.bearer) || ok
			case strings.EqualFold(scheme, "Basic") && len(a.basic) > 0:
				if userPass, decoded := decodeBasic(cred); decoded {
					ok = anyMatch(digestOf(userPass), a.basic) || ok
				}
			}
		}
	}
	for name, accepted := range a.headers {
		for _, v := range h.Values(name) {
			presented = true
			ok = anyMatch(digestOf(v), accepted) || ok
		}
	}
	return ok, presented
}

// decodeBasic decodes the "user:password" of a Basic credential the way net/http does.
func decodeBasic(cred string) (string, bool) {
	r := http.Request{Header: http.Header{"Authorization": {"Basic " + cred}}}
	u, p, ok := r.BasicAuth()
	return u + ":" + p, ok
}

// checkPayload looks at the configured top-level body keys. A JSON string is compared
// unquoted; any other JSON value by its text, so {"key": 1234} matches a secret "1234".
func (a *authenticator) checkPayload(top *topLevel) (ok, presented bool) {
	for key, accepted := range a.payload {
		s, found := top.credential(key)
		if !found {
			continue
		}
		presented = true
		ok = anyMatch(digestOf(s), accepted) || ok
	}
	return ok, presented
}

// wwwAuthenticate lists the schemes a 401 invites the client to use.
func (a *authenticator) wwwAuthenticate() []string {
	var v []string
	if len(a.bearer) > 0 {
		v = append(v, `Bearer realm="miitel-crm-sync"`)
	}
	if len(a.basic) > 0 {
		v = append(v, `Basic realm="miitel-crm-sync", charset="UTF-8"`)
	}
	return v
}
