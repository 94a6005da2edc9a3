#!/usr/bin/env bash
# Installs what is missing, builds, and runs the controller on the embedded
# defaults (SQLite under ./data, the local runtime). Extra arguments go to
# "master-controller serve" (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
# Go may be installed without being on PATH (the official tarball).
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
bash scripts/deps.sh
exec ./bin/master-controller serve "$@"
