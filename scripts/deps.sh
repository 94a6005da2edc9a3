#!/usr/bin/env bash
# Installs what master-controller needs on Debian and is missing: the packages
# for the local runtime (and, with "test", for the test suite), and the
# viewer's npm packages. Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# Go may be installed without being on PATH (the official tarball).
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"

want=(Xvnc:tigervnc-standalone-server chromium:chromium ip:iproute2 iptables:iptables slirp4netns:slirp4netns)
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

# The provider CLIs that machines run (Claude Code, Codex, Gemini CLI), pinned
# in clis/package-lock.json and installed outside the checkout, once per
# version of the lock file: MC_CLI_ROOT (default /opt/master-controller/clis)
# holds <sha256 of the lock>/node_modules/.bin, and "current" points to it.
# MC_SKIP_CLIS=1 skips them (about 900 MB).
if [ "${MC_SKIP_CLIS:-}" != 1 ]; then
	command -v npm >/dev/null || { echo "npm is required to install the provider CLIs (apt-get install npm)" >&2; exit 1; }
	cli_root=${MC_CLI_ROOT:-/opt/master-controller/clis}
	cli_hash=$(sha256sum clis/package-lock.json | cut -c1-16)
	cli_dir=$cli_root/$cli_hash
	if [ ! -x "$cli_dir/node_modules/.bin/codex" ] || [ ! -f "$cli_dir/.complete" ]; then
		echo "installing the provider CLIs into $cli_dir (npm ci, about 900 MB)" >&2
		rm -rf "$cli_dir.tmp"
		mkdir -p "$cli_dir.tmp"
		cp clis/package.json clis/package-lock.json "$cli_dir.tmp/"
		npm ci --prefix "$cli_dir.tmp" --no-audit --no-fund --loglevel=error >/dev/null
		touch "$cli_dir.tmp/.complete"
		rm -rf "$cli_dir"
		mv "$cli_dir.tmp" "$cli_dir"
	fi
	ln -sfn "$cli_hash" "$cli_root/current"
fi

mkdir -p bin
go build -o bin/master-controller ./cmd/master-controller
CGO_ENABLED=0 go build -o bin/mc-agent ./cmd/mc-agent
