//go:build mc_test_file_urls

package agent

// testFileURLs: this agent is a test build (tag mc_test_file_urls) whose
// /open takes file:// URLs, so that a test sees the browser block them.
const testFileURLs = true
