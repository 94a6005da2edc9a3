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
