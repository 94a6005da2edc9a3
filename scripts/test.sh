#!/usr/bin/env bash
# Runs the whole test suite: installs what the tests need (Xvnc, Chromium,
# websockify, PostgreSQL 15, noVNC from npm), checks formatting and vet, and
# runs every test with real components. Under CI=true no test may skip for a
# missing component: as root it also builds, starts and at the end stops a
# real single-node Kubernetes cluster (scripts/k8s/ci.sh) for the tests of the
# kubernetes driver (MC_TEST_KUBECONFIG, MC_TEST_K8S_IMAGE).
set -euo pipefail
cd "$(dirname "$0")/.."
# Go may be installed without being on PATH (the official tarball).
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
bash scripts/deps.sh test
# The Kubernetes tests' real cluster and machine image (scripts/k8s/ci.sh):
# under CI=true as root, built in the background now, started before the Go
# tests, stopped on exit with the host left as it was.
. scripts/k8s/ci.sh
k8s_ci_begin

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

k8s_ci_ready

echo "== go test" >&2
export MC_TEST_AGENT="$PWD/bin/mc-agent" MC_TEST_SERVER="$PWD/bin/master-controller"
go test -count=1 -timeout 60m -p 1 ./... "$@"
