package browsertest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// isolation keeps Chromium in a network namespace of its own, holding only a
// loopback interface, so that it never sees the host's interfaces change.
// (Chromium fails its requests in flight with net::ERR_NETWORK_CHANGED when
// an address appears or goes anywhere on the host, which happens whenever a
// test creates a machine's veth pair or bridge.) Loopback addresses that the
// browser opens are forwarded, port for port, to the same addresses on the
// host, so URLs stay as they are, Host and Origin included.
type isolation struct {
	nsFD int // the browser's network namespace

	mu     sync.Mutex
	fwd    map[string]net.Listener // by address, inside the namespace
	conns  map[net.Conn]struct{}   // proxied connections, both ends
	closed bool
	wg     sync.WaitGroup
}

// isolateCmd makes the browser start in a new network namespace. It also
// does what chromedp does to the command by default (kill the browser when
// the test process dies), since a command modifier replaces that.
func isolateCmd(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = new(syscall.SysProcAttr)
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWNET
}

// newIsolation takes hold of the network namespace of process pid and brings
// its loopback interface up.
func newIsolation(pid int) (*isolation, error) {
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/net", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open network namespace of %d: %w", pid, err)
	}
	iso := &isolation{nsFD: fd, fwd: map[string]net.Listener{}, conns: map[net.Conn]struct{}{}}
	if err := iso.do(loopbackUp); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bring up loopback in the browser's namespace: %w", err)
	}
	return iso, nil
}

// do runs fn on a thread that has entered the browser's namespace, and
// then puts the thread back into its own namespace. (A thread must never be
// left behind in the namespace: a goroutine that exits locked discards its
// thread, except Go's main thread, which stays parked, and then
// /proc/self/ns/net names the wrong namespace.) If the way back fails, the
// thread stays locked, so that no other goroutine ever runs on it.
func (iso *isolation) do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open own network namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(iso.nsFD, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("return to own network namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

func loopbackUp() error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get flags of lo: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	return nil
}

// forward makes addr (a loopback host:port) inside the namespace lead to
// the same addr on the host. It is idempotent.
func (iso *isolation) forward(addr string) error {
	iso.mu.Lock()
	defer iso.mu.Unlock()
	if iso.closed {
		return errors.New("browser closed")
	}
	if _, ok := iso.fwd[addr]; ok {
		return nil
	}
	var l net.Listener
	err := iso.do(func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		return fmt.Errorf("listen on %s in the browser's namespace: %w", addr, err)
	}
	iso.fwd[addr] = l
	iso.wg.Add(1)
	go func() {
		defer iso.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			iso.wg.Add(1)
			go func() {
				defer iso.wg.Done()
				iso.proxy(c, addr)
			}()
		}
	}()
	return nil
}

// proxy copies bytes between c (in the browser's namespace) and a new
// connection to addr on the host, until both directions end.
func (iso *isolation) proxy(c net.Conn, addr string) {
	defer c.Close()
	up, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer up.Close()
	if !iso.track(c, up) {
		return
	}
	defer iso.untrack(c, up)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
}

func (iso *isolation) track(cs ...net.Conn) bool {
	iso.mu.Lock()
	defer iso.mu.Unlock()
	if iso.closed {
		return false
	}
	for _, c := range cs {
		iso.conns[c] = struct{}{}
	}
	return true
}

func (iso *isolation) untrack(cs ...net.Conn) {
	iso.mu.Lock()
	defer iso.mu.Unlock()
	for _, c := range cs {
		delete(iso.conns, c)
	}
}

// close stops the forwarders, closes the connections that they carry and
// lets go of the namespace.
func (iso *isolation) close() {
	iso.mu.Lock()
	iso.closed = true
	for _, l := range iso.fwd {
		l.Close()
	}
	for c := range iso.conns {
		c.Close()
	}
	iso.mu.Unlock()
	iso.wg.Wait()
	unix.Close(iso.nsFD)
}
