#!/usr/bin/env bash
# A real single-node Kubernetes cluster for tests, on this host, in a network
# namespace of its own (the recipe of ../shared/research/kubernetes-here.md).
#
#   cluster.sh build    build etcd and the Kubernetes binaries from the Go module
#                       proxy (cached by version), install the Debian packages,
#                       make the pause image
#   cluster.sh up       build if needed, then start the cluster; prints the
#                       kubeconfig path (export KUBECONFIG=…); the node gets
#                       the seccomp profiles of deploy/kubernetes/seccomp/
#   cluster.sh down     stop it and leave the host as it was
#   cluster.sh status   say what runs; exit 0 only if the node is Ready
#   cluster.sh env      print the shell exports for a running cluster
#   cluster.sh import FILE   import an image archive into the node's containerd
#   cluster.sh smoke    a pod from a tiny static Go binary reaches Running and
#                       answers on its pod IP from the host
#   cluster.sh smoke-xvnc ARCHIVE REF   the machine image's Xvnc in a pod
#                       answers an RFB banner on its pod IP from the host
#   cluster.sh smoke-machine ARCHIVE REF   the machine image with the agent
#                       (build.sh --agent) as a pod the way the kubernetes
#                       driver runs it: RFB banner and agent /health on its
#                       pod IP from the host; says whether Chromium's own
#                       sandbox is on
#   cluster.sh check-deploy [DIR]   kubectl apply -k DIR --dry-run=server
#                       (default deploy/kubernetes) against the cluster; a
#                       warning fails it too
#   cluster.sh host     print the host facts "down" restores (compare a copy
#                       taken before "up" with one taken after "down")
#
# Environment (all optional):
#   MC_K8S_VERSION   Kubernetes version (v1.37.2)
#   MC_ETCD_VERSION  etcd version (v3.7.3)
#   MC_K8S_CACHE     build cache outside the checkout (/var/cache/master-controller/k8s)
#   MC_K8S_STATE     a running cluster's certificates, configs, sockets, logs (/run/mc-k8s)
#   MC_K8S_DATA      a running cluster's etcd, containerd and kubelet data (/var/lib/mc-k8s)
#   MC_K8S_NAME      netns and veth name prefix (mck8s)
#   MC_K8S_HOST_NET  the /30 joining host and node (10.244.254.0/30)
#   MC_K8S_POD_CIDR  the pod CIDR routed from the host (10.244.0.0/24)
#
# Heavy build steps run under nice -n 19. Measured here (2 shared cores): a
# cold build took 22 CPU-minutes, 2.7 GB peak, 70 min of wall time under heavy
# load (binaries 485 MB); a warm one takes 2 s. "up" takes about 12 s, "down"
# about 20 s (most of it deleting the node's unpacked images).
set -euo pipefail

K8S_VERSION=${MC_K8S_VERSION:-v1.37.2}
ETCD_VERSION=${MC_ETCD_VERSION:-v3.7.3}
CACHE=${MC_K8S_CACHE:-/var/cache/master-controller/k8s}
STATE=${MC_K8S_STATE:-/run/mc-k8s}
DATA=${MC_K8S_DATA:-/var/lib/mc-k8s}
NAME=${MC_K8S_NAME:-mck8s}
HOST_NET=${MC_K8S_HOST_NET:-10.244.254.0/30}
POD_CIDR=${MC_K8S_POD_CIDR:-10.244.0.0/24}
SERVICE_CIDR=10.96.0.0/24
PAUSE_IMAGE=registry.k8s.io/pause:mc
# The machine pods' seccomp profile (deploy/kubernetes/seccomp/), installed
# in the kubelet's seccomp directory at "up": pods name it as
# {type: Localhost, localhostProfile: mc-chromium.json}.
MACHINE_SECCOMP=mc-chromium.json
SECCOMP_DIR=$(cd "$(dirname "$0")/../../deploy/kubernetes/seccomp" && pwd)

command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"

