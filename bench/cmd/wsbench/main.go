// Command wsbench measures WebSocket-to-TCP proxies side by side in one run:
// master-controller's websockify mode, Debian's websockify and a direct TCP
// stream, with one in-process upstream (source, sink and echo on loopback)
// and one WebSocket client (github.com/coder/websocket). It prints a
// markdown table with ratios against the goals of issue 4.
//
// Usage: wsbench -mc "/path/master-controller websockify" [-websockify /usr/bin/websockify]
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

var (
	mcCmd   = flag.String("mc", "", "command prefix of master-controller's websockify mode (LISTEN TARGET are appended)")
	wsCmd   = flag.String("websockify", "/usr/bin/websockify", "Debian's websockify")
	dur     = flag.Duration("dur", 3*time.Second, "duration of each throughput and set-up test")
	rttN    = flag.Int("rtt", 2000, "round trips for the latency test")
	idleN   = flag.Int("idle", 500, "idle connections for the memory test")
	msgSize = flag.Int("msg", 16, "message size of the latency test")
	only    = flag.String("only", "", "run only this proxy (direct, websockify, mc, relay) and print no table")
	phase   = flag.String("phase", "", "run only this test (setup) with -only, for profiling")
	cpuProf = flag.String("cpuprofile", "", "write a CPU profile of wsbench (client and upstream) during -phase to `FILE`")
	relay   = flag.Bool("relay", false, "run as a plain TCP relay LISTEN TARGET (io.Copy, splice(2) on Linux), the reference for one extra hop without WebSocket")
)

func main() {
	flag.Parse()
	if *relay {
		runRelay(flag.Arg(0), flag.Arg(1))
		return
	}
	if *mcCmd == "" {
		fmt.Fprintln(os.Stderr, "wsbench: -mc is required")
		os.Exit(2)
	}
	up := startUpstream()
	fmt.Fprintf(os.Stderr, "upstream on %s\n", up)

	switch *only {
	case "direct":
		run("direct TCP", nil, up)
		return
	case "websockify":
		run("websockify", strings.Fields(*wsCmd), up)
		return
	case "mc":
		run("master-controller", strings.Fields(*mcCmd), up)
		return
	case "relay":
		runHop(up)
		return
	}
	var results []*result
	results = append(results, run("direct TCP", nil, up))
	results = append(results, run("websockify", strings.Fields(*wsCmd), up))
	results = append(results, run("master-controller", strings.Fields(*mcCmd), up))
	hop := runHop(up)
	printTable(results[0], results[1], results[2])
	printHop(results[0], results[2], hop)
}

// runRelay is the -relay mode: a plain TCP relay from LISTEN to TARGET, each
// direction one io.Copy (splice(2) between two TCP sockets on Linux). It
// serves as the floor of any one-hop proxy on the host: the same extra hop
// as a WebSocket proxy, without WebSocket.
func runRelay(listen, target string) {
	l, err := net.Listen("tcp", listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			u, err := net.Dial("tcp", target)
			if err != nil {
				return
			}
			defer u.Close()
			go func() { io.Copy(u, c); u.Close() }()
			io.Copy(c, u)
		}()
	}
}

// runHop measures the download through the plain TCP relay (wsbench
// -relay): throughput with 1 and 4 streams and CPU per GiB of the relay
// and of this process.
func runHop(up string) *result {
	const name = "TCP relay"
	fmt.Fprintf(os.Stderr, "== %s\n", name)
	p := startProxy(name, []string{os.Args[0], "-relay"}, up)
	p.raw = true
	defer p.stop()
	r := &result{name: name}
	time.Sleep(200 * time.Millisecond)
	download1(p, r)
	r.down4 = mib(throughput(p, 'R', 4))
	p.settle(0)
	fmt.Fprintf(os.Stderr, "  down 4 streams: %.0f MiB/s\n", r.down4)
	return r
}

