#!/usr/bin/env bash
# Start-to-ready of a machine of the local driver, confined and not, side by
# side: the driver's BenchmarkReady (Create → RFB banner → agent healthy, with
# the machine's own log of init building its root, Xvnc ready and Chromium
# answering), as root (netns and loopback, both confined) and as a fresh uid
# that is not root (userns, confined without root, beside loopback with
# --insecure-shared-host: the same machine unconfined). Prints each mode's
# medians and the ratios to the unconfined machine.
#
#	bench/ready.sh [N]     (N machines per mode, default 10; run as root)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
n=${1:-10}
tmp=$(mktemp -d /tmp/mc-ready-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
go test -c -o "$tmp/local.test" ./driver/local
go build -o "$tmp/mc-agent" ./cmd/mc-agent
bench() { "$@" -test.run '^$' -test.bench '^BenchmarkReady$' -test.benchtime "${n}x" | grep '^BenchmarkReady/' || true; }
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
{
	if [ "$(id -u)" = 0 ]; then
		(cd "$tmp" && MC_AGENT="$tmp/mc-agent" bench "$tmp/local.test")
		uid=$((1900000000 + RANDOM))
		mkdir "$tmp/home" && chown "$uid:$uid" "$tmp/home"
		(cd "$tmp/home" && bench setpriv --reuid "$uid" --regid "$uid" --clear-groups \
			env HOME="$tmp/home" TMPDIR="$tmp/home" MC_AGENT="$tmp/mc-agent" PATH="$PATH" "$tmp/local.test") |
			sed 's#^BenchmarkReady/loopback#BenchmarkReady/unconfined#'
	else
		(cd "$tmp" && MC_AGENT="$tmp/mc-agent" bench "$tmp/local.test") |
			sed 's#^BenchmarkReady/loopback#BenchmarkReady/unconfined#'
	fi
} >"$tmp/out"
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"
awk '
	{
		mode = $1; sub(/^BenchmarkReady\//, "", mode); sub(/-[0-9]+$/, "", mode)
		modes[++m] = mode
		for (i = 5; i < NF; i += 2) v[mode, $(i + 1)] = $i
	}
	END {
		printf "%-11s %9s %9s %9s %11s %9s %8s %7s\n", "mode", "init ms", "xvnc ms", "agent ms", "healthy ms", "rfb ms", "PSS MB", "ratio"
		for (k = 1; k <= m; k++) {
			x = modes[k]
			r = (v["unconfined", "health-ms-median"] > 0) ? sprintf("%.2f", v[x, "health-ms-median"] / v["unconfined", "health-ms-median"]) : "-"
			printf "%-11s %9s %9s %9s %11s %9s %8.0f %7s\n", x, v[x, "confine-ms-median"], v[x, "xvnc-ms-median"], v[x, "agent-ready-ms-median"], v[x, "health-ms-median"], v[x, "rfb-ms-median"], v[x, "pss-MB"], r
		}
		print "init: mc-agent init building the confined root; xvnc, agent: the agent start to Xvnc ready and to Chromium answering over its pipe;"
		print "healthy: Create to the agent answering /health (the readiness the session manager waits for); ratio: healthy / unconfined."
	}' "$tmp/out"
