package mc_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/master-controller/mc"
)

func TestDuration(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{15 * time.Minute, "15m"},
		{time.Hour, "1h"},
		{90 * time.Minute, "1h30m"},
		{time.Hour + 30*time.Second, "1h0m30s"},
		{90 * time.Second, "1m30s"},
		{1500 * time.Millisecond, "1.5s"},
		{250 * time.Millisecond, "250ms"},
		{0, "0s"},
	}
	for _, tt := range tests {
		b, err := json.Marshal(mc.Duration(tt.d))
		if err != nil || string(b) != `"`+tt.want+`"` {
			t.Errorf("marshal %v: got %s %v, want %q", tt.d, b, err, tt.want)
		}
		var back mc.Duration
		if err := json.Unmarshal(b, &back); err != nil || time.Duration(back) != tt.d {
			t.Errorf("unmarshal %s: got %v %v, want %v", b, time.Duration(back), err, tt.d)
		}
	}
	var d mc.Duration
	if err := json.Unmarshal([]byte(`900000000000`), &d); err != nil || time.Duration(d) != 15*time.Minute {
		t.Errorf("nanoseconds: got %v %v, want 15m", time.Duration(d), err)
	}
	for _, bad := range []string{`"15 minutes"`, `true`, `"x"`, `{}`} {
		if err := json.Unmarshal([]byte(bad), &d); err == nil {
			t.Errorf("unmarshal %s: got no error", bad)
		}
	}
}

// TestProviderJSON checks that a provider's login_timeout travels as a
// duration string ("15m"), not as nanoseconds, and that every other field
// keeps its shape.
func TestProviderJSON(t *testing.T) {
	p := mc.Provider{Name: "acme", DisplayName: "Acme", LoginCommand: []string{"acme", "login"},
		Files: []mc.CredentialFile{{Path: "~/.acme/t.json", RequiredKeys: []string{"token"}}}, LoginTimeout: 15 * time.Minute}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"name":"acme","display_name":"Acme","login_command":["acme","login"],` +
		`"files":[{"path":"~/.acme/t.json","required_keys":["token"]}],"login_timeout":"15m"}`
	if string(b) != want {
		t.Errorf("got %s, want %s", b, want)
	}
	var back mc.Provider
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, p) {
		t.Errorf("round trip: got %+v %v, want %+v", back, err, p)
	}
	// In a list, by pointer, and absent.
	b, _ = json.Marshal([]*mc.Provider{&p})
	if !strings.Contains(string(b), `"login_timeout":"15m"`) {
		t.Errorf("by pointer: got %s", b)
	}
	keep := mc.Provider{LoginTimeout: time.Minute}
	if err := json.Unmarshal([]byte(`{"name":"x"}`), &keep); err != nil || keep.LoginTimeout != time.Minute || keep.Name != "x" {
		t.Errorf("absent login_timeout: got %+v %v, want it kept", keep, err)
	}
}