BIN=$CACHE/$K8S_VERSION/bin
ETCD_BIN=$CACHE/etcd-$ETCD_VERSION/etcd
PAUSE_TAR=$CACHE/pause/pause.tar
NETNS=$NAME
VETH_HOST=${NAME}h
VETH_NODE=${NAME}n
net_base=${HOST_NET%/*}
HOST_IP=${net_base%.*}.$((${net_base##*.} + 1))
NODE_IP=${net_base%.*}.$((${net_base##*.} + 2))
CGROUP_ROOT=/$NAME
NSENTER=(nsenter --net=/run/netns/$NETNS)
# Host directories the daemons make at fixed places: containerd's CNI result
# cache and shim sockets, the kubelet's container log links. Everything else
# lives under $STATE and $DATA, so that two clusters with different names,
# state and data directories, networks and pod CIDRs can run at once (every
# daemon's port is inside its cluster's network namespace).
host_dirs=(/var/lib/cni /run/containerd /var/log/containers)

log() { printf '%s cluster: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "$*"; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "must run as root"; }

# ---------------------------------------------------------------- build

debian_packages=(containerd runc containernetworking-plugins umoci skopeo openssl iproute2 iptables conntrack)

install_packages() {
	local missing=() p
	for p in "${debian_packages[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return
	log "installing Debian packages: ${missing[*]}"
	# A fresh machine may have no package lists yet: update once and retry.
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		-o DPkg::Lock::Timeout=900 "${missing[@]}" >/dev/null ||
		{ apt-get update -qq -o DPkg::Lock::Timeout=900 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends -o DPkg::Lock::Timeout=900 "${missing[@]}" >/dev/null; }
}

# build_etcd: a tiny main module around etcdmain (go install refuses etcd
# because its go.mod has replace directives).
build_etcd() {
	[ -x "$ETCD_BIN" ] && return
	local src=$CACHE/src/etcd-$ETCD_VERSION
	log "building etcd $ETCD_VERSION (cold: ~2 min)"
	rm -rf "$src" && mkdir -p "$src"
	cat >"$src/main.go" <<-'EOF'
	// Command etcd is etcd's own server entry point, built from the module proxy.
	package main

	import (
		"os"

		"go.etcd.io/etcd/server/v3/etcdmain"
	)

	func main() { etcdmain.Main(os.Args) }
	EOF
	cat >"$src/go.mod" <<-EOF
	module mc.local/etcd

	go 1.26

	require go.etcd.io/etcd/server/v3 $ETCD_VERSION
	EOF
	(cd "$src" && nice -n 19 go mod tidy && CGO_ENABLED=0 nice -n 19 go build -trimpath -ldflags='-s -w' -o "$ETCD_BIN.tmp" .)
	mv "$ETCD_BIN.tmp" "$ETCD_BIN"
}

k8s_binaries=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)

# build_k8s: the k8s.io/kubernetes module, made buildable outside its
# repository (no go.work, no vendor/, no replace block, staging modules at
# their published v0.x versions).
build_k8s() {
	local b ok=1
	for b in "${k8s_binaries[@]}"; do [ -x "$BIN/$b" ] || ok=0; done
	[ $ok = 1 ] && return
	local minor=${K8S_VERSION#v1.} staging
	staging=v0.$minor
	local src=$CACHE/src/kubernetes-$K8S_VERSION
	if [ ! -f "$src/.prepared" ]; then
		log "downloading k8s.io/kubernetes@$K8S_VERSION"
		local dir
		dir=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
		[ -d "$dir" ] || die "go mod download k8s.io/kubernetes@$K8S_VERSION gave no directory"
		rm -rf "$src" && mkdir -p "$(dirname "$src")"
		cp -r "$dir" "$src"
		chmod -R u+w "$src"
		rm -rf "$src/go.work" "$src/go.work.sum" "$src/vendor"
		sed -i -e '/^replace (/,/^)/d' -e '/^replace k8s.io\//d' \
			-e "s#\(k8s\.io/[A-Za-z0-9._/-]*\) v0\.0\.0\( \|\$\)#\1 $staging\2#" "$src/go.mod"
		(cd "$src" && GOFLAGS=-mod=mod nice -n 19 go mod download)
		touch "$src/.prepared"
	fi
	log "building ${k8s_binaries[*]} $K8S_VERSION (cold: ~23 CPU-minutes, ~3 GB)"
	mkdir -p "$BIN.tmp"
	local pkgs=() ldflags
	for b in "${k8s_binaries[@]}"; do pkgs+=("./cmd/$b"); done
	ldflags="-s -w"
	for v in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $v.gitVersion=$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=${minor%%.*} -X $v.gitTreeState=clean"
	done
	(cd "$src" && GOFLAGS=-mod=mod CGO_ENABLED=0 nice -n 19 go build -trimpath -ldflags="$ldflags" -o "$BIN.tmp/" "${pkgs[@]}")
	rm -rf "$BIN" && mv "$BIN.tmp" "$BIN"
}

# build_pause: the sandbox image, a static Go binary that sleeps until a
# signal, packed as a docker-archive tagged $PAUSE_IMAGE.
build_pause() {
	[ -f "$PAUSE_TAR" ] && return
	log "making the pause image"
	local w=$CACHE/src/pause
	rm -rf "$w" && mkdir -p "$w/src" "$(dirname "$PAUSE_TAR")"
	cat >"$w/src/main.go" <<-'EOF'
	// Command pause holds a pod's namespaces until it is told to stop.
	package main

	import (
		"os"
		"os/signal"
		"syscall"
	)

	func main() {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGINT, syscall.SIGTERM)
		<-c
	}
	EOF
	printf 'module mc.local/pause\n\ngo 1.26\n' >"$w/src/go.mod"
	(cd "$w/src" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$w/pause" .)
	pack_binary_image "$w/pause" /pause "$PAUSE_IMAGE" "$PAUSE_TAR"
}

# pack_binary_image BIN PATH REF OUT: a one-file image whose entry point is
# PATH, as a docker-archive tagged REF (ctr images import keeps the tag).
pack_binary_image() {
	local bin=$1 path=$2 ref=$3 out=$4 w
	w=$(mktemp -d)
	umoci init --layout "$w/oci"
	umoci new --image "$w/oci:img"
	umoci unpack --rootless --image "$w/oci:img" "$w/bundle" >/dev/null
	install -D -m 0755 "$bin" "$w/bundle/rootfs$path"
	umoci repack --image "$w/oci:img" "$w/bundle" >/dev/null
	umoci config --image "$w/oci:img" --config.entrypoint "$path" --config.user 65534:65534 >/dev/null
	rm -f "$out.tmp"
	skopeo copy --quiet "oci:$w/oci:img" "docker-archive:$out.tmp:$ref"
	mv "$out.tmp" "$out"
	rm -rf "$w"
}

cmd_build() {
	need_root
	install_packages
	mkdir -p "$CACHE/$K8S_VERSION" "$(dirname "$ETCD_BIN")"
	build_etcd
	build_k8s
	build_pause
	build_hello
	log "built: $BIN, $ETCD_BIN, $PAUSE_TAR"
}

# ---------------------------------------------------------------- up

PKI=$STATE/pki
LOGS=$STATE/log
KUBECONFIG_ADMIN=$STATE/admin.kubeconfig
NODE_NAME=$NAME-node

kubectl() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
in_ns() { "${NSENTER[@]}" "$@"; }
ctr_() { ctr --address "$STATE/containerd/containerd.sock" -n k8s.io "$@"; }

# wait_for WHAT SECONDS CMD…: poll CMD every 0.2 s, give up after SECONDS.
wait_for() {
	local what=$1 secs=$2 i
	shift 2
	for ((i = 0; i < secs * 5; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	die "$what: not ready after ${secs}s (logs: $LOGS)"
}

# make_cert NAME CN O SAN: an EC key and a certificate signed by the CA.
make_cert() {
	local name=$1 cn=$2 o=$3 san=$4 subj ext
	subj="/CN=$cn"
	[ -z "$o" ] || subj="/O=$o$subj"
	openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
	openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
	ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth"
	[ -z "$san" ] || ext+="
subjectAltName=$san"
	openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
		-days 30 -out "$PKI/$name.crt" -extfile <(echo "$ext") 2>/dev/null
	rm -f "$PKI/$name.csr"
}

make_kubeconfig() {
	local name=$1 server=${2:-https://$NODE_IP:6443}
	cat >"$STATE/$name.kubeconfig" <<-EOK
	apiVersion: v1
	kind: Config
	clusters:
	- name: $NAME
	  cluster:
	    certificate-authority: $PKI/ca.crt
	    server: $server
	users:
	- name: $name
	  user:
	    client-certificate: $PKI/$name.crt
	    client-key: $PKI/$name.key
	contexts:
	- name: $NAME
	  context: {cluster: $NAME, user: $name}
	current-context: $NAME
	EOK
}

make_pki() {
	mkdir -p "$PKI" && chmod 0700 "$PKI"
	openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/ca.key" 2>/dev/null
	openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=$NAME-ca" -days 30 -out "$PKI/ca.crt" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
	make_cert apiserver kube-apiserver "" \
		"IP:$NODE_IP,IP:10.96.0.1,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
	make_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters ""
	make_cert admin admin system:masters ""
	make_cert controller-manager system:kube-controller-manager "" ""
	make_cert scheduler system:kube-scheduler "" ""
	make_cert kubelet "system:node:$NODE_NAME" system:nodes ""
	openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/sa.key" 2>/dev/null
	openssl ec -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
	make_kubeconfig admin
	make_kubeconfig controller-manager
	make_kubeconfig scheduler
	make_kubeconfig kubelet
}

# start NAME CMD…: run a daemon in the cluster's network namespace (nsenter,
# not ip netns exec, which would give it a mount namespace of its own and hide
# kubelet's mounts from containerd), its pid in $STATE/NAME.pid.
start() {
	local name=$1
	shift
	setsid "${NSENTER[@]}" "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
	echo $! >"$STATE/$name.pid"
}

write_configs() {
	mkdir -p "$STATE/cni" "$DATA/cni"
	cat >"$STATE/cni/10-$NAME.conflist" <<-EOC
	{
	  "cniVersion": "1.0.0",
	  "name": "$NAME",
	  "plugins": [
	    {
	      "type": "bridge",
	      "bridge": "cni0",
	      "isGateway": true,
	      "ipMasq": false,
	      "hairpinMode": true,
	      "ipam": {
	        "type": "host-local",
	        "dataDir": "$DATA/cni/ipam",
	        "ranges": [[{"subnet": "$POD_CIDR"}]],
	        "routes": [{"dst": "0.0.0.0/0"}]
	      }
	    },
	    {"type": "loopback"}
	  ]
	}
	EOC
	cat >"$STATE/containerd.toml" <<-EOC
	version = 2
	root = "$DATA/containerd"
	state = "$STATE/containerd"
	disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
	[grpc]
	  address = "$STATE/containerd/containerd.sock"
	[ttrpc]
	  address = "$STATE/containerd/containerd.sock.ttrpc"
	[plugins."io.containerd.internal.v1.opt"]
	  path = "$DATA/opt"
	[plugins."io.containerd.grpc.v1.cri"]
	  sandbox_image = "$PAUSE_IMAGE"
	  restrict_oom_score_adj = true
	  disable_apparmor = true
	  enable_selinux = false
	  [plugins."io.containerd.grpc.v1.cri".containerd]
	    snapshotter = "overlayfs"
	    default_runtime_name = "runc"
	    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
	      runtime_type = "io.containerd.runc.v2"
	      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
	        SystemdCgroup = false
	        Root = "$STATE/runc"
	  [plugins."io.containerd.grpc.v1.cri".cni]
	    bin_dir = "/usr/lib/cni"
	    conf_dir = "$STATE/cni"
	EOC
	mkdir -p "$DATA/pod-logs" "$DATA/volume-plugins" "$DATA/kubelet/seccomp"
	cp "$SECCOMP_DIR"/*.json "$DATA/kubelet/seccomp/"
	cat >"$STATE/kubelet.yaml" <<-EOC
	apiVersion: kubelet.config.k8s.io/v1beta1
	kind: KubeletConfiguration
	failCgroupV1: false
	cgroupDriver: cgroupfs
	cgroupRoot: $CGROUP_ROOT
	containerRuntimeEndpoint: unix://$STATE/containerd/containerd.sock
	authentication:
	  anonymous: {enabled: false}
	  webhook: {enabled: true}
	  x509: {clientCAFile: $PKI/ca.crt}
	authorization: {mode: Webhook}
	readOnlyPort: 0
	healthzBindAddress: 127.0.0.1
	failSwapOn: false
	resolvConf: /etc/resolv.conf
	podLogsDir: $DATA/pod-logs
	serializeImagePulls: false
	imageGCHighThresholdPercent: 100
	imageGCLowThresholdPercent: 99
	evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
	EOC
}

up_network() {
	ip netns add "$NETNS"
	ip link add "$VETH_HOST" type veth peer name "$VETH_NODE" netns "$NETNS"
	ip addr add "$HOST_IP/30" dev "$VETH_HOST"
	ip link set "$VETH_HOST" up
	in_ns ip link set lo up
	in_ns ip addr add "$NODE_IP/30" dev "$VETH_NODE"
	in_ns ip link set "$VETH_NODE" up
	in_ns ip route add default via "$HOST_IP"
	# Forwarding on inside the namespace only (it is per namespace).
	in_ns sysctl -qw net.ipv4.ip_forward=1
	ip route add "$POD_CIDR" via "$NODE_IP"
}

# cgroup_dirs: the cluster's cgroup root in every hierarchy (the v1 ones and,
# on a hybrid host, the unified one, where the kubelet mirrors its tree).
cgroup_dirs() {
	local h
	for h in /sys/fs/cgroup/*/; do
		[ -f "$h/cgroup.procs" ] && echo "${h%/}$CGROUP_ROOT"
	done
}

