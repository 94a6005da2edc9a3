package e2e_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"html"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/master-controller/mc/internal/testutil"
)

// standIn is a TLS stand-in of the providers' sign-in and token endpoints,
// for tests only: a CA made by the test, one certificate for every provider
// host, reached by the providers' real host names through the machine's
// test hosts file, trusted by the CLI through SSL_CERT_FILE or
// NODE_EXTRA_CA_CERTS and by the machine's Chromium through the test-only
// SPKI flag. Its authorize page is one big "Authorize" button; its token
// endpoints check PKCE and redirect_uri as the providers do and answer in
// each provider's shape.
type standIn struct {
	tb     testing.TB
	caFile string // PEM of the test CA, readable by the machine
	spki   string // base64 SHA-256 of the leaf's public key
	tlsCfg *tls.Config

	mu     sync.Mutex
	grants map[string]grant // by code
	log    []string         // requests, "host path"
	// redirects are the redirect_uri of every code redeemed.
	redirects []string
}

// grant is an authorization code's binding.
type grant struct {
	challenge, redirect, clientID string
}

// providerHosts are the names the CLIs and the sign-in pages use.
var providerHosts = []string{"claude.ai", "claude.com", "platform.claude.com", "api.anthropic.com", "auth.openai.com",
	"accounts.google.com", "oauth2.googleapis.com", "www.googleapis.com", "cloudcode-pa.googleapis.com", "codeassist.google.com"}

func newStandIn(tb testing.TB, dir string) *standIn {
	tb.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mc e2e test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "stand-in provider"},
		DNSNames: providerHosts, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(leafDER)
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	s := &standIn{tb: tb, caFile: filepath.Join(dir, "test-ca.pem"), spki: base64.StdEncoding.EncodeToString(sum[:]),
		grants: map[string]grant{}}
	if err := os.WriteFile(s.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		tb.Fatal(err)
	}
	s.tlsCfg = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER, caDER}, PrivateKey: leafKey, Leaf: leaf}},
		NextProtos: []string{"http/1.1"}}
	return s
}

// hostsFile writes the machines' test hosts file: every provider host on
// the machine's own loopback, where serveIn listens.
func (s *standIn) hostsFile(dir string) string {
	var b strings.Builder
	b.WriteString("127.0.0.1 localhost\n::1 localhost\n")
	for _, h := range providerHosts {
		fmt.Fprintf(&b, "127.0.0.1 %s\n", h)
	}
	path := filepath.Join(dir, "test-hosts")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		s.tb.Fatal(err)
	}
	return path
}

// serveIn serves the stand-in on port 443 inside the network namespace at
// nsPath (a machine's, /proc/<its agent's pid>/ns/net): the listening socket
// is made on a thread that has entered the namespace, and it stays there.
func (s *standIn) serveIn(nsPath string) {
	s.tb.Helper()
	// The agent's process enters its namespace just after it starts (ip
	// netns exec): until then nsPath is the host's, where the stand-in must
	// never listen.
	testutil.WaitFor(s.tb, 30*time.Second, "the machine's own network namespace", func() error {
		return otherNetns(nsPath)
	})
	ln, err := listenInNetns(nsPath, "tcp4", "0.0.0.0:443")
	if err != nil {
		s.tb.Fatalf("stand-in provider: %v", err)
	}
	srv := &http.Server{Handler: s, TLSConfig: s.tlsCfg, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: nil}
	go func() { _ = srv.Serve(tls.NewListener(ln, s.tlsCfg)) }()
	s.tb.Cleanup(func() { _ = srv.Close() })
}

// hostNetns is the host's network namespace, read once before any test
// starts a machine: /proc/self/ns/net would be this process's main
// thread's, which the in-process controller may have inside a machine's
// namespace for a moment while it starts a machine from it.
var hostNetns, hostNetnsErr = func() (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Stat("/proc/thread-self/ns/net", &st)
	return st, err
}()

// otherNetns says whether nsPath is a network namespace other than the
// host's.
func otherNetns(nsPath string) error {
	if hostNetnsErr != nil {
		return hostNetnsErr
	}
	own := hostNetns
	var other unix.Stat_t
	if err := unix.Stat(nsPath, &other); err != nil {
		return err
	}
	if own.Ino == other.Ino && own.Dev == other.Dev {
		return fmt.Errorf("%s is still the host's network namespace", nsPath)
	}
	return nil
}

// listenInNetns opens a listener inside the network namespace at nsPath.
func listenInNetns(nsPath, network, addr string) (net.Listener, error) {
	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer unix.Close(orig)
	target, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("enter netns %s: %w", nsPath, err)
	}
	if err := otherNetns("/proc/thread-self/ns/net"); err != nil {
		_ = unix.Setns(orig, unix.CLONE_NEWNET)
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("enter netns %s: %w", nsPath, err)
	}
	ln, lerr := net.Listen(network, addr)
	if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
		// The thread stays locked and dies with its goroutine: it must not
		// serve anything else from inside the machine's namespace.
		return ln, fmt.Errorf("leave netns %s: %w", nsPath, err)
	}
	runtime.UnlockOSThread()
	return ln, lerr
}

