package mc

import (
	"context"
	"net/netip"
	"time"
)

// Driver runs machines: a sandbox of local processes, a QEMU VM, a
// Firecracker microVM. Every driver passes driver/drivertest.
type Driver interface {
	// Name is the driver's name in configuration and in Machine.Driver.
	Name() string
	// Capabilities says what the driver can do on this host.
	Capabilities() Capabilities
	// Check verifies the host's prerequisites. Its error is one line that
	// names what is missing and the package that provides it.
	Check(ctx context.Context) error
	// Create starts a machine for spec and returns once its processes (or VM)
	// run; readiness (RFB banner, agent /health) is the caller's to wait for.
	// On error, whatever was created is already gone or is removed by Destroy.
	// Errors: EUNAVAILABLE (capacity, pool exhausted), EINVALID, EINTERNAL.
	Create(ctx context.Context, spec MachineSpec) (Machine, error)
	// Destroy removes the machine and everything it had on the host
	// (processes, namespaces, devices, directories, leases). It is idempotent
	// and works after a partial Create.
	Destroy(ctx context.Context, id string) error
	// Inspect reports on one machine.
	// Errors: ENOTFOUND when the host has nothing of it.
	Inspect(ctx context.Context, id string) (MachineStatus, error)
	// List reports every machine of this driver that the host has, including
	// ones left by an earlier process (for reconcile).
	List(ctx context.Context) ([]MachineStatus, error)
	// Wait blocks until the machine has exited, ctx ends (returns ctx.Err())
	// or the machine is unknown (ENOTFOUND). An exited machine returns nil,
	// or MachineOOMError (EUNAVAILABLE, machine_oom) when the kernel had
	// killed a process of it for memory: its processes died of its memory
	// limit. A cluster driver also ends a machine that the cluster took
	// away, with an EUNAVAILABLE error whose reason says why
	// (machine_evicted, image_pull_failed, unschedulable). A machine whose
	// processes die is seen within a second.
	// Errors: ENOTFOUND, EUNAVAILABLE (machine_oom, machine_evicted,
	// image_pull_failed, unschedulable).
	Wait(ctx context.Context, id string) error
}

// MachineOOMError is what a Driver's Wait returns for machine id when it
// exited after running out of memory.
func MachineOOMError(id string) *Error {
	return Errorf(EUNAVAILABLE, ReasonMachineOOM, "machine %s ran out of memory", id)
}

// Capabilities describe a driver on this host.
type Capabilities struct {
	// Isolation is "netns", "userns" (machines on Unix sockets below
	// SocketDir), "loopback" or "vm".
	Isolation string `json:"isolation"`
	// Network is the machine network that gateway dials are confined to; for
	// loopback isolation it is 127.0.0.1/32 with the port range below.
	Network netip.Prefix `json:"network"`
	// PortLo and PortHi bound the ports a loopback machine may use.
	PortLo int `json:"port_lo,omitempty"`
	PortHi int `json:"port_hi,omitempty"`
	// SocketDir, when set, is the directory below which machines listen
	// on Unix sockets (Machine.SocketDir): the only sockets the gateway
	// may dial.
	SocketDir string `json:"socket_dir,omitempty"`
	// MaxMachines is the number of machines the host can hold.
	MaxMachines int `json:"max_machines"`
	// Cluster reports machines placed on a cluster that every replica
	// shares: the session cap then counts every replica's sessions. A host
	// driver (false) counts only the sessions of its own replica.
	Cluster bool `json:"cluster,omitempty"`
	// Snapshots reports fast starts from a snapshot.
	Snapshots bool `json:"snapshots"`
}

// MachineSpec asks a driver for a machine.
type MachineSpec struct {
	// ID names the machine (NewMachineID); drivers derive host resource
	// names from it.
	ID string
	// SessionID is the session the machine serves: what reconcile matches
	// machines to sessions by, and the owner of the machine's leases. A
	// pooled machine's is the id that the session claiming it will take.
	SessionID string
	// Pooled says the machine is started for the warm pool, ahead of any
	// session; the driver reports it in MachineStatus.Pooled.
	Pooled   bool
	Provider string
	// StartURL is the page the browser opens first ("" for a blank page).
	StartURL string
	Secrets  MachineSecrets
	// Width and Height are the screen geometry (default 1280×800).
	Width, Height int
}

// NewMachineID returns a new machine id: "m-" and a random id (NewID), so
// that a machine id in a log line is never mistaken for a session id.
func NewMachineID() string { return "m-" + NewID() }

// MachineStatus is what a driver finds of one machine on the host.
type MachineStatus struct {
	ID        string    `json:"id"`
	SessionID string    `json:"session_id"`
	Machine   Machine   `json:"machine"`
	Running   bool      `json:"running"`
	StartedAt time.Time `json:"started_at,omitzero"`
	// Pooled reports a machine created for the warm pool (MachineSpec.Pooled),
	// claimed by a session since or not: reconcile tells pooled machines
	// that the pool no longer holds from a session's leftovers by it.
	Pooled bool `json:"pooled,omitempty"`
	// Detail says what is left when a machine is not running (for example
	// "namespace without processes").
	Detail string `json:"detail,omitempty"`
}
