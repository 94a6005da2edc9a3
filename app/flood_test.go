package app_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/master-controller/mc/app"
)

// floodConns is how many idle connections TestIdleFlood opens, from
// floodProcs client processes (each holds its share of the sockets, within
// its own open-file limit).
const (
	floodConns = 25000
	floodProcs = 3
)

// TestIdleFlood opens 25 000 idle connections from loopback clients (half
// of them after one request, kept alive; half without sending a byte) to a
// controller whose connection cap is derived from its open-file limit, and
// checks that a new client still gets an answer within 1 s, and that a
// request that announces a body and sends none is answered too. Without the
// cap the server holds one descriptor per client connection, runs out of
// them (the hard limit here is 20 000), and accepts no one.
func TestIdleFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 25 000 connections")
	}
	// This process is the server: raise its soft limit to the hard one, as
	// the controller does at start (the Go runtime does too; be explicit).
	nofile, err := app.RaiseFileLimit()
	if err != nil {
		t.Fatal(err)
	}
	tm := startMain(t, map[string]string{"MC_LOG_LEVEL": "info"})
	addr := strings.TrimPrefix(tm.URL, "http://")
	capConns := tm.Config.MaxConnections
	if want, _ := app.ConnectionLimits(nofile); capConns != want {
		t.Errorf("got a cap of %d connections, want %d derived from the open-file limit %d", capConns, want, nofile)
	}
	t.Logf("open-file limit %d, connection cap %d", nofile, capConns)

	// The clients: this test binary again, as TestIdleFloodClient, each from
	// a loopback address of its own so that they share no source ports.
	for i := range floodProcs {
		n := floodConns / floodProcs
		if i == 0 {
			n += floodConns % floodProcs
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestIdleFloodClient$")
		cmd.Env = append(os.Environ(), "MC_FLOOD_ADDR="+addr, "MC_FLOOD_CONNS="+strconv.Itoa(n),
			"MC_FLOOD_FROM=127.0.0."+strconv.Itoa(i+2))
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			stdin.Close() // the client closes its connections and exits
			_ = cmd.Wait()
		})
		// The client prints "ready" once all its connections are open, or
		// why it could not open them.
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		if strings.TrimSpace(line) != "ready" {
			t.Fatalf("flood client %d: %q", i, line)
		}
	}

	// A new client gets an answer within 1 s.
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(tm.URL + "/healthz")
	if err != nil {
		t.Fatalf("new client after %d idle connections: %v", floodConns, err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("new client: got %d, want 200", resp.StatusCode)
	}

	// A request that announces 1000 bytes of body and sends none gets its
	// answer (401: authentication comes before the body), not a hang.
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err = http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("request with an unsent body: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("request with an unsent body: got %d, want 401", resp.StatusCode)
	}

	// The file descriptors and the evictions are metrics.
	for _, name := range []string{"process_open_fds", "mc_http_connections", "mc_http_idle_connections_evicted_total"} {
		if v := metricValue(t, tm.api, name); v <= 0 {
			t.Errorf("metric %s: got %v, want it positive", name, v)
		}
	}
	if v := metricValue(t, tm.api, "mc_http_connections"); v > float64(capConns) {
		t.Errorf("got %v open connections, want at most the cap, %d", v, capConns)
	}
}

// TestIdleFloodClient is TestIdleFlood's client process: it opens
// $MC_FLOOD_CONNS connections from $MC_FLOOD_FROM to $MC_FLOOD_ADDR, sends
// one request on every other one (never reading the answer), prints "ready",
// and holds them until its standard input closes.
func TestIdleFloodClient(t *testing.T) {
	addr := os.Getenv("MC_FLOOD_ADDR")
	if addr == "" {
		t.Skip("run by TestIdleFlood")
	}
	n, _ := strconv.Atoi(os.Getenv("MC_FLOOD_CONNS"))
	if _, err := app.RaiseFileLimit(); err != nil {
		fmt.Println(err)
		return
	}
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(os.Getenv("MC_FLOOD_FROM"))}}
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range n {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			fmt.Printf("dial %d: %v\n", i, err)
			return
		}
		conns = append(conns, c)
		if i%2 == 0 {
			if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				fmt.Printf("write %d: %v\n", i, err)
				return
			}
		}
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
}
