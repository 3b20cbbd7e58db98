#!/usr/bin/env bash
# Builds the Docker image weir:latest (deploy/Dockerfile) from binaries compiled on this host.
#
#   scripts/docker-image.sh            # builds weir:latest
#   IMAGE=weir:dev scripts/docker-image.sh
#
# 1. `cargo build --release` of weir-server, and of the `weir` CLI when the workspace has a
#    `weir` binary target (set WEIR_IMAGE_CLI=no to leave it out).
# 2. Stages the build context in target/docker/context/: the binaries with their debug info
#    stripped, a static busybox (its wget runs the image's health check; from $BUSYBOX, else
#    /bin/busybox, installed from Debian's busybox-static package when missing), an empty data/.
# 3. Picks the base image (BASE_IMAGE, default `auto`):
#    - debian:bookworm-slim when it is already local or can be pulled, and its glibc (2.36) is
#      new enough for the binaries;
#    - otherwise weir-base:local, built here without any registry: the shared libraries the
#      binaries link (as `ldd` lists them, copied from this host, so they match the build), a
#      /etc/passwd and /etc/group with the `weir` user (uid 10001), busybox as /bin/sh and its
#      applets, imported with `docker import`. It is rebuilt only when those files change.
#    BASE_IMAGE=<image> uses that image instead (it must carry a glibc the binaries can use).
# 4. `docker build -f deploy/Dockerfile` with the chosen base, labelled with a hash of the
#    context and the base; when weir:latest already carries that hash the build is skipped, so
#    a second run costs a no-op cargo build and a checksum.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-weir:latest}
BASE_IMAGE=${BASE_IMAGE:-auto}
DEBIAN_BASE=debian:bookworm-slim
LOCAL_BASE=weir-base:local
# glibc of debian:bookworm-slim: binaries that need a newer one cannot run on it.
DEBIAN_GLIBC=2.36
WEIR_UID=10001
OUT=$PWD/target/docker
CTX=$OUT/context

log() { echo "docker-image: $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "cannot reach the Docker engine (docker info failed)"

# ---- 1. binaries ----
has_cli() {
  cargo metadata --format-version 1 --no-deps 2>/dev/null | python3 -c '
import json, sys
meta = json.load(sys.stdin)
sys.exit(0 if any(t["name"] == "weir" and "bin" in t["kind"]
                  for p in meta["packages"] for t in p["targets"]) else 1)'
}
BINS=(weir-server)
CARGO_ARGS=(-p weir-server --bin weir-server)
case ${WEIR_IMAGE_CLI:-auto} in
  no) ;;
  *)
    if has_cli; then
      BINS+=(weir)
      CARGO_ARGS+=(-p weir-cli --bin weir)
    elif [[ ${WEIR_IMAGE_CLI:-auto} == yes ]]; then
      die "WEIR_IMAGE_CLI=yes but the workspace has no \`weir\` binary target"
    else
      log "the workspace has no \`weir\` binary yet: the image gets weir-server only"
    fi
    ;;
esac
log "cargo build --release ${CARGO_ARGS[*]}"
cargo build --release "${CARGO_ARGS[@]}" >&2

# ---- 2. build context ----
find_busybox() {
  local bb=${BUSYBOX:-/bin/busybox}
  if [[ ! -x $bb ]] && [[ -z ${BUSYBOX:-} ]] && command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    log "installing Debian's busybox-static (for the health check's wget)"
    apt-get install -y -qq busybox-static >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq busybox-static >/dev/null 2>&1; } ||
      true
  fi
  [[ -x $bb ]] || die "no busybox at $bb: install a static busybox (Debian: apt-get install busybox-static) or set BUSYBOX"
  if ldd "$bb" >/dev/null 2>&1; then
    die "$bb is dynamically linked; the image needs a static busybox (Debian: busybox-static) or set BUSYBOX"
  fi
  echo "$bb"
}
BB=$(find_busybox)

rm -rf "$CTX"
mkdir -p "$CTX/rootfs/usr/local/bin" "$CTX/data"
for bin in "${BINS[@]}"; do
  # Line tables are for backtraces in development; the image keeps symbols only.
  strip --strip-debug -o "$CTX/rootfs/usr/local/bin/$bin" "target/release/$bin"