// printHop prints the reference of one extra TCP hop without WebSocket.
func printHop(direct, mc, hop *result) {
	ratio := func(a, b float64) string {
		if b == 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f×", a/b)
	}
	fmt.Printf("\nReference: one extra TCP hop without WebSocket (`wsbench -relay`, io.Copy = splice(2)), what any one-hop proxy pays on this host:\n\n")
	fmt.Printf("| measure | direct TCP | TCP relay | master-controller | relay / direct | mc / relay |\n")
	fmt.Printf("| --- | ---: | ---: | ---: | ---: | ---: |\n")
	fmt.Printf("| throughput, 1 stream to client (MiB/s) | %.0f | %.0f | %.0f | %s | %s |\n",
		direct.down1, hop.down1, mc.down1, ratio(hop.down1, direct.down1), ratio(mc.down1, hop.down1))
	fmt.Printf("| throughput, 4 streams to client (MiB/s) | %.0f | %.0f | %.0f | %s | %s |\n",
		direct.down4, hop.down4, mc.down4, ratio(hop.down4, direct.down4), ratio(mc.down4, hop.down4))
	fmt.Printf("| proxy CPU per GiB, 1 stream (s) | – | %.2f | %.2f | – | %s |\n",
		hop.cpuPerGiB, mc.cpuPerGiB, ratio(mc.cpuPerGiB, hop.cpuPerGiB))
	fmt.Printf("| client and upstream (wsbench) CPU per GiB, 1 stream (s) | %.2f | %.2f | %.2f | %s | %s |\n",
		direct.benchCPUPerGiB, hop.benchCPUPerGiB, mc.benchCPUPerGiB, ratio(hop.benchCPUPerGiB, direct.benchCPUPerGiB), ratio(mc.benchCPUPerGiB, hop.benchCPUPerGiB))
}

// ---- upstream ----

func startUpstream() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go serveUpstream(c)
		}
	}()
	return l.Addr().String()
}

func serveUpstream(c net.Conn) {
	defer c.Close()
	var mode [1]byte
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		return
	}
	buf := make([]byte, 64<<10)
	switch mode[0] {
	case 'R': // source
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	case 'S': // sink
		io.CopyBuffer(io.Discard, c, buf)
	case 'E': // echo
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
}

// ---- proxies ----

type proxy struct {
	name string
	cmd  *exec.Cmd
	addr string // ws listen address, "" for direct
	up   string
	raw  bool // addr is a plain TCP relay, not WebSocket
}

func startProxy(name string, argv []string, up string) *proxy {
	p := &proxy{name: name, up: up}
	if argv == nil {
		return p
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	p.addr = l.Addr().String()
	l.Close()
	args := append(append([]string{}, argv[1:]...), p.addr, up)
	p.cmd = exec.Command(argv[0], args...)
	p.cmd.Stdout, p.cmd.Stderr = io.Discard, io.Discard
	if err := p.cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "start %s: %v\n", name, err)
		os.Exit(1)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", p.addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "%s did not listen on %s\n", name, p.addr)
			os.Exit(1)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p
}

func (p *proxy) stop() {
	if p.cmd != nil {
		p.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-done
		}
	}
}

// stream is one client connection through the proxy (or direct).
type stream struct {
	net.Conn
	ws *websocket.Conn
}

func (s *stream) Close() error {
	if s.ws != nil {
		return s.ws.CloseNow()
	}
	return s.Conn.Close()
}

func (p *proxy) open(mode byte) (*stream, error) {
	var s *stream
	if p.addr == "" || p.raw {
		addr := p.up
		if p.raw {
			addr = p.addr
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return nil, err
		}
		s = &stream{Conn: c}
	} else {
		c, _, err := websocket.Dial(context.Background(), "ws://"+p.addr+"/", &websocket.DialOptions{Subprotocols: []string{"binary"}})
		if err != nil {
			return nil, err
		}
		c.SetReadLimit(-1)
		s = &stream{Conn: websocket.NetConn(context.Background(), c, websocket.MessageBinary), ws: c}
	}
	if _, err := s.Write([]byte{mode}); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// ---- process accounting ----

const clkTck = 100

type procStat struct{ ppid, cpu, ccpu int64 }

func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, false
	}
	s := string(b)
	s = s[strings.LastIndexByte(s, ')')+2:]
	f := strings.Fields(s)
	// f[0] is state (field 3); utime is field 14 → f[11].
	num := func(i int) int64 { v, _ := strconv.ParseInt(f[i], 10, 64); return v }
	return procStat{ppid: num(1), cpu: num(11) + num(12), ccpu: num(13) + num(14)}, true
}

