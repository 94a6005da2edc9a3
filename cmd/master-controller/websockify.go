package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/master-controller/mc/gateway"
)

// websockify runs `master-controller websockify [flags] LISTEN [TARGET]`
// until ctx ends: LISTEN is [host:]port, TARGET host:port (required without
// --token-file). It logs to stderr and returns the exit code, after closing
// every connection with 1001.
func websockify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("websockify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	web := fs.String("web", "", "serve static files from `DIR` for plain HTTP requests")
	tokenFile := fs.String("token-file", "", "websockify token `FILE` or directory (lines \"token: host:port\")")
	fs.StringVar(tokenFile, "token-source", "", "alias of --token-file")
	ping := fs.Duration("ping", 20*time.Second, "WebSocket ping interval (0 disables)")
	verbose := fs.Bool("v", false, "log every connection")
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage: master-controller websockify [--web DIR] [--token-file F] [host:]port [host:port]

A drop-in for websockify: bridges each WebSocket client to the TCP target
(or to the target its ?token= names in the token file), with the viewer
gateway's bridge.`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	rest := fs.Args()
	if len(rest) < 1 || len(rest) > 2 || (len(rest) == 1 && *tokenFile == "") {
		fs.Usage()
		fmt.Fprintln(stderr, "websockify: need LISTEN and TARGET (or --token-file)")
		return 2
	}
	listen := rest[0]
	if !strings.Contains(listen, ":") {
		listen = ":" + listen
	}
	h := &gateway.Websockify{Web: *web, TokenFile: *tokenFile, PingInterval: *ping}
	if *ping == 0 {
		h.PingInterval = -1
	}
	target := "token targets"
	if len(rest) == 2 {
		h.Target, target = rest[1], rest[1]
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	h.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	l, err := h.Listen(ctx, listen)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "websockify: listening on %s, proxying to %s\n", l.Addr(), target)
	if err := h.Serve(ctx, l); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}
