// Package charttest holds the deployment tests: the Helm chart in ../miitel-crm-sync is
// linted, rendered with Helm's own Go library, and every rendered object is decoded strictly
// into the Kubernetes API types; the Dockerfile is checked against the Makefile and go.mod.
//
// It is a separate Go module so that Helm's and k8s.io's heavy dependencies stay out of the
// service's go.mod. Run it with `make test-chart` or `cd charts/test && go test ./...`.
package charttest
