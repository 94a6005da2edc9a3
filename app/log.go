package app

import (
	"io"
	"log/slog"
	"net/netip"
	"strings"
)

// NewLogger returns the controller's logger. Below debug level, IP addresses
// in attributes are masked to their network (10.200.0.x), so logs shipped
// elsewhere do not map users to machines; secrets are mc.Secret and log as
// REDACTED at every level.
func NewLogger(w io.Writer, level, format string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv}
	if lv > slog.LevelDebug {
		opts.ReplaceAttr = maskIPs
	}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// MaskIP hides the host part of an address: 10.200.0.17 → 10.200.0.x; a
// loopback address stays as it is (it names no one).
func MaskIP(a netip.Addr) string {
	if !a.IsValid() || a.IsLoopback() {
		return a.String()
	}
	if a.Is4() || a.Is4In6() {
		s := a.Unmap().String()
		return s[:strings.LastIndexByte(s, '.')] + ".x"
	}
	p, _ := a.Prefix(48)
	return p.Addr().String() + "x"
}

func maskIPs(_ []string, a slog.Attr) slog.Attr {
	switch v := a.Value.Any().(type) {
	case netip.Addr:
		return slog.String(a.Key, MaskIP(v))
	case netip.AddrPort:
		return slog.String(a.Key, MaskIP(v.Addr())+":"+itoa(int(v.Port())))
	}
	if a.Value.Kind() == slog.KindString && (a.Key == "ip" || a.Key == "remote_addr" || a.Key == "addr") {
		s := a.Value.String()
		if ap, err := netip.ParseAddrPort(s); err == nil {
			return slog.String(a.Key, MaskIP(ap.Addr())+":"+itoa(int(ap.Port())))
		}
		if ip, err := netip.ParseAddr(s); err == nil {
			return slog.String(a.Key, MaskIP(ip))
		}
	}
	return a
}

func itoa(n int) string {
	var b [8]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}
