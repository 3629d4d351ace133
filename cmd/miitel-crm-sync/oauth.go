package main

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/spf13/cobra"
	"golang.org/x/oauth2"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/hubspot"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce"
)

const oauthHelp = `Connects a CRM account once, for an admin, with the OAuth2 authorization-code flow, and
stores the refresh token in Redis, where every worker replica reads it (the config file
then needs no refresh_token).

  miitel-crm-sync oauth connect salesforce --config FILE --connection NAME
  miitel-crm-sync oauth connect hubspot    --config FILE --connection NAME

It listens for the redirect on the loopback address of the connection's redirect_url (or
--listen), prints the authorization URL to open in a browser, exchanges the code (with
PKCE where the CRM supports it) and stores the refresh token. Nothing secret is printed.
The connected app / HubSpot app must list the same redirect URL, e.g.
http://localhost:8976/callback.`

// oauthCallbackPage is what the admin's browser shows after the redirect.
const oauthCallbackPage = `<!doctype html><meta charset="utf-8"><title>miitel-crm-sync</title><p>%s</p>`

// oauthOptions are the flags of `oauth connect`.
type oauthOptions struct {
	env        *environment
	config     string
	connection string
	listen     string
	pkce       string
	timeout    time.Duration
	vendor     string
}

const oauthUsage = "want `oauth connect hubspot|salesforce`"

func newOAuthCmd(env *environment) *cobra.Command {
	cmd := groupCmd(env, "oauth", "Connect a CRM account with OAuth2 (authorization-code flow)", oauthHelp)
	cmd.Args = func(_ *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usagef("%s, got %q", oauthUsage, strings.Join(args, " "))
		}
		return nil
	}
	cmd.RunE = func(c *cobra.Command, _ []string) error {
		c.SetOut(env.stderr)
		_ = c.Help()
		return usagef("%s", oauthUsage)
	}
	o := &oauthOptions{env: env}
	connect := &cobra.Command{
		Use:       "connect hubspot|salesforce --config FILE [--connection NAME]",
		Short:     "Run the consent flow once and store the refresh token in Redis",
		Long:      oauthHelp,
		ValidArgs: []string{"hubspot", "salesforce"},
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 || (args[0] != "hubspot" && args[0] != "salesforce") {
				return usagef("%s, got %q", oauthUsage, strings.Join(append([]string{"connect"}, args...), " "))
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			o.vendor = args[0]
			return runOAuth(c.Context(), o)
		},
	}
	f := connect.Flags()
	configFlag(env, f, &o.config)
	f.StringVar(&o.connection, "connection", "", "the connection (connections[].name) to connect; may be omitted when only one has the CRM's type")
	f.StringVar(&o.listen, "listen", "", "loopback host:port for the redirect listener (port 0 picks one); the redirect URL is rebuilt from it. Default: the connection's redirect_url")
	f.StringVar(&o.pkce, "pkce", "auto", "PKCE S256: auto (on for Salesforce; off for HubSpot, which does not document it), on or off")
	f.DurationVar(&o.timeout, "timeout", 10*time.Minute, "how long to wait for the browser's redirect")
	_ = connect.RegisterFlagCompletionFunc("pkce", cobra.FixedCompletions([]string{"auto", "on", "off"}, cobra.ShellCompDirectiveNoFileComp))
	cmd.AddCommand(connect)
	return cmd
}

