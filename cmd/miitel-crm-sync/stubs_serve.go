package main

import "context"

func runServe(context.Context, *environment, []string) error { return usagef("serve: not built yet") }
func runReceiver(context.Context, *environment, []string) error {
	return usagef("receiver: not built yet")
}
func runWorker(context.Context, *environment, []string) error { return usagef("worker: not built yet") }
func runConfig(context.Context, *environment, []string) error { return usagef("config: not built yet") }
