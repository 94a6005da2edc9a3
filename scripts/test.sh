#!/usr/bin/env bash
# Runs the whole test suite: installs what the tests need (Xvnc, Chromium,
# websockify, PostgreSQL 15, noVNC from npm), checks formatting and vet, and
# runs every test with real components. Under CI=true no test may skip for a
# missing component.
set -euo pipefail
cd "$(dirname "$0")/.."
# Go may be installed without being on PATH (the official tarball).
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
bash scripts/deps.sh test

echo "== gofmt, go vet" >&2
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change:" >&2
	echo "$unformatted" >&2
	exit 1
fi
go vet ./...
if ! command -v staticcheck >/dev/null && [ ! -x "$(go env GOPATH)/bin/staticcheck" ]; then
	(cd /tmp && go install honnef.co/go/tools/cmd/staticcheck@latest)
fi
echo "== staticcheck" >&2
"$(command -v staticcheck || echo "$(go env GOPATH)/bin/staticcheck")" ./...

echo "== go test" >&2
export MC_TEST_AGENT="$PWD/bin/mc-agent" MC_TEST_SERVER="$PWD/bin/master-controller"
go test -count=1 -timeout 60m -p 1 ./... "$@"
