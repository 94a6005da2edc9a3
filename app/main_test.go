package app_test

import (
	"testing"

	"github.com/master-controller/mc/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
