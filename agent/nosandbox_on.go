//go:build mc_test_no_sandbox

package agent

// testUnsandboxedArgs: this agent is a test build (tag mc_test_no_sandbox)
// for the agent's integration tests, which run it as root outside a machine;
// there, and only there, Chromium runs without its sandbox.
var testUnsandboxedArgs = []string{"--no-sandbox"}
