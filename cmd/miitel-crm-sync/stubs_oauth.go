package main

import "context"

// runOAuth is replaced by oauth.go.
func runOAuth(context.Context, *environment, []string) error { return usagef("oauth: not built yet") }
