#!/bin/sh
# Soak test (issue 11): the controller (fake driver, PostgreSQL) under mixed
# load while PostgreSQL restarts and its disk fills once; prints a markdown
# summary and exits 1 if an invariant fails. Needs root and PostgreSQL.
#
# Usage: bench/soak.sh [--duration 30m] [soak flags; --help lists them]
set -eu
cd "$(dirname "$0")/.." && exec go run ./bench/cmd/soak "$@"
