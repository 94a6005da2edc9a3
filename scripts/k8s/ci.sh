# The Kubernetes tests' cluster in scripts/test.sh (sourced, not run).
#
# Under CI=true as root (or with MC_TEST_K8S=1 as root), unless
# MC_TEST_KUBECONFIG already names a cluster:
#   k8s_ci_begin   records the host (cluster.sh host), then builds in the
#                  background what is not cached: the cluster's binaries
#                  (cluster.sh build, by version) and the machine image with
#                  the freshly built agent (scripts/image/build.sh, by hash);
#                  the first is CPU-bound, the second mostly network-bound
#   k8s_ci_ready   waits for both, starts the cluster (cluster.sh up),
#                  imports the image, runs it as a pod (cluster.sh
#                  smoke-machine), checks deploy/kubernetes against the API
#                  server (cluster.sh check-deploy) and exports MC_TEST_KUBECONFIG
#                  and MC_TEST_K8S_IMAGE for the Go tests
#   k8s_ci_end     (an EXIT trap set by k8s_ci_begin) stops the cluster and
#                  fails the run if the host is not as it was
# Each step logs its wall time ("k8s-ci: … in Ns").
# Otherwise the three do nothing, and the Kubernetes tests skip (or, under
# CI=true, fail).

k8s_ci_on=0
k8s_ci_started=0
k8s_ci_dir=""

k8s_ci_log() { printf '%s k8s-ci: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

k8s_ci_begin() {
	if [ -n "${MC_TEST_KUBECONFIG:-}" ] || [ "$(id -u)" != 0 ] ||
		{ [ "${CI:-}" != true ] && [ "${MC_TEST_K8S:-}" != 1 ]; }; then
		return 0
	fi
	# A cluster of that name already up is someone else's: never touch it
	# (the EXIT trap below would stop it).
	if [ "$(bash scripts/k8s/cluster.sh status 2>/dev/null | head -1)" != down ]; then
		k8s_ci_log "a test cluster named ${MC_K8S_NAME:-mck8s} is already up: stop it first, or name it with MC_TEST_KUBECONFIG and MC_TEST_K8S_IMAGE"
		return 1
	fi
	k8s_ci_on=1
	k8s_ci_dir=$(mktemp -d /tmp/mc-k8s-ci.XXXXXX)
	trap 'k8s_ci_end || exit $?' EXIT
	bash scripts/k8s/cluster.sh host >"$k8s_ci_dir/host-before"
	k8s_ci_log "building the cluster (cluster.sh build) and the machine image (scripts/image/build.sh) in the background"
	# Each in a session of its own, so that k8s_ci_end can stop the whole
	# tree (go build, debootstrap) if the run ends first.
	k8s_ci_bg build bash scripts/k8s/cluster.sh build
	k8s_ci_bg image bash scripts/image/build.sh --agent bin/mc-agent
}

# k8s_ci_bg NAME CMD…: runs CMD in the background, in a session of its own;
# its output in NAME.out, its log in NAME.log, its wall time in NAME.secs.
k8s_ci_bg() {
	local name=$1
	shift
	setsid bash -c 't0=$SECONDS; "$@" >"$0.out" 2>"$0.log" && echo $((SECONDS - t0)) >"$0.secs"' \
		"$k8s_ci_dir/$name" "$@" &
	echo $! >"$k8s_ci_dir/$name.pid"
}

# k8s_ci_wait NAME: waits for a background build; on failure prints its log.
k8s_ci_wait() {
	local name=$1
	if ! wait "$(cat "$k8s_ci_dir/$name.pid")"; then
		tail -n 40 "$k8s_ci_dir/$name.log" "$k8s_ci_dir/$name.out" >&2
		k8s_ci_log "$name failed (log above)"
		return 1
	fi
	rm -f "$k8s_ci_dir/$name.pid"
	k8s_ci_log "$name done in $(cat "$k8s_ci_dir/$name.secs")s"
}

k8s_ci_ready() {
	[ "$k8s_ci_on" = 1 ] || return 0
	local t0=$SECONDS archive ref
	k8s_ci_wait build
	k8s_ci_wait image
	archive=$(sed -n 1p "$k8s_ci_dir/image.out")
	ref=$(sed -n 2p "$k8s_ci_dir/image.out")
	t0=$SECONDS
	k8s_ci_started=1 # from here on, k8s_ci_end stops the cluster
	bash scripts/k8s/cluster.sh up >"$k8s_ci_dir/up.out"
	k8s_ci_log "cluster up in $((SECONDS - t0))s"
	t0=$SECONDS
	bash scripts/k8s/cluster.sh import "$archive" >/dev/null
	k8s_ci_log "machine image $ref imported in $((SECONDS - t0))s"
	# The machine image as the driver runs it: RFB and /health on the pod
	# IP, Chromium's sandbox on (its report goes to the log).
	t0=$SECONDS
	bash scripts/k8s/cluster.sh smoke-machine "$archive" "$ref" >&2
	k8s_ci_log "machine smoke in $((SECONDS - t0))s"
	bash scripts/k8s/cluster.sh check-deploy >/dev/null
	MC_TEST_KUBECONFIG=$(sed -n 's/^export KUBECONFIG=//p' "$k8s_ci_dir/up.out")
	MC_TEST_K8S_IMAGE=$ref
	export MC_TEST_KUBECONFIG MC_TEST_K8S_IMAGE
	k8s_ci_log "MC_TEST_KUBECONFIG=$MC_TEST_KUBECONFIG MC_TEST_K8S_IMAGE=$MC_TEST_K8S_IMAGE"
}

k8s_ci_end() {
	local rc=$? p t0=$SECONDS
	[ "$k8s_ci_on" = 1 ] || return "$rc"
	k8s_ci_on=0
	# Builds still running (the run failed early): stopped, then waited for.
	for p in "$k8s_ci_dir"/*.pid; do
		[ -f "$p" ] || continue
		kill -TERM -- "-$(cat "$p")" 2>/dev/null || true
		wait "$(cat "$p")" 2>/dev/null || true
	done
	if [ "$k8s_ci_started" = 1 ]; then
		bash scripts/k8s/cluster.sh down || rc=1
		k8s_ci_log "cluster down in $((SECONDS - t0))s"
	fi
	bash scripts/k8s/cluster.sh host >"$k8s_ci_dir/host-after"
	if ! diff -u "$k8s_ci_dir/host-before" "$k8s_ci_dir/host-after" >&2; then
		k8s_ci_log "the host is not as it was before the cluster (diff above)"
		rc=1
	fi
	rm -rf "$k8s_ci_dir"
	return "$rc"
}