cmd_up() {
	need_root
	[ ! -e "/run/netns/$NETNS" ] || die "a cluster named $NAME is already up (cluster.sh down first)"
	cmd_build >/dev/null
	local t0=$SECONDS
	trap '[ $? = 0 ] || log "up failed; logs in $LOGS; clean up with: $0 down"' EXIT
	mkdir -p "$STATE" "$LOGS" "$DATA"
	echo "$(date -u +%s)" >"$STATE/started"
	# Host directories whose place is fixed (containerd's CNI result cache,
	# its shim sockets, the kubelet's container log links): those not there
	# now, "down" removes again (once no other cluster runs).
	local h
	for h in "${host_dirs[@]}"; do [ -e "$h" ] || echo "$h" >>"$STATE/made"; done
	make_pki
	write_configs
	up_network
	# kubelet's cgroup root, in every v1 hierarchy (name=systemd included).
	local d
	for d in $(cgroup_dirs); do mkdir -p "$d"; done

	start etcd "$ETCD_BIN" --name "$NAME" --data-dir "$DATA/etcd" \
		--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
		--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
		--initial-cluster "$NAME=http://127.0.0.1:2380" --unsafe-no-fsync --log-level warn
	start containerd containerd --config "$STATE/containerd.toml"
	start kube-apiserver "$BIN/kube-apiserver" \
		--etcd-servers http://127.0.0.1:2379 \
		--advertise-address "$NODE_IP" --bind-address 0.0.0.0 --secure-port 6443 \
		--service-cluster-ip-range "$SERVICE_CIDR" \
		--client-ca-file "$PKI/ca.crt" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
		--kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
		--kubelet-preferred-address-types InternalIP \
		--service-account-issuer https://kubernetes.default.svc.cluster.local \
		--service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
		--authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
		--profiling=false --endpoint-reconciler-type none
	wait_for containerd 30 ctr_ version
	ctr_ images import "$PAUSE_TAR" >/dev/null
	wait_for kube-apiserver 120 kubectl get --raw /readyz
	log "apiserver ready after $((SECONDS - t0))s"
	start kube-controller-manager "$BIN/kube-controller-manager" \
		--kubeconfig "$STATE/controller-manager.kubeconfig" \
		--authentication-kubeconfig "$STATE/controller-manager.kubeconfig" \
		--authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
		--service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
		--use-service-account-credentials --leader-elect=false --bind-address 127.0.0.1 \
		--allocate-node-cidrs --cluster-cidr "$POD_CIDR" --node-cidr-mask-size "${POD_CIDR#*/}"
	start kube-scheduler "$BIN/kube-scheduler" \
		--kubeconfig "$STATE/scheduler.kubeconfig" \
		--authentication-kubeconfig "$STATE/scheduler.kubeconfig" \
		--authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
		--leader-elect=false --bind-address 127.0.0.1
	start kubelet "$BIN/kubelet" --config "$STATE/kubelet.yaml" \
		--kubeconfig "$STATE/kubelet.kubeconfig" --root-dir "$DATA/kubelet" \
		--node-ip "$NODE_IP" --hostname-override "$NODE_NAME" --volume-plugin-dir "$DATA/volume-plugins"
	wait_for "node $NODE_NAME" 120 kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=1s
	wait_for "default service account" 60 kubectl get serviceaccount default -n default
	# The node's pod network, as clients read it (spec.podCIDR).
	wait_for "pod CIDR of $NODE_NAME" 30 bash -c "[ -n \"\$(\"$BIN/kubectl\" --kubeconfig \"$KUBECONFIG_ADMIN\" get node \"$NODE_NAME\" -o jsonpath='{.spec.podCIDR}')\" ]"
	log "cluster up in $((SECONDS - t0))s: node $NODE_NAME Ready, apiserver https://$NODE_IP:6443, pods in $POD_CIDR"
	echo "export KUBECONFIG=$KUBECONFIG_ADMIN"
}

