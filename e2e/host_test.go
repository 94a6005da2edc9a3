package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/procfs"
	"github.com/master-controller/mc/internal/testutil"
	"github.com/master-controller/mc/netpool"
	"github.com/master-controller/mc/rfb/rfbtest"
)

// machineState is what the tests read of the local driver's machine.json:
// where a machine lives on the host.
type machineState struct {
	ID        string     `json:"id"`
	SessionID string     `json:"session_id"`
	Mode      string     `json:"mode"`
	Pool      string     `json:"pool"`
	Slot      int        `json:"slot"`
	Namespace string     `json:"netns"`
	Veth      string     `json:"veth"`
	Machine   mc.Machine `json:"machine"`
	PID       int        `json:"pid"`
	PGID      int        `json:"pgid"`
	// TmpDir is the machine's private temporary directory outside its
	// directory (drivers that have one record it).
	TmpDir string `json:"tmp_dir"`
	// UID is a confined machine's uid, and Cgroup the version of its
	// cgroup (zero when unconfined).
	UID        int      `json:"uid"`
	Cgroup     int      `json:"cgroup"`
	CgroupDirs []string `json:"cgroup_dirs"`

	Dir  string `json:"-"` // the machine's directory
	Home string `json:"-"` // its private home
}

// machineDir is the local driver's directory of machine id under dataDir
// (named by the same short hash as its namespace).
func machineDir(dataDir, id string) string {
	return filepath.Join(dataDir, "machines", netpool.Hash(id))
}

// readMachine reads machine id's machine.json; the machine must have
// started (its agent's pid and process group recorded).
func readMachine(tb testing.TB, dataDir, id string) machineState {
	tb.Helper()
	dir := machineDir(dataDir, id)
	b, err := os.ReadFile(filepath.Join(dir, "machine.json"))
	if err != nil {
		tb.Fatalf("machine %s: %v", id, err)
	}
	var ms machineState
	if err := json.Unmarshal(b, &ms); err != nil {
		tb.Fatalf("machine %s: machine.json: %v", id, err)
	}
	if ms.ID != id || ms.PID <= 0 || ms.PGID <= 1 {
		tb.Fatalf("machine %s: machine.json names machine %q, pid %d, process group %d", id, ms.ID, ms.PID, ms.PGID)
	}
	ms.Dir, ms.Home = dir, filepath.Join(dir, "home")
	return ms
}

// machineProcs lists the live processes of a machine: members of its
// process group, any process whose environment sets HOME to its home
// (a process that left the group, such as Chromium's crash handler), and
// every process in its cgroup when it is confined.
func machineProcs(ms machineState) []int {
	pids := append(procfs.GroupMembers(ms.PGID, 0), procfs.HomePids(ms.Home)...)
	if len(ms.CgroupDirs) > 0 {
		b, _ := os.ReadFile(filepath.Join(ms.CgroupDirs[0], "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	slices.Sort(pids)
	return slices.Compact(pids)
}

// procNames describes pids for failure messages ("1234 chromium").
func procNames(pids []int) string {
	var s []string
	for _, pid := range pids {
		comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		s = append(s, fmt.Sprintf("%d %s", pid, strings.TrimSpace(string(comm))))
	}
	return strings.Join(s, ", ")
}

// namespaces lists the host's named network namespaces (ip netns list).
func namespaces(tb testing.TB) map[string]bool {
	tb.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		tb.Fatalf("ip netns list: %v", err)
	}
	ns := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			ns[f[0]] = true
		}
	}
	return ns
}

// sweepMachine removes from the host what a test left of machine ms when it
// failed before a controller could: its processes, namespace, veth, cgroups
// and directories. It is for cleanups only; tests check leftovers instead.
func sweepMachine(ms machineState) {
	for _, pid := range machineProcs(ms) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if ms.Namespace != "" {
		_ = exec.Command("ip", "netns", "del", ms.Namespace).Run()
	}
	if ms.Veth != "" {
		_ = exec.Command("ip", "link", "del", ms.Veth).Run()
	}
	for _, d := range ms.CgroupDirs {
		_ = os.Remove(d)
	}
	_ = os.RemoveAll(ms.Dir)
	if ms.TmpDir != "" {
		_ = os.RemoveAll(ms.TmpDir)
	}
}

// leaseOf returns the lease that owner (a machine's session) holds in the
// store ("" when it has none).
func leaseOf(ctx context.Context, st mc.LeaseStore, owner string) (string, error) {
	leases, err := st.Leases(ctx, "")
	if err != nil {
		return "", fmt.Errorf("list leases: %w", err)
	}
	for _, l := range leases {
		if l.Owner == owner {
			return fmt.Sprintf("%s/%d", l.Pool, l.Value), nil
		}
	}
	return "", nil
}

