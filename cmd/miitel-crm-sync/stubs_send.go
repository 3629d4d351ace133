package main

import "context"

// runSend is replaced by the send subcommand (send.go).
func runSend(context.Context, *environment, []string) error { return usagef("send: not built yet") }
