#!/usr/bin/env bash
# Builds the machine image: a Debian root file system made with debootstrap
# from scripts/image/packages.txt (Xvnc, Chromium, fonts), plus the agent and
# the pinned provider CLIs when given, packed as an OCI image archive that
# `ctr images import` (or `skopeo copy oci-archive:… docker://…`) accepts.
#
# Usage: scripts/image/build.sh [options]
#   --agent FILE   the mc-agent binary to put at /usr/local/bin/mc-agent and
#                  make the entry point (default: bin/mc-agent if it exists)
#   --no-agent     leave the agent out even if bin/mc-agent exists
#   --clis DIR     an installed provider-CLI directory (the one scripts/deps.sh
#                  makes from clis/package-lock.json, with node_modules/); it
#                  goes to /opt/mc/clis, its .bin on PATH (default: none)
#   --node FILE    the node binary the CLIs need, put at /usr/local/bin/node
#                  (default with --clis: the host's node)
#   --out FILE     also copy the archive to FILE
#   -h, --help     this text
#
# It prints two lines: the archive path and the image reference
# (docker.io/library/mc-machine:<hash>); pods use it with imagePullPolicy: Never.
#
# Caches, outside the checkout, under MC_IMAGE_CACHE
# (default /var/cache/master-controller/image):
#   rootfs-<h>/           the base image (OCI layout), h = hash of packages.txt,
#                         suite, mirror and this recipe; packages-<h>.txt lists
#                         the exact versions it holds
#   mc-machine-<k>.tar    the final archive, k = hash of h, agent, CLIs, node
#                         (the three newest are kept)
# A cold build (debootstrap with Chromium) is network-bound, about 10 minutes;
# a warm one with a new agent takes seconds.
#
# Environment: MC_IMAGE_CACHE, MC_IMAGE_MIRROR (http://deb.debian.org/debian),
# MC_IMAGE_SUITE (bookworm). Needs root, debootstrap, umoci and skopeo
# (installed from Debian if missing).
set -euo pipefail
cd "$(dirname "$0")/../.."

CACHE=${MC_IMAGE_CACHE:-/var/cache/master-controller/image}
MIRROR=${MC_IMAGE_MIRROR:-http://deb.debian.org/debian}
SUITE=${MC_IMAGE_SUITE:-bookworm}
PACKAGES=scripts/image/packages.txt
# Bump when the root file system recipe below changes (it is part of the hash).
RECIPE=1
# The machine user: not root, a fixed id the kubernetes driver runs as.
MC_UID=10000

agent="" clis="" node="" out="" no_agent=0
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
	case $1 in
	--agent) agent=$2; shift 2 ;;
	--no-agent) no_agent=1; shift ;;
	--clis) clis=$2; shift 2 ;;
	--node) node=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
	esac
done

