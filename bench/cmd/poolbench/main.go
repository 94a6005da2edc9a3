// Command poolbench measures POST /api/v1/sessions → ready with the warm
// pool against cold starts, in one run of one master-controller server on
// the local driver: 50 sessions one after another (one every -every) and 50
// as bursts of 10 concurrent ones, for the pooled provider (demo, pool of
// -pool) and for a copy of it without a pool (demo_cold). It also reports
// the memory (PSS) of an idle pooled machine and of the server with the
// pool full. A session that fails is counted as failed and said on stderr;
// the run goes on. It prints markdown tables.
//
// Usage: poolbench -server BIN -agent BIN [-n 50] [-burst 10] [-pool 4] [-every 2s]
package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/master-controller/mc/internal/procfs"
	"github.com/master-controller/mc/netpool"
)

const apiKey = "poolbench-key-0123456789abcdef"

func main() {
	server := flag.String("server", "", "master-controller binary")
	agent := flag.String("agent", "", "mc-agent binary")
	n := flag.Int("n", 50, "sessions per measurement")
	burst := flag.Int("burst", 10, "concurrent sessions per burst")
	pool := flag.Int("pool", 4, "pooled machines of the demo provider")
	every := flag.Duration("every", 2*time.Second, "pace of the one-after-another measurement")
	mode := flag.String("mode", "loopback", "local driver mode (loopback or netns)")
	flag.Parse()
	if *server == "" || *agent == "" {
		fmt.Fprintln(os.Stderr, "poolbench: -server and -agent are required")
		os.Exit(2)
	}
	if err := run(*server, *agent, *mode, *n, *burst, *pool, *every); err != nil {
		fmt.Fprintln(os.Stderr, "poolbench:", err)
		os.Exit(1)
	}
}

type bench struct {
	url  string
	hc   *http.Client
	seq  int
	mu   sync.Mutex
	data string
	// exited is closed when the server has exited.
	exited chan struct{}
}

func run(server, agent, mode string, n, burst, pool int, every time.Duration) error {
	dir, err := os.MkdirTemp("/tmp", "pb")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	provs := filepath.Join(dir, "providers.json")
	if err := os.WriteFile(provs, []byte(`{"providers": [{"name": "demo_cold", "display_name": "Demo (no pool)",
		"start_url": "local:/demo/signin", "files": [{"path": "~/.demo/credentials.json"}], "login_timeout": "10m"}]}`), 0o600); err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	network, err := netpool.FreeNetwork(netip.MustParsePrefix("10.224.0.0/12"))
	if err != nil {
		return err
	}
	b := &bench{url: "http://127.0.0.1:" + strconv.Itoa(port), hc: &http.Client{Timeout: 120 * time.Second}, data: filepath.Join(dir, "data")}
	rnd := randInt(400)
	// The server leaves its bridge (and the bridge's address) for the next
	// run of a server with its data directory; this one has none.
	bridge := "mcpb" + hex.EncodeToString(randBytes(3))
	defer func() { _ = exec.Command("ip", "link", "delete", bridge).Run() }()
	cmd := exec.Command(server, "serve")
	cmd.Env = append(os.Environ(),
		"MC_LISTEN=127.0.0.1:"+strconv.Itoa(port), "MC_DATA_DIR="+b.data, "MC_DRIVER=local",
		"MC_LOCAL_MODE="+mode, "MC_AGENT_PATH="+agent, "MC_API_KEYS="+apiKey, "MC_PROVIDERS_FILE="+provs,
		"MC_POOL=demo="+strconv.Itoa(pool), "MC_MAX_MACHINES=24", "MC_DESTROY_GRACE=0s",
		"MC_PORT_BASE="+strconv.Itoa(20000+rnd%100*100), "MC_DISPLAY_BASE="+strconv.Itoa(2000+rnd*30),
		"MC_BRIDGE="+bridge, "MC_NETWORK="+network.String(),
		"MC_REPLICA=poolbench", "MC_LOG_LEVEL=warn")
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	b.exited = done
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
		}
		if log, err := os.ReadFile(filepath.Join(dir, "server.log")); err == nil && len(log) > 0 {
			fmt.Fprintf(os.Stderr, "server log (tail):\n%s\n", tail(log, 2000))
		}
	}()
	if err := b.waitPool(pool, 180*time.Second); err != nil {
		return err
	}
	fmt.Printf("host: %d CPUs, load average %s\n\n", nproc(), loadavg())
	b.memory(cmd.Process.Pid)

	type result struct {
		name string
		rs   []sample
	}
	var results []result
	for _, prov := range []string{"demo", "demo_cold"} {
		name := "pool of " + strconv.Itoa(pool)
		if prov == "demo_cold" {
			name = "cold start"
		}
		fmt.Fprintf(os.Stderr, "poolbench: %s, %d one after another (every %s)\n", name, n, every)
		var rs []sample
		for i := range n {
			start := time.Now()
			s, err := b.session(prov)
			if err != nil {
				fmt.Fprintf(os.Stderr, "poolbench: %s session %d: %v\n", name, i, err)
				s = sample{failed: true}
			}
			rs = append(rs, s)
			time.Sleep(every - time.Since(start))
		}
		results = append(results, result{name + ", sequential", rs})
		if err := b.waitPool(pool, 120*time.Second); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "poolbench: %s, %d in bursts of %d\n", name, n, burst)
		rs = nil
		for done := 0; done < n; done += burst {
			k := min(burst, n-done)
			out := make([]sample, k)
			errs := make([]error, k)
			var wg sync.WaitGroup
			for j := range k {
				wg.Go(func() { out[j], errs[j] = b.session(prov) })
			}
			wg.Wait()
			for j, err := range errs {
				if err != nil {
					fmt.Fprintf(os.Stderr, "poolbench: %s burst: %v\n", name, err)
					out[j] = sample{failed: true}
				}
			}
			rs = append(rs, out...)
			if err := b.waitPool(pool, 120*time.Second); err != nil {
				return err
			}
		}
		results = append(results, result{name + ", " + strconv.Itoa(burst) + " concurrent", rs})
	}
	fmt.Println("| POST → ready | sessions | from the pool | failed | p50 | p99 | max | p50 of pool hits | p99 of pool hits |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, r := range results {
		all, hits := durations(r.rs, false), durations(r.rs, true)
		fmt.Printf("| %s | %d | %d | %d | %s | %s | %s | %s | %s |\n", r.name, len(r.rs), len(hits), len(r.rs)-len(all),
			ms(pct(all, 50)), ms(pct(all, 99)), ms(pct(all, 100)), ms(pct(hits, 50)), ms(pct(hits, 99)))
	}
	return nil
}

