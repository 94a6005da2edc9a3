package netpool

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	mc "github.com/master-controller/mc"
	"golang.org/x/sys/unix"
)

// NamespaceDir is where `ip netns` keeps named network namespaces.
const NamespaceDir = "/run/netns"

// Veth is one host-side veth of a machine.
type Veth struct {
	// Name is the interface name ("mcv…").
	Name string
	// Master is the bridge it is a port of ("" when none).
	Master string
}

// Namespaces lists the named network namespaces whose name starts with
// "mc-", for reconcile.
func Namespaces() ([]string, error) {
	ents, err := os.ReadDir(NamespaceDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), NamespacePrefix) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// Veths lists the host's interfaces whose name starts with "mcv", with the
// bridge each is attached to, for reconcile.
func Veths() ([]Veth, error) {
	ents, err := os.ReadDir("/sys/class/net")
	if err != nil {
		return nil, fmt.Errorf("list veths: %w", err)
	}
	var vs []Veth
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), VethPrefix) {
			continue
		}
		v := Veth{Name: e.Name()}
		if target, err := os.Readlink("/sys/class/net/" + e.Name() + "/master"); err == nil {
			v.Master = filepath.Base(target)
		}
		vs = append(vs, v)
	}
	return vs, nil
}

// RemoveNamespace deletes a named network namespace; a missing one is fine.
func RemoveNamespace(ctx context.Context, name string) error {
	if _, err := os.Stat(NamespaceDir + "/" + name); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if _, err := runIP(ctx, "ip", "netns", "delete", name); err != nil && !isMissing(err) {
		return fmt.Errorf("remove namespace %s: %w", name, err)
	}
	return nil
}

// RemoveLink deletes a network interface (a veth, which takes its peer with
// it, or a bridge); a missing one is fine.
func RemoveLink(ctx context.Context, name string) error {
	if _, err := os.Stat("/sys/class/net/" + name); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if _, err := runIP(ctx, "ip", "link", "delete", name); err != nil && !isMissing(err) {
		return fmt.Errorf("remove link %s: %w", name, err)
	}
	return nil
}

// Pids returns the processes whose network namespace is the named one, so
// that nothing survives in a namespace that is being removed. A missing
// namespace has none.
func Pids(name string) ([]int, error) {
	var st unix.Stat_t
	if err := unix.Stat(NamespaceDir+"/"+name, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, fmt.Errorf("stat namespace %s: %w", name, err)
	}
	want := "net:[" + strconv.FormatUint(st.Ino, 10) + "]"
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var pids []int
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		// Never this process: a thread of it may be inside for Do.
		if err != nil || pid == self {
			continue
		}
		if l, err := os.Readlink("/proc/" + e.Name() + "/ns/net"); err == nil && l == want {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// Do runs fn on an OS thread that has joined the named network namespace;
// sockets that fn opens live there. The thread returns to its own namespace
// afterwards; if it cannot, it is discarded, so no other goroutine ever runs
// in the namespace.
func Do(name string, fn func() error) error {
	target, err := os.Open(NamespaceDir + "/" + name)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", name, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open own namespace: %w", err)
			return
		}
		defer home.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace %s: %w", name, err)
			return
		}
		err = fn()
		if unix.Setns(int(home.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		} // else: exit locked, and the runtime ends the thread
		errc <- err
	}()
	return <-errc
}

// FreeNetwork returns a /24 drawn at random within space that overlaps no
// address of the host's interfaces (a bridge another test or bench run has
// up included), for tests and benches that set up a machine network of
// their own. Errors: EUNAVAILABLE when 100 draws found none.
func FreeNetwork(space netip.Prefix) (netip.Prefix, error) {
	var used []netip.Prefix
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			used = append(used, p.Masked())
		}
	}
	space = space.Masked()
	if !space.Addr().Is4() || space.Bits() > 24 {
		return netip.Prefix{}, mc.Errorf(mc.EINVALID, mc.ReasonBadNetwork, "%s is not an IPv4 space of /24 networks", space)
	}
	a := space.Addr().As4()
	base := binary.BigEndian.Uint32(a[:])
	n := big.NewInt(1 << (24 - space.Bits()))
	for range 100 {
		r, err := rand.Int(rand.Reader, n)
		if err != nil {
			return netip.Prefix{}, err
		}
		binary.BigEndian.PutUint32(a[:], base|uint32(r.Int64())<<8) // the r-th /24 of space
		p := netip.PrefixFrom(netip.AddrFrom4(a), 24)
		if !slices.ContainsFunc(used, p.Overlaps) {
			return p, nil
		}
	}
	return netip.Prefix{}, mc.Errorf(mc.EUNAVAILABLE, mc.ReasonPoolExhausted, "no free /24 in %s", space)
}
