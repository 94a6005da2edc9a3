#!/usr/bin/env bash
# Installs what master-controller needs on Debian and is missing: the packages
# for the local runtime (and, with "test", for the test suite), and the
# viewer's npm packages. Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# Go may be installed without being on PATH (the official tarball).
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"

want=(Xvnc:tigervnc-standalone-server chromium:chromium ip:iproute2 iptables:iptables)
if [ "${1:-}" = "test" ]; then
	want+=(websockify:websockify pg_ctl:postgresql-15 vncpasswd:tigervnc-tools node:nodejs npm:npm python3:python3)
fi
missing=()
for w in "${want[@]}"; do
	cmd=${w%%:*} pkg=${w#*:}
	if [ "$cmd" = pg_ctl ]; then
		[ -x /usr/lib/postgresql/15/bin/pg_ctl ] || command -v pg_ctl >/dev/null || missing+=("$pkg")
	elif [ "$cmd" = vncpasswd ]; then
		command -v vncpasswd >/dev/null || missing+=("tigervnc-tools")
	elif [ "$cmd" = iptables ]; then
		# The machines' firewall; in /usr/sbin, which a user's PATH may lack.
		command -v iptables >/dev/null || [ -x /usr/sbin/iptables ] || missing+=("$pkg")
	else
		command -v "$cmd" >/dev/null || missing+=("$pkg")
	fi
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "installing: ${missing[*]}" >&2
	sudo=""
	[ "$(id -u)" = 0 ] || sudo="sudo"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v go >/dev/null; then
	echo "Go 1.26 is required (https://go.dev/dl/); it is not on PATH" >&2
	exit 1
fi

# noVNC for the viewer page, pinned in web/package-lock.json.
if [ ! -f web/node_modules/.package-lock.json ] || [ web/package-lock.json -nt web/node_modules/.package-lock.json ]; then
	echo "installing the viewer's npm packages (npm ci --prefix web)" >&2
	npm ci --prefix web --no-audit --no-fund --loglevel=error >/dev/null
fi

mkdir -p bin
go build -o bin/master-controller ./cmd/master-controller
CGO_ENABLED=0 go build -o bin/mc-agent ./cmd/mc-agent
