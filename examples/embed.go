// Package examples ships the example files with the binary: the default mappings that a
// route without a mapping file uses, and that `miitel-crm-sync mapping example` prints for an
// admin to start from.
package examples

import "embed"

// Mappings holds mappings/hubspot.yaml and mappings/salesforce.yaml.
//
//go:embed mappings/*.yaml
var Mappings embed.FS
