package mc_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"log/slog"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
)

func TestCanTransition(t *testing.T) {
	allowed := map[[2]mc.State]bool{}
	for from, to := range map[mc.State]mc.State{mc.StatePending: mc.StateStarting, mc.StateStarting: mc.StateReady,
		mc.StateReady: mc.StateCapturing, mc.StateCapturing: mc.StateCompleted} {
		allowed[[2]mc.State{from, to}] = true
	}
	for _, from := range mc.States {
		if from.Final() {
			continue
		}
		for _, to := range []mc.State{mc.StateFailed, mc.StateCancelled, mc.StateExpired} {
			allowed[[2]mc.State{from, to}] = true
		}
	}
	for _, from := range append(mc.States, "bogus", "") {
		for _, to := range append(mc.States, "bogus", "") {
			if got, want := mc.CanTransition(from, to), allowed[[2]mc.State{from, to}]; got != want {
				t.Errorf("CanTransition(%q, %q) = %v, want %v", from, to, got, want)
			}
		}
	}
}

func TestStates(t *testing.T) {
	final := map[mc.State]bool{mc.StateCompleted: true, mc.StateFailed: true, mc.StateCancelled: true, mc.StateExpired: true}
	for _, s := range mc.States {
		if s.Final() != final[s] || s.Active() == final[s] || !s.Valid() {
			t.Errorf("%s: final %v active %v valid %v", s, s.Final(), s.Active(), s.Valid())
		}
	}
	if mc.State("bogus").Valid() || mc.State("bogus").Active() {
		t.Error("bogus state counts as valid or active")
	}
}

func TestIDs(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := mc.NewID()
		if !mc.ValidID(id) || seen[id] {
			t.Fatalf("NewID() = %q: valid %v, repeated %v", id, mc.ValidID(id), seen[id])
		}
		seen[id] = true
	}
	for _, bad := range []string{"", "short", strings.Repeat("a", 23), strings.Repeat("a", 21) + "/", "../../../etc/passwd___"} {
		if mc.ValidID(bad) {
			t.Errorf("ValidID(%q) = true", bad)
		}
	}
}

func TestSecretNeverShows(t *testing.T) {
	const value = "hunter2-very-secret"
	s := mc.SecretOf(value)
	spec := mc.MachineSpec{ID: "x", Secrets: mc.MachineSecrets{VNCPassword: s, AgentToken: s}}
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	log.Info("dump", "secret", s, "spec", spec, "secrets", spec.Secrets)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("dump", "secret", s, "spec", spec)
	js, _ := json.Marshal(struct {
		S    mc.Secret
		Spec mc.MachineSpec
	}{s, spec})
	for name, out := range map[string]string{
		"%v": fmt.Sprintf("%v", s), "%+v": fmt.Sprintf("%+v", spec), "%#v": fmt.Sprintf("%#v", spec),
		"String": s.String(), "slog": logs.String(), "json": string(js),
	} {
		if strings.Contains(out, value) {
			t.Errorf("%s shows the secret: %s", name, out)
		}
	}
	if s.Reveal() != value {
		t.Error("Reveal lost the value")
	}
	if !strings.Contains(logs.String(), mc.Redacted) {
		t.Error("the log does not say REDACTED")
	}
}

func TestErrors(t *testing.T) {
	cause := errors.New("disk on fire at /var/lib/x")
	e := &mc.Error{Code: mc.ECONFLICT, Reason: "stale", Message: "try again", Err: cause}
	wrapped := fmt.Errorf("transition: %w", e)
	if mc.ErrorCode(wrapped) != mc.ECONFLICT || mc.ErrorReason(wrapped) != "stale" || mc.ErrorMessage(wrapped) != "try again" {
		t.Errorf("code %s reason %s message %s", mc.ErrorCode(wrapped), mc.ErrorReason(wrapped), mc.ErrorMessage(wrapped))
	}
	if !errors.Is(wrapped, cause) {
		t.Error("cause not unwrapped")
	}
	if mc.ErrorCode(cause) != mc.EINTERNAL || mc.ErrorMessage(cause) != "internal error" || strings.Contains(mc.ErrorMessage(cause), "fire") {
		t.Error("a plain error must be internal and never shown")
	}
	internal := &mc.Error{Code: mc.EINTERNAL, Message: "db path /var/lib/x broke"}
	if mc.ErrorMessage(internal) != "internal error" {
		t.Error("an internal error's message leaked")
	}
	if mc.ErrorCode(nil) != "" || mc.ErrorReason(nil) != "" {
		t.Error("nil error has a code")
	}
}

func TestSessionJSONShape(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	b, _ := json.Marshal(mc.Session{ID: "id", UserID: "u", Provider: "demo", State: mc.StatePending, CreatedAt: now})
	for _, key := range []string{`"id"`, `"user_id"`, `"provider"`, `"state"`, `"machine"`, `"created_at"`, `"expires_at"`, `"version"`} {
		if !bytes.Contains(b, []byte(key)) {
			t.Errorf("JSON lacks %s: %s", key, b)
		}
	}
	for _, key := range []string{`"ready_at"`, `"ended_at"`, `"reason"`, `"Secrets"`, `"secrets"`, `"vnc_password"`} {
		if bytes.Contains(b, []byte(key)) {
			t.Errorf("JSON has %s: %s", key, b)
		}
	}
}

