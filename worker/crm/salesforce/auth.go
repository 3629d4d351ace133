package salesforce

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"golang.org/x/oauth2/jwt"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
)

// The three server-side flows a connection may use (config salesforce.flow).
const (
	FlowClientCredentials = "client_credentials"
	FlowJWT               = "jwt"
	FlowRefreshToken      = "refresh_token"
)

// jwtLifetime is the exp of our JWT bearer assertions. Salesforce refuses an exp more than 3
// minutes away; 2 minutes leaves room for our clock running ahead of theirs.
const jwtLifetime = 2 * time.Minute

// Scopes asked for in the authorization-code flow: api for the REST API, refresh_token so
// Salesforce issues one.
var Scopes = []string{"api", "refresh_token"}

// TokenURL is the connection's token endpoint: token_url, else login_url +
// /services/oauth2/token. Client credentials need the My Domain host as login_url;
// login.salesforce.com does not serve that flow.
func TokenURL(sf *config.Salesforce) string {
	if sf.TokenURL != "" {
		return sf.TokenURL
	}
	return strings.TrimRight(sf.LoginURL, "/") + "/services/oauth2/token"
}

// AuthURL is the connection's authorize endpoint (authorization-code flow, `oauth connect`).
func AuthURL(sf *config.Salesforce) string {
	if sf.AuthURL != "" {
		return sf.AuthURL
	}
	return strings.TrimRight(sf.LoginURL, "/") + "/services/oauth2/authorize"
}

// OAuthConfig is the x/oauth2 configuration of the refresh-token and authorization-code
// flows. Salesforce documents the client credentials as form parameters, so they go in
// the body rather than x/oauth2 probing both styles.
func OAuthConfig(sf *config.Salesforce) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     sf.ClientID,
		ClientSecret: sf.ClientSecret.Value(),
		Endpoint:     oauth2.Endpoint{AuthURL: AuthURL(sf), TokenURL: TokenURL(sf), AuthStyle: oauth2.AuthStyleInParams},
		RedirectURL:  sf.RedirectURL,
		Scopes:       Scopes,
	}
}

// Fetcher returns the token fetch of the connection's flow for crm.SharedToken and whether
// it needs the stored refresh token. hc carries the token requests (nil: http.DefaultClient);
// it goes into the context x/oauth2 reads its client from.
func Fetcher(sf *config.Salesforce, hc *http.Client) (fetch crm.TokenFetcher, usesRefreshToken bool, err error) {
	withClient := func(ctx context.Context) context.Context {
		if hc == nil {
			return ctx
		}
		return context.WithValue(ctx, oauth2.HTTPClient, hc)
	}
	switch sf.Flow {
	case FlowClientCredentials:
		cc := &clientcredentials.Config{
			ClientID: sf.ClientID, ClientSecret: sf.ClientSecret.Value(),
			TokenURL: TokenURL(sf), AuthStyle: oauth2.AuthStyleInParams,
		}
		return crm.SourceGrant(func(ctx context.Context) oauth2.TokenSource {
			return cc.TokenSource(withClient(ctx))
		}), false, nil
	case FlowJWT:
		key := []byte(sf.PrivateKey.Value())
		if err := checkPrivateKey(key); err != nil {
			return nil, false, err
		}
		aud := sf.Audience
		if aud == "" {
			aud = strings.TrimRight(sf.LoginURL, "/")
		}
		jc := &jwt.Config{
			Email:      sf.ClientID, // iss: the connected app's consumer key
			Subject:    sf.Username, // sub: the user the integration acts as
			PrivateKey: key,
			TokenURL:   TokenURL(sf),
			Audience:   aud,
			Expires:    jwtLifetime,
		}
		return crm.SourceGrant(func(ctx context.Context) oauth2.TokenSource {
			return jc.TokenSource(withClient(ctx))
		}), false, nil
	case FlowRefreshToken:
		grant := crm.RefreshTokenGrant(OAuthConfig(sf))
		return func(ctx context.Context, refreshToken string) (*oauth2.Token, error) {
			return grant(withClient(ctx), refreshToken)
		}, true, nil
	}
	return nil, false, fmt.Errorf("salesforce: unknown flow %q (client_credentials, jwt or refresh_token)", sf.Flow)
}

// checkPrivateKey fails at start-up, not at the first call, when the JWT key is unusable.
// x/oauth2/jwt accepts PKCS#1 and PKCS#8 RSA keys in PEM; so does this check.
func checkPrivateKey(key []byte) error {
	block, _ := pem.Decode(key)
	if block == nil {
		return errors.New("salesforce: private_key is not PEM")
	}
	if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		return nil
	}
	if _, err := x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
		return fmt.Errorf("salesforce: private_key is neither a PKCS#8 nor a PKCS#1 RSA key: %w", err)
	}
	return nil
}

// credentials fingerprints what the connection authenticates with, so a broken mark
// recorded against old credentials is dropped when the admin fixes the config.
func credentials(sf *config.Salesforce) string {
	return strings.Join([]string{sf.Flow, TokenURL(sf), sf.ClientID, sf.ClientSecret.Value(), sf.Username, sf.PrivateKey.Value()}, "\x00")
}
