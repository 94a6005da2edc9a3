//go:build !mc_test_file_urls

package agent

// testFileURLs lets /open and the opener take file:// URLs. It is true only
// in an agent built with the mc_test_file_urls tag, which the end-to-end
// test of issue 8 builds to show that the machine's browser blocks them
// itself (its managed policy); a production agent refuses them first.
const testFileURLs = false
