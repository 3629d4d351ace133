package main

import "context"

// runOAuth and runReplay are replaced by oauth.go and replay.go.
func runOAuth(context.Context, *environment, []string) error  { return usagef("oauth: not built yet") }
func runReplay(context.Context, *environment, []string) error { return usagef("replay: not built yet") }
