#!/usr/bin/env bash
# Installs what is missing, builds, and runs the controller on the embedded
# defaults (SQLite under ./data, the local runtime). Extra arguments go to
# "master-controller serve" (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
exec ./bin/master-controller serve "$@"