// leftovers lists what the host and the store still hold of a machine: its
// namespace, veth, processes, directory and lease; empty when it is gone.
func leftovers(tb testing.TB, st mc.LeaseStore, ms machineState) []string {
	tb.Helper()
	var left []string
	if ms.Namespace != "" && namespaces(tb)[ms.Namespace] {
		left = append(left, "namespace "+ms.Namespace)
	}
	if ms.Veth != "" {
		if _, err := os.Stat("/sys/class/net/" + ms.Veth); err == nil {
			left = append(left, "veth "+ms.Veth)
		}
	}
	if pids := machineProcs(ms); len(pids) > 0 {
		left = append(left, "processes "+procNames(pids))
	}
	if _, err := os.Stat(ms.Dir); err == nil {
		left = append(left, "directory "+ms.Dir)
	}
	if ms.TmpDir != "" {
		if _, err := os.Stat(ms.TmpDir); err == nil {
			left = append(left, "tmp directory "+ms.TmpDir)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := leaseOf(ctx, st, ms.SessionID)
	if err != nil {
		tb.Fatal(err)
	}
	if l != "" {
		left = append(left, "lease "+l)
	}
	return left
}

// The demo provider's sign-in page: a full-window background of this colour
// with a big white "Sign in" button (360×120 CSS pixels) at the centre.
var (
	demoBlue  = color.RGBA{0x1e, 0x6f, 0xd9, 0xff}
	white     = color.RGBA{0xff, 0xff, 0xff, 0xff}
	tolerance = 12 // per channel
)

func near(c, want color.RGBA, tol int) bool {
	d := func(a, b uint8) bool { return int(a)-int(b) <= tol && int(b)-int(a) <= tol }
	return d(c.R, want.R) && d(c.G, want.G) && d(c.B, want.B)
}

func rgba(img image.Image, x, y int) color.RGBA {
	r, g, b, a := img.At(x, y).RGBA()
	return color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(b >> 8), uint8(a >> 8)}
}

// demoPageProblem says how img differs from the demo sign-in page ("" when
// it shows it): background pixels in the corners and at the sides, away
// from the heading and the button, must be the page's blue; the button
// around the centre must be white (points inside the button but off its
// label, which is blue text).
func demoPageProblem(img image.Image) string {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	if w < 640 || h < 400 {
		return fmt.Sprintf("screen is %dx%d", w, h)
	}
	cx, cy := b.Min.X+w/2, b.Min.Y+h/2
	var bad []string
	for _, p := range []image.Point{
		{b.Min.X + 20, b.Min.Y + 20}, {b.Max.X - 21, b.Min.Y + 20},
		{b.Min.X + 20, b.Max.Y - 21}, {b.Max.X - 21, b.Max.Y - 21},
		{b.Min.X + w/8, cy}, {b.Max.X - w/8, cy},
		{cx, b.Min.Y + h*3/4}, {cx, b.Max.Y - 30},
	} {
		if c := rgba(img, p.X, p.Y); !near(c, demoBlue, tolerance) {
			bad = append(bad, fmt.Sprintf("background %v is %v", p, c))
		}
	}
	for _, p := range []image.Point{
		{cx, cy - 48}, {cx, cy + 48}, {cx - 160, cy}, {cx + 160, cy}, {cx - 160, cy - 48}, {cx + 160, cy + 48},
	} {
		if c := rgba(img, p.X, p.Y); !near(c, white, 40) {
			bad = append(bad, fmt.Sprintf("button %v is %v", p, c))
		}
	}
	// The centre itself: the button's label is blue text on white, so most
	// of a 60×30 box around the centre is white.
	whiteN, n := 0, 0
	for y := cy - 15; y < cy+15; y++ {
		for x := cx - 30; x < cx+30; x++ {
			n++
			if near(rgba(img, x, y), white, 60) {
				whiteN++
			}
		}
	}
	if whiteN*2 < n {
		bad = append(bad, fmt.Sprintf("centre is white in %d of %d pixels", whiteN, n))
	}
	return strings.Join(bad, "; ")
}

// vncCapture takes one screenshot through the VNC server at addr with its
// password.
func vncCapture(addr string, password mc.Secret) (*image.RGBA, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(15 * time.Second)); err != nil {
		return nil, err
	}
	return rfbtest.Capture(conn, password)
}

// waitDemoPage takes screenshots through VNC until one shows the demo
// sign-in page (the browser paints a moment after the machine is ready), for
// at most timeout, and returns it. It gives up at once when session id ends.
func waitDemoPage(tb testing.TB, st mc.Store, id, addr string, password mc.Secret, timeout time.Duration) *image.RGBA {
	tb.Helper()
	var img *image.RGBA
	var ended *mc.Session
	err := testutil.Poll(tb.Context(), timeout, func() error {
		if s, err := st.Session(context.Background(), id); err == nil && s.State.Final() {
			ended = s
			return nil
		}
		var err error
		img, err = vncCapture(addr, password)
		if err != nil {
			return fmt.Errorf("capture: %w", err)
		}
		if p := demoPageProblem(img); p != "" {
			return fmt.Errorf("screen does not show the demo page: %s", p)
		}
		return nil
	})
	if err != nil {
		if img != nil {
			tb.Logf("last screenshot: %s", savePNG(img))
		}
		tb.Fatalf("VNC screenshot of %s within %s: %v", addr, timeout, err)
	}
	if ended != nil {
		tb.Fatalf("session %s ended (%s, reason %q) before the screen showed the demo page", id, ended.State, ended.Reason)
	}
	return img
}

// savePNG writes img to a new file in os.TempDir, kept for a person to look
// at after a failure, and returns its path.
func savePNG(img image.Image) string {
	f, err := os.CreateTemp("", "e2e-screen-*.png")
	if err != nil {
		return "(" + err.Error() + ")"
	}
	defer f.Close()
	if err := png.Encode(f, img); err != nil {
		return "(" + err.Error() + ")"
	}
	return f.Name()
}