// tree returns pid and its live descendants.
func tree(pid int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := readStat(p); ok {
			children[int(st.ppid)] = append(children[int(st.ppid)], p)
		}
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// cpuSeconds is the CPU time of the process tree: the root's own and reaped
// children's, plus every live descendant's.
func (p *proxy) cpuSeconds() float64 {
	if p.cmd == nil {
		return 0
	}
	var ticks int64
	for i, pid := range tree(p.cmd.Process.Pid) {
		st, ok := readStat(pid)
		if !ok {
			continue
		}
		ticks += st.cpu
		if i == 0 {
			ticks += st.ccpu
		}
	}
	return float64(ticks) / clkTck
}

// settle waits until the proxy has no more descendants than n (forked
// children of closed connections have exited).
func (p *proxy) settle(n int) {
	if p.cmd == nil {
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(tree(p.cmd.Process.Pid))-1 > n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

// memKiB returns the summed PSS and RSS of the process tree.
func (p *proxy) memKiB() (pss, rss int64) {
	if p.cmd == nil {
		return 0, 0
	}
	for _, pid := range tree(p.cmd.Process.Pid) {
		f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 2 {
				continue
			}
			v, _ := strconv.ParseInt(fs[1], 10, 64)
			switch fs[0] {
			case "Pss:":
				pss += v
			case "Rss:":
				rss += v
			}
		}
		f.Close()
	}
	return pss, rss
}

func memAvailableKiB() int64 {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "MemAvailable:") {
			v, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			return v
		}
	}
	return math.MaxInt64
}

// ---- tests ----

type result struct {
	name              string
	down1, down4, up1 float64 // MiB/s
	cpuPerGiB         float64 // proxy CPU seconds per GiB (download, 1 stream)
	benchCPUPerGiB    float64 // this process's (client and upstream) CPU seconds per GiB, same test
	p50, p99          time.Duration
	setupRate         float64 // connections per second
	idleN             int
	idlePSS, idleRSS  float64 // KiB per idle connection
}

func run(name string, argv []string, up string) *result {
	fmt.Fprintf(os.Stderr, "== %s\n", name)
	p := startProxy(name, argv, up)
	defer p.stop()
	r := &result{name: name}
	time.Sleep(200 * time.Millisecond)

	// Warm up once.
	if s, err := p.open('E'); err == nil {
		s.Write([]byte("x"))
		io.ReadFull(s, make([]byte, 1))
		s.Close()
	}
	p.settle(0)
	if *phase == "setup" {
		setupOnly(p, r)
		return r
	}

	download1(p, r)
	r.down4 = mib(throughput(p, 'R', 4))
	p.settle(0)
	fmt.Fprintf(os.Stderr, "  down 4 streams: %.0f MiB/s\n", r.down4)
	r.up1 = mib(throughput(p, 'S', 1))
	p.settle(0)
	fmt.Fprintf(os.Stderr, "  up 1 stream: %.0f MiB/s\n", r.up1)
	r.p50, r.p99 = latency(p)
	p.settle(0)
	fmt.Fprintf(os.Stderr, "  rtt p50 %v p99 %v\n", r.p50, r.p99)
	r.setupRate = setup(p)
	p.settle(0)
	fmt.Fprintf(os.Stderr, "  set-up %.0f/s\n", r.setupRate)
	if p.cmd != nil {
		r.idleN, r.idlePSS, r.idleRSS = idle(p)
		fmt.Fprintf(os.Stderr, "  idle: %d conns, %.1f KiB PSS, %.1f KiB RSS each\n", r.idleN, r.idlePSS, r.idleRSS)
	}
	return r
}

// download1 measures the 1-stream download: throughput, and CPU per GiB of
// the proxy and of this process (the client and the upstream).
func download1(p *proxy, r *result) {
	cpu0, self0 := p.cpuSeconds(), selfCPUSeconds()
	bytes, secs := transfer(p, 'R', 1)
	p.settle(0)
	cpu1, self1 := p.cpuSeconds(), selfCPUSeconds()
	r.down1 = mib(bytes / secs)
	if gib := bytes / (1 << 30); gib > 0 {
		if p.cmd != nil {
			r.cpuPerGiB = (cpu1 - cpu0) / gib
		}
		r.benchCPUPerGiB = (self1 - self0) / gib
	}
	fmt.Fprintf(os.Stderr, "  down 1 stream: %.0f MiB/s, proxy %.2f CPU s/GiB, wsbench %.2f CPU s/GiB\n", r.down1, r.cpuPerGiB, r.benchCPUPerGiB)
}

// selfCPUSeconds is this process's CPU time (the client and the upstream).
func selfCPUSeconds() float64 {
	st, _ := readStat(os.Getpid())
	return float64(st.cpu) / clkTck
}