// requests returns what the stand-in was asked, "host path" each.
func (s *standIn) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.log...)
}

// redeemed returns the redirect_uri of every code redeemed.
func (s *standIn) redeemed() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.redirects...)
}

// ServeHTTP routes by host and path.
func (s *standIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host, _, _ := strings.Cut(r.Host, ":")
	s.mu.Lock()
	entry := host + " " + r.Method + " " + r.URL.Path
	if r.URL.Path == "/o/oauth2/v2/auth" || strings.HasSuffix(r.URL.Path, "/authorize") {
		var keys []string
		for k := range r.URL.Query() {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		entry += " " + strings.Join(keys, ",")
	}
	s.log = append(s.log, entry)
	s.mu.Unlock()
	switch {
	case host == "auth.openai.com" && r.URL.Path == "/oauth/authorize",
		host == "claude.com" && r.URL.Path == "/cai/oauth/authorize",
		host == "claude.ai" && r.URL.Path == "/oauth/authorize",
		host == "accounts.google.com" && r.URL.Path == "/o/oauth2/v2/auth":
		s.authorizePage(w, r)
	case host == "oauth2.googleapis.com" && r.URL.Path == "/token":
		s.googleToken(w, r)
	case host == "www.googleapis.com" && r.URL.Path == "/oauth2/v2/userinfo":
		writeJSON(w, http.StatusOK, map[string]any{"id": "1234567890", "email": "e2e@example.com", "verified_email": true,
			"name": "E2E Test", "picture": "https://www.googleapis.com/e2e.png"})
	case host == "cloudcode-pa.googleapis.com" && strings.HasSuffix(r.URL.Path, ":loadCodeAssist"):
		tier := map[string]any{"id": "free-tier", "name": "Gemini Code Assist for individuals", "description": "e2e",
			"userDefinedCloudaicompanionProject": false}
		writeJSON(w, http.StatusOK, map[string]any{"currentTier": tier, "allowedTiers": []any{tier},
			"cloudaicompanionProject": "e2e-project"})
	case host == "cloudcode-pa.googleapis.com" && strings.HasSuffix(r.URL.Path, ":listExperiments"):
		writeJSON(w, http.StatusOK, map[string]any{"experimentIds": []int{}, "flags": []any{}})
	case host == "cloudcode-pa.googleapis.com" && strings.HasSuffix(r.URL.Path, ":retrieveUserQuota"):
		writeJSON(w, http.StatusOK, map[string]any{"buckets": []any{}})
	case host == "platform.claude.com" && r.URL.Path == "/oauth/code/callback",
		host == "codeassist.google.com" && r.URL.Path == "/authcode":
		// A provider's page that shows the code to paste into the CLI.
		fmt.Fprintf(w, "<!doctype html><title>Your code</title><p>Paste this code into the CLI: <code>%s</code></p>",
			html.EscapeString(r.URL.Query().Get("code")))
	case r.URL.Path == "/approve" && r.Method == http.MethodPost:
		s.approve(w, r)
	case host == "auth.openai.com" && r.URL.Path == "/oauth/token":
		s.codexToken(w, r)
	case host == "platform.claude.com" && r.URL.Path == "/v1/oauth/token":
		s.claudeToken(w, r)
	case host == "platform.claude.com" && r.URL.Path == "/oauth/code/success":
		fmt.Fprint(w, "<!doctype html><title>Signed in</title><h1>Signed in to Claude Code</h1>")
	case host == "api.anthropic.com" && r.URL.Path == "/api/oauth/profile":
		writeJSON(w, http.StatusOK, map[string]any{
			"account": map[string]any{"uuid": "11111111-1111-4111-8111-111111111111", "email": "e2e@example.com",
				"email_address": "e2e@example.com", "display_name": "E2E", "full_name": "E2E Test",
				"has_claude_max": false, "has_claude_pro": true},
			"organization": map[string]any{"uuid": "22222222-2222-4222-8222-222222222222", "name": "E2E",
				"organization_type": "claude_pro", "billing_type": "stripe_subscription", "rate_limit_tier": "default_claude_ai"},
		})
	case host == "api.anthropic.com" && r.URL.Path == "/api/oauth/claude_cli/roles":
		writeJSON(w, http.StatusOK, map[string]any{"organization_role": "admin", "workspace_role": nil, "organization_name": "E2E"})
	default:
		http.NotFound(w, r)
	}
}

// buttonColour is the Authorize button's colour, which fills the page.
const buttonColour = "#1b8a3a"

// authorizePage checks an authorization request and shows the button.
func (s *standIn) authorizePage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	// PKCE is S256 when present (Google's web flow may go without it;
	// then the token request must not bring a verifier either).
	if q.Get("response_type") != "code" || q.Get("client_id") == "" || q.Get("state") == "" || q.Get("redirect_uri") == "" ||
		q.Get("code_challenge") != "" && q.Get("code_challenge_method") != "S256" {
		http.Error(w, "invalid authorization request", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	var hidden strings.Builder
	for _, k := range []string{"redirect_uri", "state", "code_challenge", "client_id"} {
		fmt.Fprintf(&hidden, `<input type="hidden" name="%s" value="%s">`, k, html.EscapeString(q.Get(k)))
	}
	fmt.Fprintf(w, `<!doctype html><title>Authorize</title>
<style>html,body{margin:0;height:100%%}button{width:100vw;height:100vh;border:0;background:%s;color:#fff;font:48px sans-serif}</style>
<form method="post" action="/approve">%s<button type="submit">Authorize</button></form>`, buttonColour, hidden.String())
}

// approve issues a code bound to the request and sends the browser to the
// redirect_uri, as the provider does once the user has consented.
func (s *standIn) approve(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	code := "code-" + randomHex(16)
	s.mu.Lock()
	s.grants[code] = grant{challenge: r.PostForm.Get("code_challenge"), redirect: r.PostForm.Get("redirect_uri"), clientID: r.PostForm.Get("client_id")}
	s.mu.Unlock()
	u, err := url.Parse(r.PostForm.Get("redirect_uri"))
	if err != nil {
		http.Error(w, "bad redirect_uri", http.StatusBadRequest)
		return
	}
	u.RawQuery = url.Values{"code": {code}, "state": {r.PostForm.Get("state")}}.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

// redeem checks a code against PKCE and the redirect_uri, once.
func (s *standIn) redeem(code, verifier, redirect, clientID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.redirects = append(s.redirects, redirect)
	g, ok := s.grants[code]
	delete(s.grants, code)
	sum := sha256.Sum256([]byte(verifier))
	pkce := g.challenge == base64.RawURLEncoding.EncodeToString(sum[:]) || g.challenge == "" && verifier == ""
	return ok && pkce && g.redirect == redirect &&
		(clientID == "" || g.clientID == clientID)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// codexToken is auth.openai.com's token endpoint: the code exchange (form,
// PKCE) and the API-key exchange that follows it.
func (s *standIn) codexToken(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
		return
	}
	f := r.PostForm
	switch f.Get("grant_type") {
	case "authorization_code":
		if !s.redeem(f.Get("code"), f.Get("code_verifier"), f.Get("redirect_uri"), f.Get("client_id")) {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"id_token": fakeJWT(map[string]any{"email": "e2e@example.com", "exp": time.Now().Add(time.Hour).Unix(),
				"https://api.openai.com/auth": map[string]any{"chatgpt_account_id": "acct-e2e", "chatgpt_plan_type": "plus",
					"chatgpt_user_id": "user-e2e", "user_id": "user-e2e"}}),
			"access_token":  "at-" + randomHex(24),
			"refresh_token": "rt-" + randomHex(24),
			"expires_in":    3600, "token_type": "Bearer",
		})
	default: // the API-key exchange (requested_token=openai-api-key)
		writeJSON(w, http.StatusOK, map[string]any{"access_token": "sk-e2e-" + randomHex(16), "token_type": "Bearer"})
	}
}

// fakeJWT is a JWT whose signature nobody checks (the CLIs only read it).
func fakeJWT(claims map[string]any) string {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(map[string]string{"alg": "RS256", "typ": "JWT"}) + "." + enc(claims) + "." + base64.RawURLEncoding.EncodeToString([]byte("sig"))
}

// claudeToken is platform.claude.com's token endpoint (JSON, PKCE, state).
func (s *standIn) claudeToken(w http.ResponseWriter, r *http.Request) {
	var req map[string]any
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
		return
	}
	str := func(k string) string { v, _ := req[k].(string); return v }
	if str("grant_type") != "authorization_code" || !s.redeem(str("code"), str("code_verifier"), str("redirect_uri"), str("client_id")) {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "invalid_grant"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"token_type": "Bearer", "access_token": "sk-ant-oat01-e2e" + randomHex(16), "refresh_token": "sk-ant-ort01-e2e" + randomHex(16),
		"expires_in": 28800, "scope": "user:inference user:profile user:sessions:claude_code",
		"account":      map[string]any{"uuid": "11111111-1111-4111-8111-111111111111", "email_address": "e2e@example.com"},
		"organization": map[string]any{"uuid": "22222222-2222-4222-8222-222222222222", "name": "E2E"},
	})
}

// googleToken is oauth2.googleapis.com's token endpoint (form, PKCE).
func (s *standIn) googleToken(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
		return
	}
	f := r.PostForm
	if f.Get("grant_type") != "authorization_code" || !s.redeem(f.Get("code"), f.Get("code_verifier"), f.Get("redirect_uri"), f.Get("client_id")) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": "ya29.e2e" + randomHex(16), "refresh_token": "1//e2e" + randomHex(16), "expires_in": 3599,
		"scope":      "https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/userinfo.email openid",
		"token_type": "Bearer",
		"id_token":   fakeJWT(map[string]any{"email": "e2e@example.com", "sub": "1234567890", "exp": time.Now().Add(time.Hour).Unix()}),
	})
}
