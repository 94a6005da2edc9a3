package mc_test

import (
	"fmt"
	"strings"
	"testing"

	mc "github.com/master-controller/mc"
)

func TestMachineKey(t *testing.T) {
	raw := mc.NewSecret(32)
	k, same, other := mc.NewMachineKey(raw), mc.NewMachineKey(mc.SecretOf(raw.Reveal())), mc.NewMachineKey(mc.NewSecret(32))
	a, b := mc.NewID(), mc.NewID()
	sa := k.Secrets(a)
	if got := same.Secrets(a); got.VNCPassword.Reveal() != sa.VNCPassword.Reveal() || got.AgentToken.Reveal() != sa.AgentToken.Reveal() {
		t.Error("two replicas with one key derive different secrets")
	}
	if len(sa.VNCPassword.Reveal()) != 11 || len(sa.AgentToken.Reveal()) != 32 {
		t.Errorf("lengths %d, %d; want 11 and 32 (as NewMachineSecrets)", len(sa.VNCPassword.Reveal()), len(sa.AgentToken.Reveal()))
	}
	distinct := map[string]bool{}
	for _, s := range []mc.MachineSecrets{sa, k.Secrets(b), other.Secrets(a)} {
		for _, v := range []string{s.VNCPassword.Reveal(), s.AgentToken.Reveal()[:11]} {
			if distinct[v] {
				t.Errorf("secret %q derived twice (per session, per purpose and per key they differ)", v)
			}
			distinct[v] = true
		}
	}
	if out := fmt.Sprintf("%v %+v %#v", k, k, k); strings.Contains(out, raw.Reveal()) {
		t.Errorf("a MachineKey prints its key: %s", out)
	}
	if !(mc.MachineKey{}).IsZero() || k.IsZero() {
		t.Error("IsZero")
	}
}
