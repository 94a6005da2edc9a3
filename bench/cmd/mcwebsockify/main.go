// Command mcwebsockify is master-controller's websockify mode on its own
// (gateway.Websockify, the bridge behind `master-controller websockify`),
// for benchmarks on a tree where the main command is not built:
// mcwebsockify LISTEN TARGET.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/master-controller/mc/gateway"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: mcwebsockify LISTEN TARGET")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// MC_CPUPROFILE=FILE writes a CPU profile of the run (for bench analysis).
	if f := os.Getenv("MC_CPUPROFILE"); f != "" {
		out, err := os.Create(f)
		if err == nil {
			pprof.StartCPUProfile(out)
			defer func() { pprof.StopCPUProfile(); out.Close() }()
		}
	}
	h := &gateway.Websockify{Target: os.Args[2]}
	l, err := h.Listen(ctx, os.Args[1])
	if err == nil {
		err = h.Serve(ctx, l)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		stop()
		os.Exit(1)
	}
}
