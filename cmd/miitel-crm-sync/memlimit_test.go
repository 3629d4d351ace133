package main

import (
	"testing"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
)

// TestReceiverMemoryLimit: a receiver-only process without GOMEMLIMIT gets the in-flight
// budget plus headroom; GOMEMLIMIT (also "off"), the worker's role or serve's set none.
func TestReceiverMemoryLimit(t *testing.T) {
	srv := config.Server{MaxInflightBytes: 64 << 20}
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "GOMEMLIMIT" {
				return v
			}
			return ""
		}
	}
	cases := []struct {
		name  string
		env   string
		role  config.Role
		want  int64
		isSet bool
	}{
		{"receiver", "", config.Role{Receiver: true}, 96 << 20, true},
		{"GOMEMLIMIT set", "200MiB", config.Role{Receiver: true}, 0, false},
		{"GOMEMLIMIT off", "off", config.Role{Receiver: true}, 0, false},
		{"worker", "", config.Role{Worker: true}, 0, false},
		{"serve", "", config.RoleAll, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := receiverMemoryLimit(env(tc.env), tc.role, srv)
			if got != tc.want || ok != tc.isSet {
				t.Errorf("receiverMemoryLimit = %d, %v; want %d, %v", got, ok, tc.want, tc.isSet)
			}
		})
	}
}
