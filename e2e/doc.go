// Package e2e holds the end-to-end tests of master-controller: the whole
// controller (app.New in-process, or the built server binary as a separate
// process) with the real local runtime (mc-agent, Xvnc, Chromium, network
// namespaces as root), real stores (a SQLite file, a throwaway PostgreSQL)
// and the real noVNC viewer page in headless Chromium.
//
// Run them with
//
//	go test ./e2e/
//
// and the start-time benchmark (20 sessions, one after the other) with
//
//	go test ./e2e/ -run '^$' -bench StartToReady -benchtime 20x
//
// The tests build ./cmd/mc-agent (and, for the crash test,
// ./cmd/master-controller) once, unless $MC_TEST_AGENT and $MC_TEST_SERVER
// name binaries to use. A missing component (Xvnc, Chromium, PostgreSQL)
// skips a test with one line, except under CI=true, where it fails.
package e2e
