package main

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/hubspot/hubspotfake"
)

const hubspotGuide = "../../docs/crm-hubspot.md"

// guideBlocks returns the fenced blocks of docs/crm-hubspot.md with their language.
func guideBlocks(t *testing.T) (lang, text []string) {
	t.Helper()
	b, err := os.ReadFile(hubspotGuide)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile("(?s)```([a-z]*)\n(.*?)```").FindAllStringSubmatch(string(b), -1) {
		lang, text = append(lang, m[1]), append(text, m[2])
	}
	return lang, text
}

// block returns the first block of lang holding every one of has.
func block(t *testing.T, lang, text []string, want string, has ...string) string {
	t.Helper()
next:
	for i := range text {
		if lang[i] != want {
			continue
		}
		for _, h := range has {
			if !strings.Contains(text[i], h) {
				continue next
			}
		}
		return text[i]
	}
	t.Fatalf("%s has no %s block with %q", hubspotGuide, want, has)
	return ""
}

// hubspotKeys returns the lines under `hubspot:` of a guide block, comments dropped.
func hubspotKeys(yaml string) string {
	var out strings.Builder
	in := false
	for _, l := range strings.Split(yaml, "\n") {
		switch {
		case strings.TrimSpace(l) == "hubspot:":
			in = true
		case in && strings.HasPrefix(l, "      ") && !strings.HasPrefix(strings.TrimSpace(l), "#"):
			out.WriteString(l + "\n")
		case in && strings.TrimSpace(l) != "" && !strings.HasPrefix(l, "      "):
			in = false
		}
	}
	return out.String()
}

// A new user follows docs/crm-hubspot.md literally, as a private app and as an OAuth app,
// with and without the unique property: `check` passes and the first attempt delivers every
// call, once. Only what stands for HubSpot itself differs: base_url and token_url name the
// fake, the OAuth client id is the fake app's, and the refresh token is given in the config
// (the guide's alternative to `oauth connect`).
func TestGuideHubSpotSyncsOnFirstTry(t *testing.T) {
	lang, text := guideBlocks(t)
	private := hubspotKeys(block(t, lang, text, "yaml", "connections:", "private_app_token:"))
	oauth := hubspotKeys(block(t, lang, text, "yaml", "connections:", "client_id:"))
	unique := hubspotKeys(block(t, lang, text, "yaml", "unique_property:"))
	var prop struct {
		Name           string `json:"name"`
		HasUniqueValue bool   `json:"hasUniqueValue"`
	}
	create := block(t, lang, text, "", "POST /crm/v3/properties/calls")
	if err := json.Unmarshal([]byte(create[strings.Index(create, "{"):]), &prop); err != nil || !prop.HasUniqueValue {
		t.Fatalf("the guide's property body %q: %v, hasUniqueValue %v", create, err, prop.HasUniqueValue)
	}
	if !strings.Contains(unique, "unique_property: "+prop.Name) {
		t.Fatalf("the guide creates %s but configures %q", prop.Name, unique)
	}
	for _, app := range []string{"private app", "oauth app"} {
		for _, withUnique := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, unique property %v", app, withUnique), func(t *testing.T) {
				t.Parallel()
				s := newStack(t, stackOptions{})
				lines := private
				if app == "oauth app" {
					s.env["HUBSPOT_REFRESH_TOKEN"] = s.hs.IssueRefreshToken()
					lines = regexp.MustCompile(`client_id: .*`).ReplaceAllString(oauth, "client_id: client-id") +
						fmt.Sprintf("      token_url: %q\n      refresh_token: {env: HUBSPOT_REFRESH_TOKEN}\n", s.hs.TokenURL())
				}
				if withUnique {
					s.hs.DefineCallProperty(prop.Name, prop.HasUniqueValue) // as the guide's POST creates it
					lines += unique
				}
				s.setHubSpot(t, lines)
				code, out, stderr := runCLI(t, s.getenv, "check", "--config", s.cfgPath)
				if code != 0 || strings.Contains(out, "unknown  hs") {
					t.Fatalf("check = %d:\n%s%s", code, out, stderr)
				}
				s.start(t, "serve")
				for _, name := range samplePayloads {
					s.post(t, hubspotRoute, readSample(t, name))
				}
				s.waitDelivered(t)
				if n := s.metric(t, "mcs_worker_tasks_total", map[string]string{"outcome": "retry"}); n != 0 {
					t.Errorf("%v attempts retried, want every call delivered on its first", n)
				}
				details := s.hubspotDetails()
				for _, w := range sampleCalls {
					if details[w.detail] != 1 {
						t.Errorf("detail %s: %d calls, want 1", w.detail, details[w.detail])
					}
				}
			})
		}
	}
}

// The check section shows what `check` prints for the guide's connection, exactly.
func TestGuideHubSpotCheckOutput(t *testing.T) {
	lang, text := guideBlocks(t)
	cfgBlock := block(t, lang, text, "yaml", "check:", "owner_email:")
	want := block(t, lang, text, "", "4 passed, 0 failed")
	wantFail := block(t, lang, text, "", "2 passed, 2 failed")
	email := regexp.MustCompile(`owner_email: (\S+)`).FindStringSubmatch(cfgBlock)[1]
	for _, tt := range []struct {
		ready bool
		want  string
		code  int
	}{{true, want, 0}, {false, wantFail, 1}} {
		f := hubspotfake.New(t, hubspotfake.Options{})
		f.AddPrivateAppToken(hubspotPrivateToken)
		if tt.ready {
			f.AddOwner(email)
			f.DefineCallProperty("miitel_detail_id", true)
		}
		conn := strings.Replace(cfgBlock, "hubspot: {", fmt.Sprintf("hubspot: {base_url: %q, ", f.URL), 1)
		cfg := writeConfig(t, "routes: [{name: sales, connection: hubspot-main, auth: {bearer: [{env: MIITEL_TOKEN}]}}]\n"+conn)
		getenv := envOf(map[string]string{"HUBSPOT_TOKEN": hubspotPrivateToken, "MIITEL_TOKEN": miitelToken})
		code, out, stderr := runCLI(t, getenv, "check", "--config", cfg)
		if code != tt.code || out != tt.want {
			t.Errorf("check = %d, want %d; output differs from %s:\n--- guide\n%s--- check\n%s%s", code, tt.code, hubspotGuide, tt.want, out, stderr)
		}
	}
}