done
cp "$BB" "$CTX/rootfs/usr/local/bin/busybox"
chmod 0755 "$CTX"/rootfs/usr/local/bin/*

# ---- 3. base image ----
# The newest GLIBC_x.y symbol version the staged binaries need.
glibc_needed() {
  local bin
  for bin in "${BINS[@]}"; do
    objdump -T "$CTX/rootfs/usr/local/bin/$bin" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' || true
  done | sed 's/GLIBC_//' | sort -V | tail -n 1
}
version_le() { [[ $(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n 1) == "$1" ]]; }

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }
image_label() { docker image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }

# Builds weir-base:local from this host's copies of the libraries the binaries link.
build_local_base() {
  local root=$OUT/base/rootfs lib libs=() bin
  rm -rf "$OUT/base"
  mkdir -p "$root"/{bin,etc,tmp,usr/local/bin}
  chmod 1777 "$root/tmp"
  for bin in "${BINS[@]}"; do
    while read -r lib; do libs+=("$lib"); done < <(ldd "$CTX/rootfs/usr/local/bin/$bin" |
      grep -o '/[^ ]*' | sort -u)
  done
  # glibc before 2.34 loads name resolution from separate NSS modules.
  for lib in "${libs[@]}"; do
    if [[ $(basename "$lib") == libc.so.6 ]]; then
      for extra in libnss_files.so.2 libnss_dns.so.2 libresolv.so.2; do
        [[ -e $(dirname "$lib")/$extra ]] && libs+=("$(dirname "$lib")/$extra")
      done
    fi
  done
  for lib in $(printf '%s\n' "${libs[@]}" | sort -u); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  cp "$BB" "$root/bin/busybox"
  local applet
  for applet in $("$BB" --list); do
    [[ $applet == busybox ]] || ln -sf busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nweir:x:%s:%s:weir:/data:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
    "$WEIR_UID" "$WEIR_UID" >"$root/etc/passwd"
  printf 'root:x:0:\nweir:x:%s:\nnogroup:x:65534:\n' "$WEIR_UID" >"$root/etc/group"
  printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
  local hash
  hash=$( (cd "$root" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum &&
    find . -type l -printf '%p -> %l\n' | LC_ALL=C sort) | sha256sum | cut -c1-16)
  if image_exists "$LOCAL_BASE" && [[ $(image_label "$LOCAL_BASE" weir.base-hash) == "$hash" ]]; then
    log "base $LOCAL_BASE is up to date"
    return
  fi
  log "building $LOCAL_BASE (${#libs[@]} libraries from this host + busybox) with docker import"
  local old_id
  old_id=$(docker image inspect -f '{{.Id}}' "$LOCAL_BASE" 2>/dev/null || true)
  tar --numeric-owner --owner=0 --group=0 -C "$root" -cf - . |
    docker import --change "LABEL weir.base-hash=$hash" --change 'CMD ["/bin/sh"]' - "$LOCAL_BASE" >/dev/null
  [[ -z $old_id ]] || docker image rm "$old_id" >/dev/null 2>&1 || true
}

choose_base() {
  if [[ $BASE_IMAGE != auto ]]; then
    if ! image_exists "$BASE_IMAGE"; then
      log "pulling $BASE_IMAGE"
      timeout 300 docker pull "$BASE_IMAGE" >&2 || die "base image $BASE_IMAGE is neither local nor pullable"
    fi
    echo "$BASE_IMAGE"
    return
  fi
  local needed
  needed=$(glibc_needed)
  if [[ -n $needed ]] && ! version_le "$needed" "$DEBIAN_GLIBC"; then
    log "the binaries need glibc $needed, newer than $DEBIAN_BASE's $DEBIAN_GLIBC"
  elif image_exists "$DEBIAN_BASE" || timeout 120 docker pull -q "$DEBIAN_BASE" >/dev/null 2>&1; then
    echo "$DEBIAN_BASE"
    return
  else
    log "$DEBIAN_BASE is not local and cannot be pulled"
  fi
  build_local_base
  echo "$LOCAL_BASE"
}
BASE=$(choose_base)
BASE_ID=$(docker image inspect -f '{{.Id}}' "$BASE")

# ---- 4. the image ----
HASH=$({
  echo "base $BASE_ID"
  sha256sum deploy/Dockerfile | cut -d' ' -f1
  (cd "$CTX" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
  (cd "$CTX" && find . -print0 | LC_ALL=C sort -z | xargs -0 stat -c '%n %a')
} | sha256sum | cut -c1-16)
if image_exists "$IMAGE" && [[ $(image_label "$IMAGE" weir.context-hash) == "$HASH" ]]; then
  log "$IMAGE is up to date (base $BASE, ${BINS[*]})"
  exit 0
fi
log "docker build $IMAGE from $BASE (${BINS[*]})"
OLD_ID=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
docker build -q -f deploy/Dockerfile \
  --build-arg "BASE_IMAGE=$BASE" \
  --label "weir.context-hash=$HASH" \
  -t "$IMAGE" "$CTX" >/dev/null
# The image it replaces, now untagged, unless a container still uses it.
if [[ -n $OLD_ID && $OLD_ID != $(docker image inspect -f '{{.Id}}' "$IMAGE") ]]; then
  docker image rm "$OLD_ID" >/dev/null 2>&1 || true
fi
SIZE=$(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}')
log "built $IMAGE: $SIZE, base $BASE, ${BINS[*]}"
