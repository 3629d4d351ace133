// Package examples ships the example files with the binary: the default mappings that a
// route without a mapping file uses, and that `miitel-crm-sync mapping example` prints for an
// admin to start from, and MiiTel's sample payloads (see payloads/README.md), which tests,
// benchmarks and `send` read.
package examples

import (
	"embed"
	"io/fs"
	"path"
)

// Mappings holds mappings/hubspot.yaml and mappings/salesforce.yaml.
//
//go:embed mappings/*.yaml
var Mappings embed.FS

// payloads holds the JSON files under payloads/ (not its README: the image build context
// leaves Markdown out).
//
//go:embed payloads/*.json payloads/*/*.json
var payloads embed.FS

// Payload returns the payload file name (relative to payloads/, e.g.
// "call_analysis_completed/seed_sample.json").
func Payload(name string) ([]byte, error) {
	return fs.ReadFile(payloads, path.Join("payloads", name))
}

// Payloads is the payloads/ tree, for walking every sample.
func Payloads() fs.FS {
	sub, _ := fs.Sub(payloads, "payloads") // only fails for an invalid path
	return sub
}
