package agent

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// TestCommandLines pins Xvnc's and Chromium's command lines.
func TestCommandLines(t *testing.T) {
	cfg := Config{
		Listen: "10.200.0.2:8080", TokenFile: "/m/token", VNCListen: "10.200.0.2:5900",
		VNCPasswordFile: "/m/vnc-password", Display: 100,
		Home: "/m/home", Width: 1280, Height: 800,
	}
	if err := cfg.Check(); err != nil {
		t.Fatal(err)
	}
	unixCfg := cfg
	unixCfg.Listen, unixCfg.VNCListen = "unix:/run/mc-sock/agent", "unix:/run/mc-sock/vnc"
	if err := unixCfg.Check(); err != nil {
		t.Fatal(err)
	}
	must := func(args []string, err error) []string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return args
	}
	tests := []struct {
		name string
		args []string
	}{
		{"xvnc", must(xvncArgs(cfg, "/m/vnc-password.vnc", "/m/vnc-password.xauth"))},
		{"xvnc-unix", must(xvncArgs(unixCfg, "/m/vnc-password.vnc", "/m/vnc-password.xauth"))},
		{"chromium-root-production", chromiumArgs(cfg, true, false)},
		{"chromium-user-small-shm", chromiumArgs(cfg, false, true)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Asked for or not, a production agent never turns Chromium's
			// sandbox off.
			if len(testUnsandboxedArgs) == 0 && slices.Contains(tt.args, "--no-sandbox") {
				t.Fatalf("production command line has --no-sandbox: %q", tt.args)
			}
			got := strings.Join(tt.args, "\n") + "\n"
			path := filepath.Join("testdata", tt.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update)", err)
			}
			if got != string(want) {
				t.Errorf("command line:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestConfigCheck(t *testing.T) {
	valid := func() Config {
		return Config{Listen: "127.0.0.1:1", TokenFile: "t", VNCListen: "127.0.0.1:2", VNCPasswordFile: "p",
			Display: 100, Home: "h"}
	}
	tests := []struct {
		name   string
		modify func(*Config)
		ok     bool
	}{
		{"valid", func(*Config) {}, true},
		{"no listen", func(c *Config) { c.Listen = "" }, false},
		{"no home", func(c *Config) { c.Home = "" }, false},
		{"no display", func(c *Config) { c.Display = 0 }, false},
		{"bad vnc address", func(c *Config) { c.VNCListen = "nope" }, false},
		{"tiny screen", func(c *Config) { c.Width, c.Height = 10, 10 }, false},
		{"longest tmp dir", func(c *Config) { c.TmpDir = "/" + strings.Repeat("t", MaxTmpDirLen-1) }, true},
		{"tmp dir too long", func(c *Config) { c.TmpDir = "/" + strings.Repeat("t", MaxTmpDirLen) }, false},
		{"long home, short tmp dir", func(c *Config) { c.Home = "/" + strings.Repeat("h", 200); c.TmpDir = "/tmp/mc-01234567" }, true},
		{"long home, default tmp dir", func(c *Config) { c.Home = "/" + strings.Repeat("h", 200) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.modify(&c)
			if err := c.Check(); (err == nil) != tt.ok {
				t.Fatalf("Check() = %v, want ok %v", err, tt.ok)
			}
		})
	}
	c := valid()
	_ = c.Check()
	// Chromium: Debian's binary itself when installed, not its launcher.
	wantChromium := "chromium"
	if _, err := os.Stat(debianChromium); err == nil {
		wantChromium = debianChromium
	}
	if c.Width != 1280 || c.Height != 800 || c.Xvnc != "Xvnc" || c.Chromium != wantChromium || !filepath.IsAbs(c.Home) ||
		c.TmpDir != filepath.Join(c.Home, "tmp") {
		t.Errorf("defaults: %+v", c)
	}
	c = valid()
	c.Chromium = "/opt/chrome/chrome"
	_ = c.Check()
	if c.Chromium != "/opt/chrome/chrome" {
		t.Errorf("a Chromium given by path became %s", c.Chromium)
	}
}

// TestEnvironments: Chromium's TMPDIR is TmpDir; Xvnc has no TMPDIR (its
// socket and lock file stay in /tmp/.X11-unix and /tmp).
func TestEnvironments(t *testing.T) {
	cfg := Config{Listen: "127.0.0.1:1", TokenFile: "t", VNCListen: "127.0.0.1:2", VNCPasswordFile: "p",
		Display: 100, Home: "/m/home", TmpDir: "/tmp/mc-01234567"}
	if err := cfg.Check(); err != nil {
		t.Fatal(err)
	}
	if env := chromiumEnv(cfg, "/m/xauth"); !slices.Contains(env, "TMPDIR=/tmp/mc-01234567") || !slices.Contains(env, "HOME=/m/home") {
		t.Errorf("chromium env = %q, want TMPDIR=/tmp/mc-01234567 and HOME=/m/home", env)
	}
	for _, kv := range xvncEnv(cfg) {
		if strings.HasPrefix(kv, "TMPDIR=") {
			t.Errorf("xvnc env has %s, want no TMPDIR", kv)
		}
	}
}

func TestCheckPrivateDir(t *testing.T) {
	dir := t.TempDir()
	private := filepath.Join(dir, "private")
	open := filepath.Join(dir, "open")
	link := filepath.Join(dir, "link")
	file := filepath.Join(dir, "file")
	for _, err := range []error{os.Mkdir(private, 0o700), os.Mkdir(open, 0o700), os.Chmod(open, 0o1777),
		os.Symlink(private, link), os.WriteFile(file, nil, 0o600)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		dir string
		ok  bool
	}{
		{private, true},
		{open, false},
		{link, false},
		{file, false},
		{filepath.Join(dir, "missing"), false},
	}
	for _, tt := range tests {
		if err := checkPrivateDir(tt.dir); (err == nil) != tt.ok {
			t.Errorf("checkPrivateDir(%s) = %v, want ok %v", filepath.Base(tt.dir), err, tt.ok)
		}
	}
}

func TestParseGeometry(t *testing.T) {
	tests := []struct {
		in   string
		w, h int
		ok   bool
	}{
		{"1280x800", 1280, 800, true},
		{"1x1", 1, 1, true},
		{"1280", 0, 0, false},
		{"x800", 0, 0, false},
		{"-1x5", 0, 0, false},
		{"axb", 0, 0, false},
	}
	for _, tt := range tests {
		w, h, err := ParseGeometry(tt.in)
		if (err == nil) != tt.ok || w != tt.w || h != tt.h {
			t.Errorf("ParseGeometry(%q) = %d, %d, %v; want %d, %d, ok %v", tt.in, w, h, err, tt.w, tt.h, tt.ok)
		}
	}
}
