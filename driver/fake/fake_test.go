package fake_test

import (
	"context"
	"fmt"
	"net"
	"testing"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/driver/drivertest"
	"github.com/master-controller/mc/driver/fake"
)

// The fake driver passes the same conformance suite as the real ones.
func TestFakeConformance(t *testing.T) {
	var drivers []*fake.Driver
	drivertest.Run(t, func(t *testing.T) mc.Driver {
		d := fake.New(fake.Config{})
		drivers = append(drivers, d)
		return d
	}, drivertest.Options{
		Kill: func(t testing.TB, id string) {
			for _, d := range drivers {
				d.Kill(id)
			}
		},
		Leftovers: func(t testing.TB, spec mc.MachineSpec) []string {
			var left []string
			for _, d := range drivers {
				if st, err := d.Inspect(context.Background(), spec.ID); err == nil {
					left = append(left, fmt.Sprintf("machine %s (running %v)", spec.ID, st.Running))
					if c, err := net.Dial("tcp", st.Machine.VNCAddr().String()); err == nil {
						c.Close()
						left = append(left, "VNC port still accepts")
					}
				}
			}
			return left
		},
	})
}

// TestShare: two drivers on one set of machines, as two replicas see one
// cluster: a machine created through one is listed, waited on and destroyed
// through the other, and both report a cluster.
func TestShare(t *testing.T) {
	a := fake.New(fake.Config{Cluster: true})
	b := a.Share()
	if !a.Capabilities().Cluster || !b.Capabilities().Cluster {
		t.Fatalf("Cluster: got %v and %v, want true for both", a.Capabilities().Cluster, b.Capabilities().Cluster)
	}
	if fake.New(fake.Config{}).Capabilities().Cluster {
		t.Fatal("Cluster without the option: got true, want false")
	}
	id := mc.NewMachineID()
	if _, err := a.Create(t.Context(), mc.MachineSpec{ID: id, SessionID: mc.NewID(), Secrets: mc.NewMachineSecrets()}); err != nil {
		t.Fatal(err)
	}
	list, err := b.List(t.Context())
	if err != nil || len(list) != 1 || list[0].ID != id || !list[0].Running {
		t.Fatalf("list through the other driver: %+v, %v; want the running machine", list, err)
	}
	waited := make(chan error, 1)
	go func() { waited <- b.Wait(t.Context(), id) }()
	a.Kill(id)
	if err := <-waited; err != nil {
		t.Fatalf("wait through the other driver: %v, want nil once it exited", err)
	}
	if err := b.Destroy(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Inspect(t.Context(), id); mc.ErrorCode(err) != mc.ENOTFOUND {
		t.Fatalf("inspect after destroy through the other driver: %v, want ENOTFOUND", err)
	}
}
