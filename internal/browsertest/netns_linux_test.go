package browsertest_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/master-controller/mc/internal/browsertest"
	"github.com/master-controller/mc/internal/testutil"
)

// TestIsolatedNetwork: as root, the browser runs in a network namespace of
// its own; it reaches the loopback servers that it navigates to or that are
// forwarded, and no other.
func TestIsolatedNetwork(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		testutil.SkipOrFail(t, "browsertest: network isolation needs root")
	}
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte("<!doctype html><title>page</title>page"))
	}))
	t.Cleanup(page.Close)
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Write([]byte("other"))
	}))
	t.Cleanup(other.Close)

	b := browsertest.New(t)
	if !b.Isolated() {
		t.Fatal("Isolated: got false as root, want true")
	}
	pid := chromedp.FromContext(b.Context()).Browser.Process().Pid
	theirs, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	ours, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if theirs == ours {
		t.Errorf("browser network namespace: got ours (%s), want its own", ours)
	}

	b.Open(page.URL) // forwarded by Open
	fetch := `fetch(` + strconv.Quote(other.URL) + `).then(r => r.text(), e => 'failed: ' + e)`
	var got string
	b.MustEval(fetch, &got)
	if !strings.HasPrefix(got, "failed") {
		t.Errorf("fetch from a server not forwarded: got %q, want a failure", got)
	}
	b.Forward(strings.TrimPrefix(other.URL, "http://"))
	b.MustEval(fetch, &got)
	if got != "other" {
		t.Errorf("fetch from a forwarded server: got %q, want %q", got, "other")
	}
}
