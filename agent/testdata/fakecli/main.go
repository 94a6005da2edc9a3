// Command fakecli stands in for a provider's CLI login in tests: it insists
// on a terminal, prints an OAuth-style URL served by itself on a local port,
// waits for the browser to follow it, then writes a credential file.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	out := flag.String("out", ".fake/auth.json", "credential file, relative to HOME")
	fail := flag.Bool("fail", false, "exit 4 at once")
	exitEarly := flag.Bool("exit-early", false, "print the URL and exit 0 without writing")
	flag.Parse()
	if _, err := unix.IoctlGetTermios(1, unix.TCGETS); err != nil {
		fmt.Fprintln(os.Stderr, "fakecli: stdout is not a terminal")
		os.Exit(3)
	}
	if *fail {
		fmt.Println("error: the provider said no")
		os.Exit(4)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(1)
	}
	state := random()
	done := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /oauth", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("state") != state {
			http.Error(w, "bad state", http.StatusBadRequest)
			return
		}
		if err := write(*out); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "<!doctype html><title>Signed in</title><h1>You can close this window.</h1>")
		close(done)
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	// Bold and a hyperlink escape around the URL, as real CLIs print it.
	fmt.Printf("Welcome to fakecli.\r\n\x1b[1mOpen this URL to sign in:\x1b[0m http://%s/oauth?state=%s&client_id=fake\r\n", ln.Addr(), state)
	if *exitEarly {
		os.Exit(0)
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
	fmt.Println("Signed in.")
}

func random() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func write(rel string) error {
	path := filepath.Join(os.Getenv("HOME"), rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, _ := json.Marshal(map[string]any{"tokens": map[string]string{"access_token": "fake-" + random()}, "account": "fake"})
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
