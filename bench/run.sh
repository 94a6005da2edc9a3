#!/bin/sh
# Benchmarks master-controller's websockify mode against Debian's websockify
# and a direct TCP stream, in one run, with one upstream and one client
# (bench/cmd/wsbench). Prints a markdown table.
#
# Usage: bench/run.sh [wsbench flags, e.g. -dur 5s -idle 500]
set -eu
cd "$(dirname "$0")/.."
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
ulimit -n 20000 2>/dev/null || true

go build -o "$bin/wsbench" ./bench/cmd/wsbench
# Prefer the real command; fall back to the same code path on its own.
if go build -o "$bin/master-controller" ./cmd/master-controller 2>/dev/null &&
	"$bin/master-controller" websockify --help 2>&1 | grep -q token-file; then
	mc="$bin/master-controller websockify"
else
	go build -o "$bin/mcwebsockify" ./bench/cmd/mcwebsockify
	mc="$bin/mcwebsockify"
fi
websockify=${WEBSOCKIFY:-/usr/bin/websockify}
if [ ! -x "$websockify" ]; then
	echo "bench: $websockify not found (Debian package websockify)" >&2
	exit 1
fi
echo "bench: master-controller as: $mc" >&2
"$bin/wsbench" -mc "$mc" -websockify "$websockify" "$@"