func runOAuth(ctx context.Context, o *oauthOptions) error {
	env, vendor := o.env, o.vendor
	usePKCE := vendor == "salesforce"
	switch o.pkce {
	case "auto":
	case "on":
		usePKCE = true
	case "off":
		usePKCE = false
	default:
		return usagef("--pkce must be auto, on or off")
	}

	// The worker's secrets (the app's client secret) and Redis's, not the webhook credentials.
	cfg, err := config.LoadFor(o.config, env.getenv, config.Role{Worker: true})
	if err != nil {
		return configError(err)
	}
	conn, err := pickConnection(cfg, vendor, o.connection)
	if err != nil {
		return err
	}
	oc, err := oauthConfig(conn)
	if err != nil {
		return err
	}
	rdb, err := dialRedis(cfg.Redis) // the refresh token goes into the Redis the workers use
	if err != nil {
		return err
	}
	defer rdb.Close()

	ln, redirect, err := redirectListener(oc.RedirectURL, o.listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	oc.RedirectURL = redirect.String()

	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	code, verifier, err := authorize(ctx, env, oc, ln, redirect.Path, usePKCE)
	if err != nil {
		return err
	}
	var exchangeOpts []oauth2.AuthCodeOption
	if usePKCE {
		exchangeOpts = append(exchangeOpts, oauth2.VerifierOption(verifier))
	}
	xctx := context.WithValue(ctx, oauth2.HTTPClient, &http.Client{Timeout: 30 * time.Second})
	tok, err := oc.Exchange(xctx, code, exchangeOpts...)
	if err != nil {
		return fmt.Errorf("exchange the authorization code: %w", err)
	}
	if tok.RefreshToken == "" {
		hint := "grant the app the refresh_token (offline_access) scope"
		if vendor == "hubspot" {
			hint = "check the app's scopes and that it is a public OAuth app"
		}
		return fmt.Errorf("%s sent no refresh token: %s", vendor, hint)
	}
	if err := crm.NewTokenStore(rdb, conn.Name).SaveRefreshToken(ctx, tok.RefreshToken); err != nil {
		return fmt.Errorf("store the refresh token: %w", err)
	}
	where := ""
	if inst, ok := tok.Extra("instance_url").(string); ok && inst != "" {
		where = " (" + inst + ")"
	}
	fmt.Fprintf(env.stdout, "\nConnected %s%s. The refresh token for connection %q is stored in Redis; the workers use it from their next request.\n", vendor, where, conn.Name)
	// Calls parked while the connection was broken wait minutes for their next attempt; run
	// them now. Other retrying calls only come forward, which the CRM upsert makes harmless.
	// The connection is fixed either way: a failure here only means they wait their turn.
	in := asynq.NewInspectorFromRedisClient(rdb)
	if queues, err := in.Queues(); err == nil && !slices.Contains(queues, cfg.Queue.Name) {
		return nil // no call was ever queued: none waits
	}
	switch n, err := in.RunAllRetryTasks(cfg.Queue.Name); {
	case err != nil:
		fmt.Fprintf(env.stdout, "Waiting calls could not be queued now (%v); they are delivered at their next attempt.\n", err)
	case n > 0:
		fmt.Fprintf(env.stdout, "%d waiting call(s) queued for delivery now.\n", n)
	}
	return nil
}

// pickConnection finds the connection to connect: by name, or the only one of the type.
func pickConnection(cfg *config.Config, vendor, name string) (*config.Connection, error) {
	var found []*config.Connection
	for i := range cfg.Connections {
		c := &cfg.Connections[i]
		if name != "" && c.Name == name {
			if c.Type != vendor {
				return nil, usagef("connection %q is of type %s, not %s", name, c.Type, vendor)
			}
			return c, nil
		}
		if name == "" && c.Type == vendor {
			found = append(found, c)
		}
	}
	switch {
	case name != "":
		return nil, usagef("no connection named %q in the config", name)
	case len(found) == 1:
		return found[0], nil
	case len(found) == 0:
		return nil, usagef("the config has no %s connection", vendor)
	}
	return nil, usagef("several %s connections: name one with --connection", vendor)
}

// oauthConfig is the authorization-code configuration of a connection, refusing the
// connections for which a stored refresh token would be unused.
func oauthConfig(c *config.Connection) (*oauth2.Config, error) {
	switch c.Type {
	case "salesforce":
		if c.Salesforce.Flow != salesforce.FlowRefreshToken {
			return nil, usagef("connection %q uses flow %s, which needs no connect step; set flow: refresh_token to use a stored refresh token", c.Name, c.Salesforce.Flow)
		}
		return salesforce.OAuthConfig(c.Salesforce), nil
	case "hubspot":
		if c.HubSpot.PrivateAppToken.Set() {
			return nil, usagef("connection %q uses a private-app token, which needs no connect step", c.Name)
		}
		if c.HubSpot.ClientID == "" || !c.HubSpot.ClientSecret.Set() {
			return nil, usagef("connection %q needs client_id and client_secret", c.Name)
		}
		return hubspot.OAuthConfig(c.HubSpot), nil
	}
	return nil, usagef("connection %q has type %s", c.Name, c.Type)
}

// redirectListener listens where the CRM will send the browser back. Only loopback
// addresses: the code arrives over plain HTTP and must not be reachable from elsewhere.
func redirectListener(configured, listen string) (net.Listener, *url.URL, error) {
	if configured == "" && listen == "" {
		return nil, nil, usagef("set redirect_url in the connection (e.g. http://localhost:8976/callback, as registered in the app) or pass --listen")
	}
	u := &url.URL{Scheme: "http", Path: "/callback"}
	if configured != "" {
		var err error
		if u, err = url.Parse(configured); err != nil || u.Scheme != "http" || u.Port() == "" {
			return nil, nil, usagef("redirect_url %q must be http://<loopback host>:<port>/<path>", configured)
		}
		if u.Path == "" {
			u.Path = "/"
		}
	}
	addr := listen
	if addr == "" {
		addr = u.Host
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, usagef("listen address %q: %v", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, nil, usagef("the redirect listener must be on a loopback address, not %q", host)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen for the redirect: %w", err)
	}
	if listen != "" {
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		u.Host = net.JoinHostPort(host, port)
	}
	return ln, u, nil
}

type callbackResult struct {
	code string
	err  error
}

// authorize prints the authorization URL and serves the redirect until it brings a code
// (or an error) with our state.
func authorize(ctx context.Context, env *environment, oc *oauth2.Config, ln net.Listener, path string, usePKCE bool) (code, verifier string, err error) {
	state := oauth2.GenerateVerifier() // 32 random bytes, as good a state as a verifier
	verifier = oauth2.GenerateVerifier()
	var opts []oauth2.AuthCodeOption
	if usePKCE {
		opts = append(opts, oauth2.S256ChallengeOption(verifier))
	}
	results := make(chan callbackResult, 1)
	mux := http.NewServeMux()
	mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(state)) != 1 {
			// Not the answer to our request (a stale tab, a forged link): keep waiting.
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, oauthCallbackPage, "This link does not belong to the running connect command.")
			return
		}
		var res callbackResult
		switch {
		case q.Get("error") != "":
			res.err = fmt.Errorf("authorization refused: %s: %s", q.Get("error"), q.Get("error_description"))
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, oauthCallbackPage, html.EscapeString(res.err.Error()))
		case q.Get("code") == "":
			res.err = errors.New("the redirect carried no code")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, oauthCallbackPage, "No authorization code arrived.")
		default:
			res.code = q.Get("code")
			fmt.Fprintf(w, oauthCallbackPage, "Connected. You can close this window and return to the terminal.")
		}
		select {
		case results <- res:
		default: // a second redirect after the first: ignore
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()

	fmt.Fprintf(env.stdout, "Open this URL in a browser, log in as the CRM user the integration acts for, and allow access:\n\n  %s\n\nWaiting for the redirect to %s ...\n",
		oc.AuthCodeURL(state, opts...), oc.RedirectURL)
	select {
	case res := <-results:
		return res.code, verifier, res.err
	case <-ctx.Done():
		return "", "", fmt.Errorf("no redirect arrived: %w", ctx.Err())
	}
}
