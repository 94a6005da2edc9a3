package gateway

import (
	"fmt"
	"net/netip"
	"net/url"
	"path"
	"strings"
)

// originPolicy decides which browser Origins may open the WebSocket: the
// origin of the configured public URL and the allow-list, never the
// request's own Host header (which the client chooses, so a page on
// evil.example that sends Host: evil.example would pass a same-host check).
type originPolicy struct {
	public   *url.URL // scheme and host of Config.PublicURL; nil: none
	patterns []string // Config.AllowedOrigins, lower case
}

func newOriginPolicy(publicURL string, patterns []string) (originPolicy, error) {
	p := originPolicy{}
	for _, pat := range patterns {
		p.patterns = append(p.patterns, strings.ToLower(pat))
	}
	if publicURL == "" {
		return p, nil
	}
	u, err := url.Parse(publicURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return p, fmt.Errorf("public URL %q is not an http(s) URL", publicURL)
	}
	p.public = &url.URL{Scheme: u.Scheme, Host: u.Host}
	return p, nil
}

// allowed reports whether a request with this Origin header may open the
// socket. A request without one is not from a browser page (nothing to
// forge) and is allowed; the viewer token still guards it.
func (p originPolicy) allowed(origin string) bool {
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	if p.public != nil && sameOrigin(u, p.public) {
		return true
	}
	for _, pat := range p.patterns {
		target := strings.ToLower(u.Host)
		if strings.Contains(pat, "://") {
			target = strings.ToLower(u.Scheme) + "://" + target
		}
		if ok, _ := path.Match(pat, target); ok {
			return true
		}
	}
	return false
}

// sameOrigin compares scheme, host and port (the scheme's default port when
// none is given). A public URL on a loopback or unspecified address (the
// default, http://127.0.0.1:8080) also matches the loopback names of the
// same scheme and port (http://localhost:8080): only a page served by this
// very listener can carry such an Origin.
func sameOrigin(a, public *url.URL) bool {
	if !strings.EqualFold(a.Scheme, public.Scheme) || portOf(a) != portOf(public) {
		return false
	}
	ah, ph := strings.ToLower(a.Hostname()), strings.ToLower(public.Hostname())
	if ah == ph {
		return true
	}
	return isLoopbackName(ah) && (isLoopbackName(ph) || isUnspecified(ph))
}

func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "https") {
		return "443"
	}
	return "80"
}

func isLoopbackName(h string) bool {
	if h == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.IsLoopback()
}

func isUnspecified(h string) bool {
	a, err := netip.ParseAddr(h)
	return err == nil && a.IsUnspecified()
}
