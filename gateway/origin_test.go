package gateway

import "testing"

func TestOriginPolicy(t *testing.T) {
	tests := []struct {
		public   string
		patterns []string
		origin   string
		want     bool
	}{
		{"https://mc.example.com", nil, "", true},
		{"https://mc.example.com", nil, "https://mc.example.com", true},
		{"https://mc.example.com/base/", nil, "https://mc.example.com", true},
		{"https://mc.example.com", nil, "https://mc.example.com:443", true},
		{"https://mc.example.com:8443", nil, "https://mc.example.com", false},
		{"https://mc.example.com", nil, "http://mc.example.com", false},
		{"https://mc.example.com", nil, "https://evil.example", false},
		{"https://mc.example.com", nil, "https://mc.example.com.evil.example", false},
		{"https://mc.example.com", nil, "null", false},
		{"https://mc.example.com", nil, "file://", false},
		{"http://127.0.0.1:8080", nil, "http://localhost:8080", true},
		{"http://127.0.0.1:8080", nil, "http://[::1]:8080", true},
		{"http://127.0.0.1:8080", nil, "http://localhost:8081", false},
		{"http://127.0.0.1:8080", nil, "https://localhost:8080", false},
		{"http://0.0.0.0:8080", nil, "http://127.0.0.1:8080", true},
		{"http://0.0.0.0:8080", nil, "http://192.168.1.5:8080", false},
		{"https://mc.example.com", nil, "http://localhost", false},
		{"", []string{"app.example.com"}, "https://app.example.com", true},
		{"", []string{"*.example.org"}, "http://a.example.org", true},
		{"", []string{"https://*.example.org"}, "http://a.example.org", false},
		{"", []string{"https://*.example.org"}, "https://A.Example.org", true},
		{"", []string{"App.Example.com"}, "https://app.example.com", true},
		{"", nil, "https://anything.example", false},
	}
	for _, tt := range tests {
		p, err := newOriginPolicy(tt.public, tt.patterns)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.allowed(tt.origin); got != tt.want {
			t.Errorf("public %q, patterns %q, Origin %q: got %v, want %v", tt.public, tt.patterns, tt.origin, got, tt.want)
		}
	}
	for _, bad := range []string{"mc.example.com", "ftp://mc.example.com", "https://", ":"} {
		if _, err := newOriginPolicy(bad, nil); err == nil {
			t.Errorf("public URL %q: got no error", bad)
		}
	}
}
