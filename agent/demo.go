package agent

import (
	"github.com/master-controller/mc"

	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"

	"github.com/master-controller/mc/internal/atomicfile"
)

// DemoCredentialPath is where the demo sign-in writes its credential,
// relative to home.
const DemoCredentialPath = ".demo/credentials.json"

// Demo page colours: distinctive, so a screenshot shows which page is up.
const (
	DemoSignInColor   = "#1e6fd9"
	DemoSignedInColor = "#2e7d32"
)

// DemoCredential is the file the demo provider's login writes.
type DemoCredential struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	User        string `json:"user"`
}

// pageHandler serves the local pages (LocalOrigin, to the machine's browser
// only, through DevTools: see localPages): the demo provider's sign-in,
// which writes its credential file into home the way a CLI login would.
func pageHandler(home string, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /demo/signin", func(w http.ResponseWriter, r *http.Request) {
		writePage(w, http.StatusOK, signInPage)
	})
	mux.HandleFunc("POST /demo/signin", func(w http.ResponseWriter, r *http.Request) {
		if err := writeDemoCredential(home); err != nil {
			log.Error("write demo credential", mc.LogError, err)
			http.Error(w, "could not sign in", http.StatusInternalServerError)
			return
		}
		log.Info("demo sign-in wrote its credential")
		writePage(w, http.StatusOK, signedInPage)
	})
	return mux
}

// writeDemoCredential writes ~/.demo/credentials.json (0600, atomically).
func writeDemoCredential(home string) error {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	data, err := json.Marshal(DemoCredential{AccessToken: "demo-" + hex.EncodeToString(b), TokenType: "Bearer", User: "demo"})
	if err != nil {
		return err
	}
	path := filepath.Join(home, DemoCredentialPath)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write demo credential: %w", err)
	}
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return fmt.Errorf("write demo credential: %w", err)
	}
	return nil
}

func writePage(w http.ResponseWriter, status int, page string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(page))
}

// The sign-in button is fixed in the middle of the window, so a click at the
// screen's centre hits it whatever the screen size.
const signInPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Demo sign-in</title>
<style>
html,body{margin:0;height:100%;background:` + DemoSignInColor + `;color:#fff;font-family:sans-serif;overflow:hidden}
h1{position:fixed;top:12%;width:100%;text-align:center;margin:0;font-size:48px}
form{margin:0}
button{position:fixed;left:50%;top:50%;width:360px;height:120px;margin:-60px 0 0 -180px;
background:#fff;color:` + DemoSignInColor + `;border:0;border-radius:12px;font-size:40px;font-weight:bold;cursor:pointer}
</style></head>
<body><h1>Demo sign-in</h1>
<form method="post" action="/demo/signin"><button id="signin" type="submit">Sign in</button></form>
</body></html>
`

const signedInPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Signed in</title>
<style>
html,body{margin:0;height:100%;background:` + DemoSignedInColor + `;color:#fff;font-family:sans-serif;overflow:hidden}
h1{position:fixed;top:45%;width:100%;text-align:center;margin:0;font-size:48px}
</style></head>
<body><h1 id="signedin">Signed in</h1></body></html>
`
