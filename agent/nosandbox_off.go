//go:build !mc_test_no_sandbox

package agent

// testUnsandboxedArgs are the Chromium flags that turn its sandbox off, for
// an agent that runs as root outside any machine (Chromium refuses to run as
// root with its sandbox on). Only an agent built with the mc_test_no_sandbox
// tag has any: the agent's own integration tests build it and run it as root
// on the host, outside the local driver's confinement. A production agent
// has none, and as root it refuses to start Chromium at all.
var testUnsandboxedArgs []string