// TestImportsPointInward checks the layering: the root package imports
// nothing of the module, and adapters never import each other; only app/,
// cmd/ and tests wire them together.
func TestImportsPointInward(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "./...").Output()
	if err != nil {
		// Without the import graph the layering is unchecked: that is a
		// failure, not a skip.
		var stderr []byte
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			stderr = ee.Stderr
		}
		t.Fatalf("go list: %v: %s", err, stderr)
	}
	const mod = "github.com/master-controller/mc"
	adapters := map[string]bool{}
	for _, a := range []string{"sqlite", "postgres", "driver/local", "driver/drivertest", "driver/fake", "gateway", "agent", "vault",
		"httpapi", "web", "session", "provider", "webhook", "netpool"} {
		adapters[mod+"/"+a] = true
	}
	// Small shared libraries any adapter may use.
	// agentproto is the one definition of the agent's API (agent, session, fake driver).
	shared := map[string]bool{mod: true, mod + "/rfb": true, mod + "/rfb/rfbtest": true, mod + "/token": true, mod + "/internal/storekit": true,
		mod + "/internal/sqlstore": true, mod + "/internal/procfs": true, mod + "/internal/wsproto": true,
		mod + "/internal/jsonkey": true, mod + "/internal/atomicfile": true, mod + "/internal/confine": true, mod + "/agentproto": true,
		mod + "/internal/httprec": true}
	// Pairs allowed besides: the local driver builds on netpool, and the
	// driver conformance suite polls with the tests' one poll helper.
	allowed := map[[2]string]bool{
		{mod + "/driver/local", mod + "/netpool"}:                true,
		{mod + "/driver/drivertest", mod + "/internal/testutil"}: true,
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkg, imports := f[0], f[1:]
		for _, imp := range imports {
			if !strings.HasPrefix(imp, mod) {
				continue
			}
			switch {
			case pkg == mod:
				t.Errorf("the root package imports %s", imp)
			case adapters[pkg] && !shared[imp] && !allowed[[2]string{pkg, imp}]:
				t.Errorf("adapter %s imports %s", strings.TrimPrefix(pkg, mod+"/"), strings.TrimPrefix(imp, mod+"/"))
			}
		}
	}
}

func TestProviderMeta(t *testing.T) {
	p := mc.Provider{Kind: mc.KindOAuth, Files: []mc.CredentialFile{
		{Path: "~/.claude/.credentials.json", ExpiresKey: "claudeAiOauth.expiresAt", RefreshExpiresKey: "claudeAiOauth.refreshTokenExpiresAt"},
		{Path: "~/other.json", ExpiresKey: "exp"},
	}}
	got := p.Meta(map[string]string{
		"~/.claude/.credentials.json": `{"claudeAiOauth":{"accessToken":"secret","expiresAt":1767225600000,"refreshTokenExpiresAt":"2026-06-01T00:00:00Z"}}`,
		"~/other.json":                `not json`,
	})
	want := mc.CredentialMeta{Kind: mc.KindOAuth, ExpiresAt: time.UnixMilli(1767225600000).UTC(),
		RefreshExpiresAt: time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)}
	if got != want {
		t.Errorf("Meta = %+v, want %+v", got, want)
	}
	if s := (mc.Provider{}).Meta(nil); s != (mc.CredentialMeta{}) {
		t.Errorf("no files: %+v, want nothing", s)
	}
	if m := (mc.Provider{Files: []mc.CredentialFile{{Path: "a", ExpiresKey: "e"}}}).Meta(map[string]string{"a": `{"e":1767225600}`}); !m.ExpiresAt.Equal(time.Unix(1767225600, 0)) {
		t.Errorf("epoch seconds: %v", m.ExpiresAt)
	}
	jwt := func(payload string) string {
		return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + ".c2ln"
	}
	codex := mc.Provider{Files: []mc.CredentialFile{{Path: "a", ExpiresKey: "tokens.access_token"}}}
	for _, c := range []struct {
		token string
		want  time.Time
	}{
		{jwt(`{"exp":1767225600,"sub":"u"}`), time.Unix(1767225600, 0).UTC()},
		{jwt(`{"sub":"u"}`), time.Time{}},
		{jwt(`not json`), time.Time{}},
		{"at-opaque", time.Time{}},
		{"a.!!.c", time.Time{}},
	} {
		doc, _ := json.Marshal(map[string]any{"tokens": map[string]string{"access_token": c.token}})
		if m := codex.Meta(map[string]string{"a": string(doc)}); !m.ExpiresAt.Equal(c.want) {
			t.Errorf("JWT %q: expires %v, want %v", c.token, m.ExpiresAt, c.want)
		}
	}
}

// TestReasonsOnce checks that reason.go spells each reason code once, in
// snake case: one code, one constant.
func TestReasonsOnce(t *testing.T) {
	t.Parallel()
	f, err := parser.ParseFile(token.NewFileSet(), "reason.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	snake := regexp.MustCompile(`^[a-z]+(_[a-z]+)*$`)
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			for i, v := range vs.Values {
				lit, ok := v.(*ast.BasicLit)
				if !ok {
					continue
				}
				code, _ := strconv.Unquote(lit.Value)
				name := vs.Names[i].Name
				if !snake.MatchString(code) {
					t.Errorf("%s = %q, want snake case", name, code)
				}
				if other, dup := seen[code]; dup {
					t.Errorf("%s and %s are both %q", other, name, code)
				}
				seen[code] = name
			}
		}
	}
	if len(seen) < 100 {
		t.Errorf("reason.go holds %d reasons, want them all (over 100)", len(seen))
	}
}