log() { printf '%s image: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "$*"; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap)"

if [ $no_agent = 0 ] && [ -z "$agent" ] && [ -x bin/mc-agent ]; then agent=bin/mc-agent; fi
[ -z "$agent" ] || [ -x "$agent" ] || die "--agent $agent: not an executable file"
if [ -n "$clis" ]; then
	clis=$(readlink -f "$clis")
	[ -d "$clis/node_modules/.bin" ] || die "--clis $clis: no node_modules/.bin in it"
	[ -n "$node" ] || node=$(command -v node) || die "--clis needs node: give --node FILE"
fi
[ -z "$node" ] || [ -x "$node" ] || die "--node $node: not an executable file"

missing=()
for p in debootstrap umoci skopeo; do command -v "$p" >/dev/null || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
	log "installing Debian packages: ${missing[*]}"
	# A fresh machine may have no package lists yet: update once and retry.
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		-o DPkg::Lock::Timeout=900 "${missing[@]}" >/dev/null ||
		{ apt-get update -qq -o DPkg::Lock::Timeout=900 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends -o DPkg::Lock::Timeout=900 "${missing[@]}" >/dev/null; }
fi

pkgs=$(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$PACKAGES" | grep -v '^$' | paste -sd, -)
[ -n "$pkgs" ] || die "$PACKAGES lists no package"
base_key=$( { cat "$PACKAGES"; echo "$SUITE $MIRROR $RECIPE $MC_UID"; } | sha256sum | cut -c1-16)
base=$CACHE/rootfs-$base_key
mkdir -p "$CACHE"

# unmount_under DIR: whatever a failed build left mounted below DIR (debootstrap
# and the chroot mount /proc and /sys), before anything there is removed.
unmount_under() {
	local m
	for m in $(awk -v d="$1/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
		umount -l "$m" || true
	done
}

# build_base: debootstrap, trimmed, as a one-layer OCI image "base".
build_base() {
	local w=$CACHE/work-$base_key
	unmount_under "$w"
	rm -rf "$w" && mkdir -p "$w"
	trap 'unmount_under "$CACHE/work-$base_key"' EXIT
	# debootstrap makes the base system; apt inside it installs the list
	# (debootstrap's own --include cannot choose among virtual packages).
	log "debootstrap $SUITE from $MIRROR, then apt-get install: $pkgs (cold: several minutes)"
	nice -n 19 debootstrap --variant=minbase "$SUITE" "$w/rootfs" "$MIRROR" >"$w/debootstrap.log" 2>&1 ||
		die "debootstrap failed; see $w/debootstrap.log"
	local r=$w/rootfs
	cat >"$r/etc/apt/sources.list" <<-EOS
	deb $MIRROR $SUITE main
	deb $MIRROR $SUITE-updates main
	deb ${MIRROR%/debian}/debian-security $SUITE-security main
	EOS
	printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d" && chmod +x "$r/usr/sbin/policy-rc.d"
	cp /etc/resolv.conf "$r/etc/resolv.conf"
	mount -t proc proc "$r/proc"
	if ! { chroot "$r" apt-get update -qq &&
		DEBIAN_FRONTEND=noninteractive nice -n 19 chroot "$r" apt-get install -y -qq --no-install-recommends ${pkgs//,/ } &&
		chroot "$r" apt-get -qq upgrade -y; } >>"$w/debootstrap.log" 2>&1; then
		die "apt-get install failed; see $w/debootstrap.log"
	fi
	umount "$r/proc"
	rm -f "$r/usr/sbin/policy-rc.d"
	: >"$r/etc/resolv.conf"
	# The exact package versions, for the record and the image's label.
	chroot "$r" dpkg-query -W -f='${Package} ${Version}\n' >"$w/packages.txt"
	# Nothing a machine needs: apt's caches and lists, logs, man pages.
	rm -rf "$r"/var/cache/apt/*.bin "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/* \
		"$r"/var/log/* "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/var/cache/debconf/*-old
	# The machine user, with a home the driver may mount over (emptyDir).
	echo "mc:x:$MC_UID:$MC_UID:machine:/home/mc:/usr/sbin/nologin" >>"$r/etc/passwd"
	echo "mc:x:$MC_UID:" >>"$r/etc/group"
	echo "mc:*:19000:0:99999:7:::" >>"$r/etc/shadow"
	install -d -o $MC_UID -g $MC_UID -m 0700 "$r/home/mc"
	install -d -m 0755 "$r/opt/mc"
	# No machine id baked in: each container gets an empty one.
	: >"$r/etc/machine-id"
	log "packing the root file system"
	umoci init --layout "$w/oci" >/dev/null
	umoci new --image "$w/oci:base" >/dev/null
	umoci unpack --image "$w/oci:base" "$w/bundle" >/dev/null
	rm -rf "$w/bundle/rootfs"
	mv "$r" "$w/bundle/rootfs"
	nice -n 19 umoci repack --image "$w/oci:base" "$w/bundle" >/dev/null
	umoci gc --layout "$w/oci"
	rm -rf "$base" "$CACHE/packages-$base_key.txt"
	mv "$w/packages.txt" "$CACHE/packages-$base_key.txt"
	mv "$w/oci" "$base"
	unmount_under "$w"
	rm -rf "$w"
	trap - EXIT
}
if [ ! -f "$base/index.json" ]; then build_base; else log "root file system cached: $base"; fi

sum() { if [ -n "$1" ]; then sha256sum "$1" | cut -c1-16; else echo none; fi; }
clis_id=none
if [ -n "$clis" ]; then
	# The CLI directory is named by the hash of its lock file; its name and
	# the lock file's own hash identify its content.
	clis_id=$(cat "$clis"/package-lock.json 2>/dev/null | sha256sum | cut -c1-16)
fi
key=$(echo "$base_key $(sum "$agent") $clis_id $(sum "$node")" | sha256sum | cut -c1-16)
ref=docker.io/library/mc-machine:$key
archive=$CACHE/mc-machine-$key.tar

if [ ! -f "$archive" ]; then
	w=$(mktemp -d "$CACHE/final.XXXXXX")
	trap 'rm -rf "$w"' EXIT
	# A copy of the base layout that shares its (immutable) blobs.
	cp -al "$base" "$w/oci"
	rm "$w/oci/index.json" && cp "$base/index.json" "$w/oci/index.json"
	img="$w/oci:base"
	path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
	if [ -n "$agent" ]; then
		log "adding the agent $agent"
		install -D -m 0755 "$agent" "$w/add/agent/usr/local/bin/mc-agent"
		umoci insert --image "$img" "$w/add/agent/usr/local/bin/mc-agent" /usr/local/bin/mc-agent >/dev/null
		# The machine's Chromium policy (no file:// pages, file chooser,
		# downloads, DevTools window, chrome:// pages but chrome://sandbox),
		# the one the local driver's confined root has.
		mkdir -p "$w/add/policy"
		"$agent" chromium-policy >"$w/add/policy/mc.json"
		umoci insert --image "$img" "$w/add/policy/mc.json" /etc/chromium/policies/managed/mc.json >/dev/null
	fi
	if [ -n "$node" ]; then
		install -D -m 0755 "$node" "$w/add/node/usr/local/bin/node"
		umoci insert --image "$img" "$w/add/node/usr/local/bin/node" /usr/local/bin/node >/dev/null
	fi
	if [ -n "$clis" ]; then
		log "adding the provider CLIs from $clis"
		nice -n 19 umoci insert --image "$img" "$clis" /opt/mc/clis >/dev/null
		path=/opt/mc/clis/node_modules/.bin:$path
	fi
	cfg=(--config.user "$MC_UID:$MC_UID" --config.workingdir /home/mc
		--config.env "PATH=$path" --config.env HOME=/home/mc --config.env LANG=C.UTF-8
		--config.label "org.opencontainers.image.title=mc-machine"
		--config.label "org.opencontainers.image.version=$key"
		--config.label "mc.rootfs=$base_key")
	if [ -n "$agent" ]; then cfg+=(--config.entrypoint /usr/local/bin/mc-agent); fi
	umoci config --image "$img" "${cfg[@]}" >/dev/null
	log "writing $archive"
	nice -n 19 skopeo copy --quiet "oci:$w/oci:base" "oci-archive:$archive.tmp:$ref"
	mv "$archive.tmp" "$archive"
	# Keep the three newest archives (each is several hundred MB).
	ls -t "$CACHE"/mc-machine-*.tar | tail -n +4 | xargs -r rm -f
fi
[ -z "$out" ] || cp "$archive" "$out"
echo "$archive"
echo "$ref"