func mib(bytesPerSec float64) float64 { return bytesPerSec / (1 << 20) }

// throughput runs n streams of mode ('R' download, 'S' upload) for dur and
// returns bytes per second.
func throughput(p *proxy, mode byte, n int) float64 {
	bytes, secs := transfer(p, mode, n)
	return bytes / secs
}

// transfer runs n streams of mode for dur and returns the bytes moved and
// the seconds it took.
func transfer(p *proxy, mode byte, n int) (bytes, secs float64) {
	var total atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(*dur)
	for range n {
		s, err := p.open(mode)
		if err != nil {
			fmt.Fprintf(os.Stderr, "  open: %v\n", err)
			return 0, 1
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.Close()
			buf := make([]byte, 256<<10)
			for time.Now().Before(end) {
				var k int
				var err error
				if mode == 'R' {
					k, err = s.Read(buf)
				} else {
					k, err = s.Write(buf[:64<<10])
				}
				total.Add(int64(k))
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	return float64(total.Load()), time.Since(start).Seconds()
}

func latency(p *proxy) (p50, p99 time.Duration) {
	s, err := p.open('E')
	if err != nil {
		return 0, 0
	}
	defer s.Close()
	msg := make([]byte, *msgSize)
	back := make([]byte, *msgSize)
	for range 200 { // warm-up
		s.Write(msg)
		io.ReadFull(s, back)
	}
	d := make([]time.Duration, *rttN)
	for i := range d {
		t := time.Now()
		if _, err := s.Write(msg); err != nil {
			return 0, 0
		}
		if _, err := io.ReadFull(s, back); err != nil {
			return 0, 0
		}
		d[i] = time.Since(t)
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)/2], d[len(d)*99/100]
}

// setupOnly runs the set-up test alone (-phase setup) and prints the CPU
// time of the proxy and of wsbench (client and upstream) per connection,
// with a CPU profile of wsbench when -cpuprofile is set.
func setupOnly(p *proxy, r *result) {
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	cpu0, self0, t0 := p.cpuSeconds(), selfCPUSeconds(), time.Now()
	r.setupRate = setup(p)
	p.settle(0)
	n := r.setupRate * time.Since(t0).Seconds()
	fmt.Fprintf(os.Stderr, "  set-up %.0f/s; per connection: proxy %.0f µs CPU, wsbench %.0f µs CPU\n",
		r.setupRate, (p.cpuSeconds()-cpu0)/n*1e6, (selfCPUSeconds()-self0)/n*1e6)
}

// setup opens connections one after another for dur, each proven by one echo.
func setup(p *proxy) float64 {
	start := time.Now()
	n := 0
	one := make([]byte, 1)
	for time.Since(start) < *dur {
		s, err := p.open('E')
		if err != nil {
			fmt.Fprintf(os.Stderr, "  setup: %v\n", err)
			break
		}
		s.Write([]byte("x"))
		if _, err := io.ReadFull(s, one); err != nil {
			s.Close()
			break
		}
		s.Close()
		n++
	}
	return float64(n) / time.Since(start).Seconds()
}

// idle opens up to idleN connections, each proven by one echo, and returns
// the memory growth of the proxy per connection.
func idle(p *proxy) (int, float64, float64) {
	p.settle(0)
	time.Sleep(500 * time.Millisecond)
	pss0, rss0 := p.memKiB()
	var conns []*stream
	one := make([]byte, 1)
	for len(conns) < *idleN {
		if memAvailableKiB() < 3<<20 {
			fmt.Fprintln(os.Stderr, "  idle: stopping, under 3 GiB of memory available")
			break
		}
		s, err := p.open('E')
		if err != nil {
			fmt.Fprintf(os.Stderr, "  idle: %v\n", err)
			break
		}
		s.Write([]byte("x"))
		if _, err := io.ReadFull(s, one); err != nil {
			break
		}
		conns = append(conns, s)
	}
	time.Sleep(time.Second)
	pss1, rss1 := p.memKiB()
	for _, s := range conns {
		s.Close()
	}
	p.settle(0)
	n := len(conns)
	if n == 0 {
		return 0, 0, 0
	}
	return n, float64(pss1-pss0) / float64(n), float64(rss1-rss0) / float64(n)
}

// ---- report ----

func printTable(direct, ws, mc *result) {
	ratio := func(a, b float64) string {
		if b == 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f×", a/b)
	}
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	check := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**not met**"
	}
	fmt.Printf("\n| measure | direct TCP | websockify | master-controller | mc / websockify | mc / direct | goal |\n")
	fmt.Printf("| --- | ---: | ---: | ---: | ---: | ---: | --- |\n")
	fmt.Printf("| throughput, 1 stream to client (MiB/s) | %.0f | %.0f | %.0f | %s | %s | ≥ 1× websockify, ≥ 0.9× direct: %s |\n",
		direct.down1, ws.down1, mc.down1, ratio(mc.down1, ws.down1), ratio(mc.down1, direct.down1),
		check(mc.down1 >= ws.down1 && mc.down1 >= 0.9*direct.down1))
	fmt.Printf("| throughput, 4 streams to client (MiB/s) | %.0f | %.0f | %.0f | %s | %s | ≥ 1× websockify, ≥ 0.9× direct: %s |\n",
		direct.down4, ws.down4, mc.down4, ratio(mc.down4, ws.down4), ratio(mc.down4, direct.down4),
		check(mc.down4 >= ws.down4 && mc.down4 >= 0.9*direct.down4))
	fmt.Printf("| throughput, 1 stream from client (MiB/s) | %.0f | %.0f | %.0f | %s | %s | (no goal) |\n",
		direct.up1, ws.up1, mc.up1, ratio(mc.up1, ws.up1), ratio(mc.up1, direct.up1))
	fmt.Printf("| proxy CPU per GiB, 1 stream (s) | – | %.2f | %.2f | %s | – | ≤ 0.5× websockify: %s |\n",
		ws.cpuPerGiB, mc.cpuPerGiB, ratio(mc.cpuPerGiB, ws.cpuPerGiB), check(mc.cpuPerGiB <= 0.5*ws.cpuPerGiB))
	fmt.Printf("| round trip p50, %d B (µs) | %.0f | %.0f | %.0f | %s | %s | ≤ 1/3 websockify: %s |\n", *msgSize,
		us(direct.p50), us(ws.p50), us(mc.p50), ratio(us(mc.p50), us(ws.p50)), ratio(us(mc.p50), us(direct.p50)),
		check(mc.p50*3 <= ws.p50))
	fmt.Printf("| round trip p50 added to direct TCP (µs) | – | %.0f | %.0f | %s | – | (issue: websockify adds about 100 µs) |\n",
		us(ws.p50-direct.p50), us(mc.p50-direct.p50), ratio(us(mc.p50-direct.p50), us(ws.p50-direct.p50)))
	fmt.Printf("| round trip p99, %d B (µs) | %.0f | %.0f | %.0f | %s | %s | (no goal) |\n", *msgSize,
		us(direct.p99), us(ws.p99), us(mc.p99), ratio(us(mc.p99), us(ws.p99)), ratio(us(mc.p99), us(direct.p99)))
	fmt.Printf("| connection set-up (per s, sequential) | %.0f | %.0f | %.0f | %s | %s | ≥ 10× websockify: %s |\n",
		direct.setupRate, ws.setupRate, mc.setupRate, ratio(mc.setupRate, ws.setupRate), ratio(mc.setupRate, direct.setupRate),
		check(mc.setupRate >= 10*ws.setupRate))
	fmt.Printf("| memory per idle connection, PSS (KiB; %d / %d conns) | – | %.0f | %.1f | %s | – | < 64 KiB: %s |\n",
		ws.idleN, mc.idleN, ws.idlePSS, mc.idlePSS, ratio(mc.idlePSS, ws.idlePSS), check(mc.idlePSS < 64 && mc.idleN > 0))
	fmt.Printf("| memory per idle connection, RSS (KiB) | – | %.0f | %.1f | %s | – | (websockify RSS double-counts shared pages) |\n",
		ws.idleRSS, mc.idleRSS, ratio(mc.idleRSS, ws.idleRSS))
	fmt.Printf("\n%s; %s; GOMAXPROCS of the client %s; %d-byte messages for latency, %v per throughput test.\n",
		hostLine(), time.Now().UTC().Format(time.RFC3339), os.Getenv("GOMAXPROCS"), *msgSize, *dur)
}

func hostLine() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	model := ""
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "model name") && model == "" {
			model = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
		}
		if strings.HasPrefix(l, "processor") {
			n++
		}
	}
	return fmt.Sprintf("%s, %d CPUs (%s)", model, n, filepath.Base(os.Args[0]))
}
