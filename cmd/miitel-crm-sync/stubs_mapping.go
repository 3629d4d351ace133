package main

import "context"

// runMapping is replaced by the mapping subcommand (mapping.go).
func runMapping(context.Context, *environment, []string) error {
	return usagef("mapping: not built yet")
}