// sample is one session's POST → ready; a failed one (it ended before it
// was ready, or a request failed) counts in no percentile.
type sample struct {
	d      time.Duration
	pooled bool
	failed bool
}

type session struct {
	ID      string `json:"id"`
	State   string `json:"state"`
	Reason  string `json:"reason"`
	Machine struct {
		Pooled bool `json:"pooled"`
	} `json:"machine"`
}

// session creates one session of provider, measures until it is ready and
// cancels it.
func (b *bench) session(provider string) (sample, error) {
	b.mu.Lock()
	b.seq++
	user := fmt.Sprintf("pb-%d-%s", b.seq, hex.EncodeToString(randBytes(3)))
	b.mu.Unlock()
	start := time.Now()
	var cr struct {
		Session session `json:"session"`
	}
	if err := b.do("POST", "/api/v1/sessions", map[string]string{"user_id": user, "provider": provider}, &cr, http.StatusCreated); err != nil {
		return sample{}, err
	}
	s := cr.Session
	for s.State != "ready" {
		if s.State == "failed" || s.State == "cancelled" || s.State == "expired" || s.State == "completed" {
			return sample{}, fmt.Errorf("session %s ended %s (%s)", s.ID, s.State, s.Reason)
		}
		time.Sleep(2 * time.Millisecond)
		var got struct {
			Session session `json:"session"`
		}
		if err := b.do("GET", "/api/v1/sessions/"+s.ID, nil, &got, http.StatusOK); err != nil {
			return sample{}, err
		}
		s = got.Session
	}
	d := time.Since(start)
	if err := b.do("POST", "/api/v1/sessions/"+s.ID+"/cancel", nil, nil, http.StatusOK); err != nil {
		return sample{}, err
	}
	return sample{d: d, pooled: s.Machine.Pooled}, nil
}

func (b *bench) do(method, path string, in, out any, want int) error {
	var body *bytes.Reader
	if in != nil {
		j, _ := json.Marshal(in)
		body = bytes.NewReader(j)
	} else {
		body = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, b.url+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		var e bytes.Buffer
		_, _ = e.ReadFrom(resp.Body)
		return fmt.Errorf("%s %s: status %d: %s", method, path, resp.StatusCode, e.String())
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

// waitPool waits until the demo pool has n ready machines.
func (b *bench) waitPool(n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var st struct {
			Providers []struct {
				Provider        string
				Ready, Starting int
			} `json:"providers"`
		}
		err := b.do("GET", "/api/v1/pool", nil, &st, http.StatusOK)
		if err == nil {
			for _, p := range st.Providers {
				if p.Provider == "demo" && p.Ready >= n {
					return nil
				}
			}
		}
		select {
		case <-b.exited:
			return errors.New("the server exited")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the pool did not reach %d ready machines within %s (last: %+v, %v)", n, timeout, st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// memory prints the PSS of each pooled machine (its process group and
// any process with its home) and of the server, with the pool full.
func (b *bench) memory(serverPID int) {
	files, _ := filepath.Glob(filepath.Join(b.data, "machines", "*", "machine.json"))
	var per []int64
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var ms struct {
			PGID int `json:"pgid"`
		}
		if json.Unmarshal(raw, &ms) != nil || ms.PGID <= 1 {
			continue
		}
		pids := append(procfs.GroupMembers(ms.PGID, 0), procfs.HomePids(filepath.Join(filepath.Dir(f), "home"))...)
		slices.Sort(pids)
		pss, _ := procfs.PSS(slices.Compact(pids))
		per = append(per, pss)
	}
	srv, _ := procfs.PSS([]int{serverPID})
	var sum int64
	for _, v := range per {
		sum += v
	}
	fmt.Println("| memory, pool full | PSS |")
	fmt.Println("| --- | --- |")
	for i, v := range per {
		fmt.Printf("| idle pooled machine %d | %s |\n", i+1, mib(v))
	}
	fmt.Printf("| the server process | %s |\n", mib(srv))
	fmt.Printf("| total (%d pooled machines + server) | %s |\n\n", len(per), mib(sum+srv))
}

func durations(rs []sample, onlyPooled bool) []time.Duration {
	var out []time.Duration
	for _, r := range rs {
		if !r.failed && (!onlyPooled || r.pooled) {
			out = append(out, r.d)
		}
	}
	slices.Sort(out)
	return out
}

// pct is the nearest-rank percentile (100: the maximum).
func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return -1
	}
	i := (p*len(sorted)+99)/100 - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) string {
	if d < 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func randInt(n int) int {
	b := randBytes(2)
	return (int(b[0])<<8 | int(b[1])) % n
}

func nproc() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return bytes.Count(b, []byte("processor\t"))
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := bytes.Fields(b)
	if len(f) < 3 {
		return "?"
	}
	return string(bytes.Join(f[:3], []byte(" ")))
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
