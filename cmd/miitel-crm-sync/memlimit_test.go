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

// TestReceiverGCPercent: a receiver-only process under a memory limit (its own default or a
// set GOMEMLIMIT) collects at GOGC=400 unless GOGC is set; with GOMEMLIMIT=off, or with the
// worker's role, the runtime's stays.
func TestReceiverGCPercent(t *testing.T) {
	srv := config.Server{MaxInflightBytes: 64 << 20}
	cases := []struct {
		name  string
		env   map[string]string
		role  config.Role
		srv   config.Server
		want  int
		isSet bool
	}{
		{"receiver under its own limit", nil, config.Role{Receiver: true}, srv, 400, true},
		{"receiver under GOMEMLIMIT", map[string]string{"GOMEMLIMIT": "256MiB"}, config.Role{Receiver: true}, srv, 400, true},
		{"no in-flight budget, GOMEMLIMIT set", map[string]string{"GOMEMLIMIT": "256MiB"}, config.Role{Receiver: true}, config.Server{}, 400, true},
		{"no limit at all", nil, config.Role{Receiver: true}, config.Server{}, 0, false},
		{"GOMEMLIMIT off", map[string]string{"GOMEMLIMIT": "off"}, config.Role{Receiver: true}, srv, 0, false},
		{"GOGC set", map[string]string{"GOGC": "100"}, config.Role{Receiver: true}, srv, 0, false},
		{"worker", nil, config.Role{Worker: true}, srv, 0, false},
		{"serve", map[string]string{"GOMEMLIMIT": "256MiB"}, config.RoleAll, srv, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := receiverGCPercent(func(k string) string { return tc.env[k] }, tc.role, tc.srv)
			if got != tc.want || ok != tc.isSet {
				t.Errorf("receiverGCPercent = %d, %v; want %d, %v", got, ok, tc.want, tc.isSet)
			}
		})
	}
}
