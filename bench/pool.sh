#!/bin/sh
# Benchmarks POST /api/v1/sessions → ready with the warm pool against cold
# starts, in one run of one server on the local driver (bench/cmd/poolbench).
# Prints markdown tables.
#
# Usage: bench/pool.sh [poolbench flags, e.g. -n 50 -burst 10 -pool 4 -every 2s -mode netns]
set -eu
cd "$(dirname "$0")/.."
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/master-controller" ./cmd/master-controller
go build -o "$bin/mc-agent" ./cmd/mc-agent
go build -o "$bin/poolbench" ./bench/cmd/poolbench
"$bin/poolbench" -server "$bin/master-controller" -agent "$bin/mc-agent" "$@"
