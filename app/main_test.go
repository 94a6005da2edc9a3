package app_test

import (
	"os"
	"testing"

	"github.com/master-controller/mc/internal/pgtest"
	"github.com/master-controller/mc/internal/testutil"
)

func TestMain(m *testing.M) {
	code := pgtest.Run(m)
	testutil.RemoveBuilt()
	os.Exit(code)
}