# ---------------------------------------------------------------- down

# pids_in_netns: every process in the cluster's network namespace.
pids_in_netns() {
	local ino
	ino=$(stat -L -c %i "/run/netns/$NETNS" 2>/dev/null) || return 0
	find -L /proc/[0-9]*/ns/net -maxdepth 0 -inum "$ino" 2>/dev/null | cut -d/ -f3
	return 0
}

# pids_of_cluster: processes of the cluster outside its namespace too: the
# containerd shims (found by our socket path) and everything in our cgroups.
pids_of_cluster() {
	local d
	# [.] keeps grep from finding its own command line.
	grep -laE -- "-address.$STATE/containerd/containerd[.]sock" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3
	for d in $(cgroup_dirs); do
		[ -d "$d" ] && find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
	done
	return 0
}

# pids_of_binaries: processes running the cluster's own binaries with this
# cluster's state or data directory on their command line (the binaries are
# shared with any other cluster running from the same cache).
pids_of_binaries() {
	local p e
	for p in /proc/[0-9]*; do
		e=$(readlink "$p/exe" 2>/dev/null) || continue
		case $e in "$BIN"/* | "$ETCD_BIN") ;; *) continue ;; esac
		tr '\0' '\n' <"$p/cmdline" 2>/dev/null | grep -qE "^($STATE|$DATA)(/|\$)" && echo "${p#/proc/}"
	done
	return 0
}

# other_clusters: the kubelets of other clusters running from this cache
# (after this one's processes are gone).
other_clusters() {
	local p e
	for p in /proc/[0-9]*; do
		e=$(readlink "$p/exe" 2>/dev/null) || continue
		[ "$e" = "$BIN/kubelet" ] && echo "${p#/proc/}"
	done
	return 0
}

cluster_pids() { { pids_in_netns; pids_of_cluster; pids_of_binaries; } | sort -u; }

kill_all() {
	local sig=$1 pids
	pids=$(cluster_pids)
	[ -n "$pids" ] || return 1
	# shellcheck disable=SC2086
	kill -"$sig" $pids 2>/dev/null || true
	return 0
}

cmd_down() {
	need_root
	local t0=$SECONDS netns_paths=""
	if [ -f "$KUBECONFIG_ADMIN" ] && [ -e "/run/netns/$NETNS" ]; then
		# Let the node tear its pods down (CNI DEL, sandbox namespaces),
		# briefly: whatever is left is killed below.
		kubectl delete pods --all -A --grace-period=1 --wait=true --timeout=20s >/dev/null 2>&1 || true
	fi
	# The pod network namespaces containerd made (under /run/netns).
	if [ -S "$STATE/containerd/containerd.sock" ]; then
		netns_paths=$(ctr_ containers ls -q 2>/dev/null | while read -r c; do
			ctr_ containers info "$c" 2>/dev/null | grep -o '"/var/run/netns/cni-[0-9a-f-]*"' | tr -d '"'
		done | sort -u)
	fi
	# The control plane first (the kubelet would restart pods), then the rest.
	local n
	for n in kubelet kube-scheduler kube-controller-manager kube-apiserver; do
		[ -f "$STATE/$n.pid" ] && kill "$(cat "$STATE/$n.pid")" 2>/dev/null || true
	done
	log "pods deleted after $((SECONDS - t0))s"
	kill_all TERM || true
	local i
	for ((i = 0; i < 50; i++)); do
		[ -z "$(cluster_pids)" ] && break
		sleep 0.2
	done
	kill_all KILL && sleep 0.5 || true
	# Mounts of the kubelet and containerd (deepest first), then pod netns.
	local m
	for m in $(awk -v a="$DATA/" -v b="$STATE/" 'index($5, a) == 1 || index($5, b) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
		umount -l "$m" 2>/dev/null || true
	done
	for m in $netns_paths; do
		umount "$m" 2>/dev/null || true
		rm -f "$m"
	done
	# Cgroups, deepest first.
	local d
	for d in $(cgroup_dirs); do
		[ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
	# The network: deleting one end of the veth deletes both, and the route.
	ip link del "$VETH_HOST" 2>/dev/null || true
	[ -e "/run/netns/$NETNS" ] && ip netns del "$NETNS"
	log "processes, mounts, cgroups and network gone after $((SECONDS - t0))s"
	rm -f /var/lib/cni/results/"$NAME"-* 2>/dev/null || true
	if [ -f "$STATE/made" ] && [ -z "$(other_clusters)" ]; then
		local h
		while read -r h; do
			case $h in /var/log/containers) find "$h" -xtype l -delete 2>/dev/null || true ;; esac
			[ -d "$h" ] && find "$h" -depth -type d -empty -delete 2>/dev/null || true
		done <"$STATE/made"
	fi
	rm -rf "$DATA" "$STATE"
	log "down in $((SECONDS - t0))s"
}

# ---------------------------------------------------------------- status

cmd_status() {
	if [ ! -e "/run/netns/$NETNS" ]; then
		echo "down"
		return 1
	fi
	local n p
	for n in etcd containerd kube-apiserver kube-controller-manager kube-scheduler kubelet; do
		p=$(cat "$STATE/$n.pid" 2>/dev/null || true)
		if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
			printf '%-24s pid %-7s rss %s MB\n' "$n" "$p" "$(($(ps -o rss= --ppid "$p" -p "$p" | awk '{s+=$1} END {print s}') / 1024))"
		else
			printf '%-24s not running\n' "$n"
		fi
	done
	echo "kubeconfig: $KUBECONFIG_ADMIN"
	kubectl get nodes --no-headers 2>/dev/null | grep -qw Ready && { echo "node Ready"; return 0; }
	echo "node not Ready"
	return 1
}

cmd_env() {
	echo "export KUBECONFIG=$KUBECONFIG_ADMIN"
	echo "export MC_K8S_NODE_IP=$NODE_IP MC_K8S_POD_CIDR=$POD_CIDR MC_K8S_HOST_NET=$HOST_NET"
}

# orphan_pod_netns: the pod network namespaces (cni-*) that no process is
# in: what a cluster leaves if "down" misses one. Those of another cluster
# running at the same time hold its pods' processes, so they are not listed.
orphan_pod_netns() {
	local ns ino
	for ns in /run/netns/cni-*; do
		[ -e "$ns" ] || continue
		ino=$(stat -L -c %i "$ns" 2>/dev/null) || continue
		[ -n "$(find -L /proc/[0-9]*/ns/net -maxdepth 0 -inum "$ino" 2>/dev/null | head -1)" ] || echo "${ns##*/}"
	done
}

