// Command mcwebsockify is master-controller's websockify mode on its own
// (gateway.RunWebsockify, the code behind `master-controller websockify`),
// for benchmarks on a tree where the main command is not built.
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
	if err := gateway.RunWebsockify(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		stop()
		os.Exit(1)
	}
}
