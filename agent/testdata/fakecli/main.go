// Command fakecli stands in for a provider's CLI login in tests, behaving as
// the real ones do: it insists on a terminal, serves its own callback on a
// local port, builds an authorize URL of a stand-in provider
// (https://provider.test/authorize?redirect_uri=…&state=…) and hands it to
// $BROWSER or xdg-open (-launch), prints it, and writes a credential file once
// the callback (or, with -paste, a typed code#state) carries the state back.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	out := flag.String("out", ".fake/auth.json", "credential file, relative to HOME")
	fail := flag.Bool("fail", false, "print an error and exit 4 at once")
	exitEarly := flag.Bool("exit-early", false, "print the URL and exit 0 without writing")
	launch := flag.String("launch", "browser", `how to open the URL: "browser" ($BROWSER), "xdg" (xdg-open on PATH) or "none"`)
	paste := flag.Bool("paste", false, "wait for code#state typed on the terminal instead of a callback")
	menu := flag.String("menu", "", "first show this prompt and wait for Enter")
	printToken := flag.Bool("print-token", false, "print a token and exit 0 (like claude setup-token)")
	blank := flag.Bool("blank", false, "write the credential file with blanked values")
	provider := flag.String("provider", "https://provider.test", "the stand-in provider's base URL")
	flag.Parse()
	if _, err := unix.IoctlGetTermios(1, unix.TCGETS); err != nil {
		fmt.Fprintln(os.Stderr, "fakecli: stdout is not a terminal")
		os.Exit(3)
	}
	if *fail {
		fmt.Printf("error: the provider said no (request id %s)\r\n", random())
		os.Exit(4)
	}
	in := bufio.NewReader(os.Stdin)
	if *menu != "" {
		// A prompt without a newline, as menus are; Enter answers it.
		fmt.Printf("\x1b[1m%s\x1b[0m ", *menu)
		if _, err := in.ReadString('\n'); err != nil {
			os.Exit(6)
		}
		fmt.Print("\r\n")
	}
	if *printToken {
		fmt.Printf("Your token: sk-fake-%s\r\nStore it somewhere safe.\r\n", random())
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(1)
	}
	state := random()
	redirect := "http://" + ln.Addr().String() + "/oauth"
	if *paste {
		redirect = "https://provider.test/code/callback"
	}
	auth := *provider + "/authorize?" + url.Values{"redirect_uri": {redirect}, "state": {state}, "client_id": {"fake"}}.Encode()
	done := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /oauth", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("state") != state || r.URL.Query().Get("code") == "" {
			http.Error(w, "bad state or no code", http.StatusBadRequest)
			return
		}
		if err := write(*out, *blank); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "<!doctype html><title>Signed in</title><h1>You can close this window.</h1>")
		close(done)
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	// Its own server first (as Codex does), then the URL in a hyperlink.
	fmt.Printf("Starting local login server on %s.\r\n", redirect)
	switch *launch {
	case "browser":
		_ = exec.Command(os.Getenv("BROWSER"), auth).Run()
	case "xdg":
		_ = exec.Command("xdg-open", auth).Run()
	}
	fmt.Printf("\x1b[1mIf the browser did not open, visit:\x1b[0m \x1b]8;;%s\x07%s\x1b]8;;\x07\r\n", auth, auth)
	if *exitEarly {
		os.Exit(0)
	}
	if *paste {
		fmt.Print("Paste code here if prompted > ")
		line, err := in.ReadString('\n')
		code, st, ok := strings.Cut(strings.TrimSpace(line), "#")
		if err != nil || !ok || st != state || code == "" {
			fmt.Print("\r\nThat code is not from this sign-in.\r\n")
			os.Exit(7)
		}
		if err := write(*out, *blank); err != nil {
			os.Exit(1)
		}
		close(done)
	}
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		fmt.Println("timed out")
		os.Exit(5)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	fmt.Print("Login successful.\r\n")
}

func random() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func write(rel string, blank bool) error {
	path := filepath.Join(os.Getenv("HOME"), rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tok := "fake-" + random()
	if blank {
		tok = ""
	}
	b, _ := json.Marshal(map[string]any{"tokens": map[string]string{"access_token": tok}, "account": "fake"})
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
