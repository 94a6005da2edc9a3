//go:build !mc_test_no_sandbox

package agent

// testNoSandbox lets an agent that runs as root outside any machine start
// Chromium with --no-sandbox (Chromium refuses to run as root with its
// sandbox on). It is true only in an agent built with the
// mc_test_no_sandbox tag, which the agent's own integration tests build: they
// run the agent as root on the host, outside the local driver's
// confinement. A production agent never passes --no-sandbox; as root it
// refuses to start Chromium at all.
const testNoSandbox = false
