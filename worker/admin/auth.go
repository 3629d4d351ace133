package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
)

// Role is what a credential may do.
type Role int

const (
	// NoRole: no valid credential.
	NoRole Role = iota
	// ReadOnly sees status, the dead letter and the queues.
	ReadOnly
	// ReadWrite also replays, backfills and acts on the queues.
	ReadWrite
)

func (r Role) String() string {
	switch r {
	case ReadOnly:
		return config.RoleReadOnly
	case ReadWrite:
		return config.RoleReadWrite
	}
	return "none"
}

// digest is a SHA-256 of a credential. Credentials are kept and compared only as digests, as
// the receiver does: the comparison is then over 32 bytes whatever was presented, so neither
// a secret's length nor a matching prefix shows in the time it takes.
type digest [sha256.Size]byte

type credential struct {
	d    digest
	role Role
}

// authenticator is config.Admin compiled.
type authenticator struct {
	bearer, basic []credential
}

func roleOf(s string) (Role, error) {
	switch s {
	case config.RoleReadOnly:
		return ReadOnly, nil
	case config.RoleReadWrite:
		return ReadWrite, nil
	}
	return NoRole, fmt.Errorf("role %q is not read_only or read_write", s)
}

func compileAuth(a config.Admin) (*authenticator, error) {
	var errs []error
	au := &authenticator{}
	for i, t := range a.Tokens {
		role, err := roleOf(t.Role)
		if err != nil {
			errs = append(errs, fmt.Errorf("admin.tokens[%d]: %w", i, err))
			continue
		}
		if t.Token.Value() == "" {
			errs = append(errs, fmt.Errorf("admin.tokens[%d].token is empty (unresolved secret?)", i))
			continue
		}
		au.bearer = append(au.bearer, credential{sha256.Sum256([]byte(t.Token.Value())), role})
	}
	for i, b := range a.Basic {
		role, err := roleOf(b.Role)
		if err != nil {
			errs = append(errs, fmt.Errorf("admin.basic[%d]: %w", i, err))
			continue
		}
		if b.Username == "" || strings.Contains(b.Username, ":") || b.Password.Value() == "" {
			errs = append(errs, fmt.Errorf("admin.basic[%d]: a username without ':' and a password are required", i))
			continue
		}
		au.basic = append(au.basic, credential{sha256.Sum256([]byte(b.Username + ":" + b.Password.Value())), role})
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("admin: %w", errors.Join(errs...))
	}
	return au, nil
}

// match compares d with every candidate without stopping at a match, so the time does not
// tell which (the old or the new credential during a rotation) matched, and returns the
// highest role matched.
func match(d digest, candidates []credential) Role {
	best := NoRole
	for _, c := range candidates {
		if subtle.ConstantTimeCompare(d[:], c.d[:]) == 1 && c.role > best {
			best = c.role
		}
	}
	return best
}

// authenticate returns the request's role; presented reports whether it carried a
// credential of a configured kind at all (401 without one, 403 with a wrong one).
func (a *authenticator) authenticate(r *http.Request) (role Role, presented bool) {
	for _, v := range r.Header.Values("Authorization") {
		scheme, cred, _ := strings.Cut(strings.TrimSpace(v), " ")
		cred = strings.TrimSpace(cred)
		switch {
		case strings.EqualFold(scheme, "Bearer"):
			presented = true
			role = max(role, match(sha256.Sum256([]byte(cred)), a.bearer))
		case strings.EqualFold(scheme, "Basic"):
			presented = true
			rr := http.Request{Header: http.Header{"Authorization": {"Basic " + cred}}}
			if u, p, ok := rr.BasicAuth(); ok {
				role = max(role, match(sha256.Sum256([]byte(u+":"+p)), a.basic))
			}
		}
	}
	return role, presented
}

// challenge is the WWW-Authenticate of a 401.
func (a *authenticator) challenge() []string {
	v := []string{`Bearer realm="miitel-crm-sync admin"`}
	if len(a.basic) > 0 {
		v = append(v, `Basic realm="miitel-crm-sync admin", charset="UTF-8"`)
	}
	return v
}