# cmd_host: the host's side of things this script may touch, one fact a line,
# so that a snapshot before "up" and one after "down" can be compared.
cmd_host() {
	echo "ip_forward $(cat /proc/sys/net/ipv4/ip_forward)"
	echo "netns $({ ip netns list 2>/dev/null | awk -v n="$NETNS" '$1 == n {print $1}'; orphan_pod_netns; } | sort | paste -sd' ' -)"
	echo "links $(ip -o link show | awk -F': ' -v n="$NAME" 'index($2, n) == 1 || $2 == "cni0" {print $2}' | sort | paste -sd' ' -)"
	echo "routes $(ip route show | grep -F "${POD_CIDR%/*}" | paste -sd' ' -)"
	local t
	for t in filter nat mangle raw; do
		echo "iptables-$t $(iptables-save -t "$t" 2>/dev/null | grep -v '^#' | grep -cE 'KUBE|CNI|cni0|'"${POD_CIDR%.*}") rules naming KUBE/CNI/the pod CIDR"
	done
	echo "mounts $(awk -v a="$DATA" -v b="$STATE" 'index($5, a) == 1 || index($5, b) == 1 {print $5}' /proc/self/mountinfo | wc -l)"
	echo "cgroups $(for d in $(cgroup_dirs); do [ -d "$d" ] && echo "$d"; done | paste -sd' ' -)"
	echo "dirs $(for d in "$DATA" "$STATE" /opt/containerd "${host_dirs[@]}"; do [ -e "$d" ] && echo "$d"; done | paste -sd' ' -)"
	echo "processes $(cluster_pids | wc -l)"
}

HELLO_TAR=$CACHE/hello/hello.tar
HELLO_IMAGE=docker.io/library/mc-hello:1

# build_hello: a one-binary image that answers every TCP connection on 8080
# with one line, for the smoke test.
build_hello() {
	[ -f "$HELLO_TAR" ] && return
	local w=$CACHE/src/hello
	rm -rf "$w" && mkdir -p "$w/src" "$(dirname "$HELLO_TAR")"
	cat >"$w/src/main.go" <<-'EOG'
	// Command hello answers every TCP connection on :8080 with one line.
	package main

	import (
		"fmt"
		"net"
		"os"
	)

	func main() {
		l, err := net.Listen("tcp", ":8080")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		host, _ := os.Hostname()
		for {
			c, err := l.Accept()
			if err != nil {
				continue
			}
			fmt.Fprintf(c, "hello from %s\n", host)
			c.Close()
		}
	}
	EOG
	printf 'module mc.local/hello\n\ngo 1.26\n' >"$w/src/go.mod"
	(cd "$w/src" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$w/hello" .)
	pack_binary_image "$w/hello" /hello "$HELLO_IMAGE" "$HELLO_TAR"
}

# cmd_smoke: a pod from a tiny static Go binary reaches Running and its pod IP
# answers from the host; then it is deleted.
cmd_smoke() {
	need_root
	cmd_status >/dev/null || die "the cluster is not up"
	build_hello
	ctr_ images import "$HELLO_TAR" >/dev/null
	local pod=mc-smoke-$RANDOM t0=$SECONDS ip line
	kubectl apply -f - >/dev/null <<-EOP
	apiVersion: v1
	kind: Pod
	metadata: {name: $pod, namespace: default}
	spec:
	  automountServiceAccountToken: false
	  containers:
	  - name: hello
	    image: $HELLO_IMAGE
	    imagePullPolicy: Never
	    securityContext:
	      runAsNonRoot: true
	      runAsUser: 65534
	      allowPrivilegeEscalation: false
	      readOnlyRootFilesystem: true
	      capabilities: {drop: [ALL]}
	      seccompProfile: {type: RuntimeDefault}
	EOP
	kubectl wait --for=jsonpath='{.status.phase}'=Running "pod/$pod" --timeout=60s >/dev/null
	ip=$(kubectl get pod "$pod" -o jsonpath='{.status.podIP}')
	wait_for "pod $pod at $ip:8080" 10 bash -c "exec 3<>/dev/tcp/$ip/8080"
	line=$(timeout 5 bash -c "exec 3<>/dev/tcp/$ip/8080; head -1 <&3")
	log "pod $pod Running at $ip after $((SECONDS - t0))s; dialled from the host: $line"
	kubectl delete pod "$pod" --grace-period=1 --wait=true >/dev/null
	[ "$line" = "hello from $pod" ] || die "smoke: expected \"hello from $pod\", read \"$line\""
	echo "smoke ok: $line"
}

# cmd_smoke_xvnc ARCHIVE REF: the machine image (scripts/image/build.sh)
# imported into the node; a pod from it running Xvnc as the machine user,
# read-only root, reaches Running and its pod IP answers an RFB banner.
cmd_smoke_xvnc() {
	need_root
	local archive=${1:-} ref=${2:-}
	[ -f "$archive" ] && [ -n "$ref" ] || die "usage: cluster.sh smoke-xvnc ARCHIVE REF (the two lines scripts/image/build.sh prints)"
	cmd_status >/dev/null || die "the cluster is not up"
	local t0=$SECONDS pod=mc-xvnc-$RANDOM ip banner
	ctr_ images import "$archive" >/dev/null
	log "imported $ref in $((SECONDS - t0))s"
	t0=$SECONDS
	kubectl apply -f - >/dev/null <<-EOP
	apiVersion: v1
	kind: Pod
	metadata: {name: $pod, namespace: default}
	spec:
	  automountServiceAccountToken: false
	  containers:
	  - name: xvnc
	    image: $ref
	    imagePullPolicy: Never
	    command: [Xvnc, ":1", -rfbport, "5900", -SecurityTypes, None, -nolisten, tcp, -geometry, 1280x800, -depth, "24", -UseBlacklist=0]
	    securityContext:
	      runAsNonRoot: true
	      runAsUser: 10000
	      runAsGroup: 10000
	      allowPrivilegeEscalation: false
	      readOnlyRootFilesystem: true
	      capabilities: {drop: [ALL]}
	      seccompProfile: {type: RuntimeDefault}
	    volumeMounts:
	    - {name: tmp, mountPath: /tmp}
	    - {name: home, mountPath: /home/mc}
	  volumes:
	  - {name: tmp, emptyDir: {medium: Memory}}
	  - {name: home, emptyDir: {}}
	EOP
	kubectl wait --for=jsonpath='{.status.phase}'=Running "pod/$pod" --timeout=120s >/dev/null
	ip=$(kubectl get pod "$pod" -o jsonpath='{.status.podIP}')
	local running=$((SECONDS - t0))
	wait_for "RFB banner at $ip:5900" 30 bash -c "exec 3<>/dev/tcp/$ip/5900 && timeout 2 head -c 12 <&3 | grep -q '^RFB'"
	banner=$(timeout 5 bash -c "exec 3<>/dev/tcp/$ip/5900; head -c 12 <&3" | tr -d '\n')
	log "pod $pod Running at $ip after ${running}s; RFB banner after $((SECONDS - t0))s: $banner"
	kubectl get pod "$pod" -o wide --no-headers >&2
	kubectl delete pod "$pod" --grace-period=1 --wait=true >/dev/null
	[ "$banner" = "RFB 003.008" ] || die "smoke-xvnc: expected RFB 003.008, read \"$banner\""
	echo "smoke-xvnc ok: $banner from $ip:5900"
}

# cmd_smoke_machine ARCHIVE REF: the machine image built with the agent
# (scripts/image/build.sh --agent bin/mc-agent) imported into the node and run
# as a pod the way the kubernetes driver runs it: the agent as entry point,
# non-root, read-only root file system with emptyDirs, all capabilities
# dropped, no privilege escalation, the machine seccomp profile (RuntimeDefault
# plus the user namespaces of Chromium's sandbox), its token and VNC
# password from a Secret. From the host, the pod IP must answer an RFB banner
# (Xvnc) and the agent's /health with the browser up; then it says whether
# Chromium's own sandbox (its user and PID namespaces and seccomp-BPF) is on
# in the renderers.
cmd_smoke_machine() {
	need_root
	local archive=${1:-} ref=${2:-}
	[ -f "$archive" ] && [ -n "$ref" ] || die "usage: cluster.sh smoke-machine ARCHIVE REF (the two lines scripts/image/build.sh --agent prints)"
	cmd_status >/dev/null || die "the cluster is not up"
	local t0=$SECONDS pod=mc-machine-$RANDOM ip banner health token vncpw seccomp
	if ! ctr_ images ls -q 2>/dev/null | grep -qxF "$ref"; then
		ctr_ images import "$archive" >/dev/null
		log "imported $ref in $((SECONDS - t0))s"
	fi
	# RuntimeDefault blocks the user namespaces Chromium's sandbox needs
	# (unshare and clone with CLONE_NEWUSER need CAP_SYS_ADMIN there), so
	# the machine runs with the same profile plus those (MC_K8S_SECCOMP=
	# RuntimeDefault shows the difference: Chromium refuses to start).
	case ${MC_K8S_SECCOMP:-$MACHINE_SECCOMP} in
	RuntimeDefault) seccomp="{type: RuntimeDefault}" ;;
	*) seccomp="{type: Localhost, localhostProfile: ${MC_K8S_SECCOMP:-$MACHINE_SECCOMP}}" ;;
	esac
	token=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
	vncpw=$(head -c 6 /dev/urandom | base64 | tr -d '/+=' | cut -c1-8)
	t0=$SECONDS
	# The Secret's files are mounted one by one (subPath) into an emptyDir:
	# the agent writes files beside them (the VNC password as Xvnc reads
	# it, the X authority), and a Secret volume is read-only.
	kubectl apply -f - >/dev/null <<-EOP
	apiVersion: v1
	kind: Secret
	metadata: {name: $pod, namespace: default}
	stringData: {agent-token: "$token", vnc-password: "$vncpw"}
	---
	apiVersion: v1
	kind: Pod
	metadata: {name: $pod, namespace: default}
	spec:
	  automountServiceAccountToken: false
	  enableServiceLinks: false
	  securityContext:
	    runAsNonRoot: true
	    runAsUser: 10000
	    runAsGroup: 10000
	    fsGroup: 10000
	    seccompProfile: $seccomp
	  containers:
	  - name: machine
	    image: $ref
	    imagePullPolicy: Never
	    args: [--listen, "0.0.0.0:8080", --token-file, /run/mc/agent-token, --vnc-listen, "0.0.0.0:5900",
	      --vnc-password-file, /run/mc/vnc-password, --display, "1",
	      --home, /home/mc, --tmp-dir, /tmp/mc, --start-url, "local:/demo/signin"]
	    securityContext:
	      allowPrivilegeEscalation: false
	      readOnlyRootFilesystem: true
	      capabilities: {drop: [ALL]}
	    resources:
	      requests: {cpu: 100m, memory: 256Mi}
	      limits: {memory: 1Gi}
	    volumeMounts:
	    - {name: run, mountPath: /run/mc}
	    - {name: secret, mountPath: /run/mc/agent-token, subPath: agent-token, readOnly: true}
	    - {name: secret, mountPath: /run/mc/vnc-password, subPath: vnc-password, readOnly: true}
	    - {name: tmp, mountPath: /tmp}
	    - {name: home, mountPath: /home/mc}
	    - {name: shm, mountPath: /dev/shm}
	  volumes:
	  - {name: run, emptyDir: {medium: Memory, sizeLimit: 1Mi}}
	  - {name: secret, secret: {secretName: $pod, defaultMode: 0440}}
	  - {name: tmp, emptyDir: {medium: Memory, sizeLimit: 64Mi}}
	  - {name: home, emptyDir: {sizeLimit: 512Mi}}
	  - {name: shm, emptyDir: {medium: Memory, sizeLimit: 256Mi}}
	EOP
	# The pod and its Secret go whether the smoke passes (RETURN) or dies (EXIT).
	# shellcheck disable=SC2064
	trap "kubectl delete pod,secret $pod --grace-period=1 --wait=false >/dev/null 2>&1 || true" RETURN EXIT
	kubectl wait --for=jsonpath='{.status.phase}'=Running "pod/$pod" --timeout=120s >/dev/null
	ip=$(kubectl get pod "$pod" -o jsonpath='{.status.podIP}')
	local running=$((SECONDS - t0))
	wait_for "RFB banner at $ip:5900" 60 bash -c "exec 3<>/dev/tcp/$ip/5900 && timeout 2 head -c 12 <&3 | grep -q '^RFB'"
	banner=$(timeout 5 bash -c "exec 3<>/dev/tcp/$ip/5900; head -c 12 <&3" | tr -d '\n')
	local rfb=$((SECONDS - t0))
	# /health answers 200 once both Xvnc and Chromium are up.
	if ! wait_for_quiet 60 curl -fsS -o /dev/null -H "Authorization: Bearer $token" "http://$ip:8080/health"; then
		kubectl logs "$pod" >&2 || true
		die "smoke-machine: the agent's /health at $ip:8080 did not answer 200"
	fi
	health=$(curl -sS -H "Authorization: Bearer $token" "http://$ip:8080/health")
	log "pod $pod Running at $ip after ${running}s; RFB after ${rfb}s; /health 200 after $((SECONDS - t0))s: $health"
	[ "$banner" = "RFB 003.008" ] || die "smoke-machine: expected RFB 003.008, read \"$banner\""
	local code
	code=$(curl -s -o /dev/null -w '%{http_code}' "http://$ip:8080/health")
	[ "$code" = 401 ] || die "smoke-machine: /health without the token answered $code, want 401"
	sandbox_report "$pod"
	memory_report "$pod"
	echo "smoke-machine ok: $banner from $ip:5900, /health 200 from $ip:8080"
}

# sandbox_report POD: how Chromium's processes in POD are confined, read
# from the host's /proc: a renderer in a user and PID namespace of its own
# (the namespace sandbox) and with more seccomp filters than the container's
# one (seccomp-BPF) has Chromium's own sandbox on.
sandbox_report() {
	local pod=$1 uid cg p agent="" renderer="" line
	uid=$(kubectl get pod "$pod" -o jsonpath='{.metadata.uid}')
	for p in /proc/[0-9]*; do
		cg=$(cat "$p/cgroup" 2>/dev/null) || continue
		case $cg in *"${uid//-/_}"* | *"$uid"*) ;; *) continue ;; esac
		line=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null)
		case $line in
		*mc-agent*) [ -n "$agent" ] || agent=${p#/proc/} ;;
		*--type=renderer*) [ -n "$renderer" ] || renderer=${p#/proc/} ;;
		esac
	done
	[ -n "$agent" ] || die "sandbox: no agent process of pod $pod found"
	[ -n "$renderer" ] || die "sandbox: no Chromium renderer running in pod $pod"
	local userns pidns filters agentfilters
	userns=$([ "$(readlink "/proc/$renderer/ns/user")" != "$(readlink "/proc/$agent/ns/user")" ] && echo own || echo shared)
	pidns=$([ "$(readlink "/proc/$renderer/ns/pid")" != "$(readlink "/proc/$agent/ns/pid")" ] && echo own || echo shared)
	filters=$(awk '/^Seccomp_filters:/ {print $2}' "/proc/$renderer/status")
	agentfilters=$(awk '/^Seccomp_filters:/ {print $2}' "/proc/$agent/status")
	log "sandbox: Chromium renderer pid $renderer: user namespace $userns, PID namespace $pidns, seccomp filters $filters (the container's: $agentfilters)"
	if [ "$userns" = own ] && [ "$pidns" = own ] && [ "$filters" -gt "$agentfilters" ]; then
		echo "chromium sandbox: on (namespaces and seccomp-BPF)"
	else
		die "chromium sandbox: NOT fully on (user ns $userns, pid ns $pidns, seccomp filters $filters vs $agentfilters)"
	fi
}

# memory_report POD: the pod's memory as its cgroup counts it (v1: every
# container and the pause container; the memory-backed emptyDirs count as
# cache).
memory_report() {
	local uid d
	uid=$(kubectl get pod "$1" -o jsonpath='{.metadata.uid}')
	d=$(find "/sys/fs/cgroup/memory$CGROUP_ROOT" -maxdepth 3 -type d -name "pod$uid" 2>/dev/null | head -1)
	[ -n "$d" ] || { log "memory: no cgroup of pod $1 found"; return 0; }
	awk -v pod="$1" '$1 == "total_rss" {rss = $2} $1 == "total_cache" {cache = $2} $1 == "total_shmem" {shm = $2}
		END {printf "memory of pod %s: rss %d MB, cache %d MB (shmem %d MB)\n", pod, rss / 1048576, cache / 1048576, shm / 1048576}' "$d/memory.stat"
}

# wait_for_quiet SECONDS CMD…: like wait_for, but returns 1 instead of dying.
wait_for_quiet() {
	local secs=$1 i
	shift
	for ((i = 0; i < secs * 5; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	return 1
}

# cmd_check_deploy [DIR]: the kustomization in DIR (deploy/kubernetes)
# rendered by kubectl and validated by the running cluster's API server
# (apply --dry-run=server: schemas, admission, Pod Security). Its namespaces
# are created for real first: the server cannot check objects in a
# namespace that a dry run only pretends to create.
cmd_check_deploy() {
	local dir=${1:-$(dirname "$SECCOMP_DIR")} out
	[ -f "$dir/kustomization.yaml" ] || die "check-deploy: no kustomization.yaml in $dir"
	cmd_status >/dev/null || die "the cluster is not up"
	kubectl kustomize "$dir" | awk 'BEGIN {RS = "\n---\n"} /(^|\n)kind: Namespace\n/ {print "---"; print}' |
		kubectl apply -f - >/dev/null
	# A warning (a Pod Security violation, a deprecated field) fails too.
	out=$(kubectl apply -k "$dir" --dry-run=server 2>&1) || die "check-deploy: $out"
	echo "$out"
	if grep -qi '^warning' <<<"$out"; then die "check-deploy: the API server warned (above)"; fi
	log "check-deploy: $dir accepted by the API server (dry run)"
}

cmd_import() {
	[ -f "${1:-}" ] || die "import: no such archive: ${1:-}"
	local t0=$SECONDS
	ctr_ images import "$1"
	log "imported $1 in $((SECONDS - t0))s"
}

case "${1:-}" in
build) cmd_build ;;
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
env) cmd_env ;;
import) cmd_import "${2:-}" ;;
host) cmd_host ;;
smoke) cmd_smoke ;;
smoke-xvnc) cmd_smoke_xvnc "${2:-}" "${3:-}" ;;
smoke-machine) cmd_smoke_machine "${2:-}" "${3:-}" ;;
check-deploy) cmd_check_deploy "${2:-}" ;;
-h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' ;;
*) die "usage: $0 build|up|down|status|env|smoke|smoke-xvnc ARCHIVE REF|smoke-machine ARCHIVE REF|check-deploy [DIR]|import FILE|host (--help for more)" ;;
esac
