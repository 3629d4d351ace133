package charttest

import (
	"flag"
	"fmt"
	"testing"

	"helm.sh/helm/v3/pkg/action"
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
	inst := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	inst.DryRun, inst.ClientOnly, inst.Replace = true, true, true
	inst.ReleaseName, inst.Namespace, inst.KubeVersion = releaseName, namespace, kubeVersion
	rel, err := inst.Run(loadChart(t), vals)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println(rel.Manifest)
	for _, h := range rel.Hooks {
		fmt.Println("---\n# hook", h.Path, "\n"+h.Manifest)
	}
	fmt.Println("# NOTES\n" + rel.Info.Notes)
}
