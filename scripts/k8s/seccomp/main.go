// Command seccomp prints the seccomp profile that machine pods run under
// with MC_K8S_SECCOMP_PROFILE: containerd's own RuntimeDefault profile as it
// applies to a container with every capability dropped, plus what
// Chromium's user-namespace sandbox needs and RuntimeDefault refuses.
//
// RuntimeDefault (containerd 1.6) lets a process without CAP_SYS_ADMIN
// neither unshare(2) nor clone(2) with CLONE_NEW* flags, and without
// CAP_SYS_CHROOT not chroot(2): Chromium's namespace sandbox makes a user
// namespace (in which it holds those capabilities) and chroots its renderers
// into an empty directory, so under RuntimeDefault it finds "no usable
// sandbox" and refuses to start. This profile adds exactly those three
// system calls; every other rule is RuntimeDefault's.
//
// Run it from this directory: go run . > ../../../deploy/kubernetes/seccomp/mc-chromium.json
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/containerd/containerd/contrib/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func main() {
	// An empty bounding set: the pod drops every capability.
	p := seccomp.DefaultProfile(&specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{}}})
	p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{
		Names:  []string{"unshare", "clone", "chroot"},
		Action: specs.ActAllow,
	})
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Stdout.Write(append(b, '\n'))
}
