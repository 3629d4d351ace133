package hubspot

import (
	"testing"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/doclinks"
)

// Every fix the connector prints points at a section of docs/crm-hubspot.md that exists.
func TestFixesPointAtExistingDocSections(t *testing.T) {
	doclinks.Check(t, "../../../docs/crm-hubspot.md", 4)
}
