package charttest

import (
	"flag"
	"fmt"
	"testing"
)

var dump = flag.String("dump", "", "print the chart rendered with this ci values file (\"default\" for none) and stop")

// TestDump is a developer aid: go test -run TestDump -dump default
func TestDump(t *testing.T) {
	if *dump == "" {
		t.Skip("-dump not given: nothing to print")
	}
	vals := readValues(t, map[string]string{"default": ""}[*dump])
	if *dump != "default" {
		vals = readValues(t, *dump)
	}
	rel, err := newInstall().Run(loadChart(t), vals)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println(rel.Manifest)
	for _, h := range rel.Hooks {
		fmt.Println("---\n# hook", h.Path, "\n"+h.Manifest)
	}
	fmt.Println("# NOTES\n" + rel.Info.Notes)
}
