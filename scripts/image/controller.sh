#!/usr/bin/env bash
# Builds the controller's image: a static master-controller and the web
# directory it serves (the viewer and dashboard pages, noVNC from
# web/node_modules), packed as an OCI image archive that `ctr images import`
# (or `skopeo copy oci-archive:… docker://…`) accepts. Its entry point is
# "master-controller serve", as user 10001, with MC_WEB_DIR set; everything
# else comes from the environment (deploy/kubernetes/deployment.yaml).
#
# Usage: scripts/image/controller.sh [--out FILE] [-h|--help]
#
# It prints two lines: the archive path and the image reference
# (docker.io/library/master-controller:<hash of its content>). Archives are
# kept under MC_IMAGE_CACHE (default /var/cache/master-controller/image), the
# three newest. Needs Go, npm (for web/node_modules if missing), umoci and
# skopeo (installed from Debian if missing, as root).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"

CACHE=${MC_IMAGE_CACHE:-/var/cache/master-controller/image}
UID_=10001
out=""
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
	case $1 in
	--out) out=$2; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
	esac
done
log() { printf '%s controller-image: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "$*"; exit 1; }

missing=()
for p in umoci skopeo; do command -v "$p" >/dev/null || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
	[ "$(id -u)" = 0 ] || die "missing ${missing[*]} (apt-get install ${missing[*]})"
	log "installing Debian packages: ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		-o DPkg::Lock::Timeout=900 "${missing[@]}" >/dev/null
fi
if [ ! -f web/node_modules/.package-lock.json ] || [ web/package-lock.json -nt web/node_modules/.package-lock.json ]; then
	log "installing the viewer's npm packages (npm ci --prefix web)"
	npm ci --prefix web --no-audit --no-fund --loglevel=error >/dev/null
fi

w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
mkdir -p "$w/root/usr/local/bin" "$w/root/opt/mc/web/node_modules/@novnc" "$w/root/etc/ssl/certs" "$w/root/tmp"
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$w/root/usr/local/bin/master-controller" ./cmd/master-controller
cp -r web/*.html web/static web/package.json "$w/root/opt/mc/web/"
cp -r web/node_modules/@novnc/novnc "$w/root/opt/mc/web/node_modules/@novnc/"
# TLS roots (webhooks, a PostgreSQL with sslmode=verify-full).
[ ! -f /etc/ssl/certs/ca-certificates.crt ] || cp /etc/ssl/certs/ca-certificates.crt "$w/root/etc/ssl/certs/"
printf 'root:x:0:0::/:/usr/sbin/nologin\nmc:x:%d:%d::/var/lib/master-controller:/usr/sbin/nologin\n' $UID_ $UID_ >"$w/root/etc/passwd"
printf 'root:x:0:\nmc:x:%d:\n' $UID_ >"$w/root/etc/group"
chmod 1777 "$w/root/tmp"

key=$( (cd "$w/root" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16)
ref=docker.io/library/master-controller:$key
archive=$CACHE/master-controller-$key.tar
mkdir -p "$CACHE"
if [ ! -f "$archive" ]; then
	umoci init --layout "$w/oci" >/dev/null
	umoci new --image "$w/oci:img" >/dev/null
	umoci unpack --rootless --image "$w/oci:img" "$w/bundle" >/dev/null
	rm -rf "$w/bundle/rootfs" && mv "$w/root" "$w/bundle/rootfs"
	umoci repack --image "$w/oci:img" "$w/bundle" >/dev/null
	umoci config --image "$w/oci:img" --config.user "$UID_:$UID_" \
		--config.entrypoint /usr/local/bin/master-controller --config.cmd serve \
		--config.env MC_WEB_DIR=/opt/mc/web --config.workingdir /var/lib/master-controller \
		--config.label "org.opencontainers.image.title=master-controller" \
		--config.label "org.opencontainers.image.version=$key" >/dev/null
	log "writing $archive"
	skopeo copy --quiet "oci:$w/oci:img" "oci-archive:$archive.tmp:$ref"
	mv "$archive.tmp" "$archive"
	ls -t "$CACHE"/master-controller-*.tar | tail -n +4 | xargs -r rm -f
fi
[ -z "$out" ] || cp "$archive" "$out"
echo "$archive"
echo "$ref"
