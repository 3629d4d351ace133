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

// TestReceiverGCPercent: a receiver-only process under a memory limit collects at GOGC=400
// unless GOGC is set; without a limit, or with the worker's role, the runtime's stays.
func TestReceiverGCPercent(t *testing.T) {
	cases := []struct {
		name    string
		gogc    string
		role    config.Role
		limited bool
		want    int
		isSet   bool
	}{
		{"receiver under a limit", "", config.Role{Receiver: true}, true, 400, true},
		{"GOGC set", "100", config.Role{Receiver: true}, true, 0, false},
		{"no memory limit", "", config.Role{Receiver: true}, false, 0, false},
		{"worker", "", config.Role{Worker: true}, true, 0, false},
		{"serve", "", config.RoleAll, true, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(k string) string {
				if k == "GOGC" {
					return tc.gogc
				}
				return ""
			}
			got, ok := receiverGCPercent(getenv, tc.role, tc.limited)
			if got != tc.want || ok != tc.isSet {
				t.Errorf("receiverGCPercent = %d, %v; want %d, %v", got, ok, tc.want, tc.isSet)
			}
		})
	}
}
