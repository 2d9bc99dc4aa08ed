#!/usr/bin/env bash
# run.sh — the VM tier's entry point (tests/vm/README.md): builds or reuses the image,
# assembles the 9p share from this repo in a temp dir, boots it, prints the guest's log and
# exits with the guest's exit code (124: timed out, 125: the guest never reported).
#
# FAAS_BIN: the release binary to test (default target/release/faas, relative to the repo
# root; libfaas_zygote.so beside it goes along); FAAS_BIN=none runs the tier's own checks without one, and anything else that is
# missing is an error. FAAS_DEB: the Debian package (default target/deb/faas_VERSION_ARCH.deb,
# what `make deb` builds); FAAS_DEB=none leaves the package checks out, and a missing one is an
# error too. lintian runs on the package here, on the host (it is installed when missing),
# and the guest's deb-lintian check reads what it said. FAAS_VM_KEEP=1 keeps the share (and
# out/: log, console, journal) afterwards. boot.sh's variables (FAAS_VM_TIMEOUT,
# FAAS_VM_MEMORY, ...) pass through.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
log() { printf 'run: %s\n' "$*" >&2; }
die() { printf 'run: error: %s\n' "$*" >&2; exit 2; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

t0=$(date +%s.%N)
bin=${FAAS_BIN:-target/release/faas}
if [[ $bin != none ]]; then
    [[ $bin == /* ]] || bin="$repo/$bin"
    [[ -f $bin ]] || die "no faas binary at $bin: build it first
hint: CARGO_TARGET_DIR=/tmp/vm-target cargo build --release, then FAAS_BIN=/tmp/vm-target/release/faas;
      or FAAS_BIN=none to run only the VM tier's own checks"
    [[ -f $(dirname "$bin")/libfaas_zygote.so ]] || die "no libfaas_zygote.so beside $bin (cargo build --release builds both)"
fi
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n 1)
deb=${FAAS_DEB:-target/deb/faas_${version}_$(dpkg --print-architecture 2>/dev/null || echo amd64).deb}
if [[ $deb != none ]]; then
    [[ $deb == /* ]] || deb="$repo/$deb"
    [[ -f $deb ]] || die "no Debian package at $deb: build it first
hint: make deb (make vm-test does); or FAAS_DEB=none to leave the package checks out"
fi

# The image first: its build log is worth seeing before the share is assembled.
t=$(date +%s.%N)
image_dir=$("$here/build-rootfs.sh")
t_image=$(since "$t")

share=$(mktemp -d "${TMPDIR:-/tmp}/faas-vm.XXXXXX")
if [[ ${FAAS_VM_KEEP:-0} == 1 ]]; then
    log "keeping the share at $share"
else
    trap 'rm -rf "$share"' EXIT
fi
install -m 0755 "$here/guest-test.sh" "$share/guest-test.sh"
# Check libraries that guest-test.sh sources (faas-checks.sh, ...), beside it.
for lib in "$here"/*-checks.sh; do
    [[ -e $lib ]] && install -m 0644 "$lib" "$share/"
done
mkdir -p "$share/repo"
for path in Makefile README.md systemd config wrappers man; do
    if [[ -e $repo/$path ]]; then
        cp -a "$repo/$path" "$share/repo/"
    else
        log "note: $path is not in the repo yet; not shared"
    fi
done
if [[ $bin != none ]]; then
    install -D -m 0755 "$bin" "$share/repo/target/release/faas"
    # The guest fails faas-binary when this is here and the binary is not (or differs): a
    # share that lost it must not turn the faas checks into one quiet todo.
    sha256sum "$bin" | cut -d' ' -f1 >"$share/expect-binary"
    # The warm zygote's native library, where the daemon looks first beside its executable
    # (make install in the guest installs it from there too).
    install -D -m 0644 "$(dirname "$bin")/libfaas_zygote.so" "$share/repo/target/release/libfaas_zygote.so"
fi
if [[ $deb != none ]]; then
    install -D -m 0644 "$deb" "$share/deb/${deb##*/}"
    # As with expect-binary: a package that went missing on the way is a failure in the guest.
    sha256sum "$deb" | cut -d' ' -f1 >"$share/expect-deb"
    if ! command -v lintian >/dev/null; then
        log "installing lintian"
        apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends lintian >&2
    fi
    t=$(date +%s.%N)
    # lintian's own verdict (exit 0: no error) and every tag, info included, for the log.
    lintian_rc=0
    lintian --pedantic --display-info "$deb" >"$share/deb/lintian.txt" 2>&1 || lintian_rc=$?
    echo "$lintian_rc" >"$share/deb/lintian.rc"
    lintian --version >"$share/deb/lintian.version" 2>&1 || true
    log "lintian ${deb##*/}: exit $lintian_rc, $(grep -c '^E: ' "$share/deb/lintian.txt") error(s), $(grep -c '^W: ' "$share/deb/lintian.txt") warning(s) in $(since "$t")s"
fi
# 9p with security_model=none makes the guest's root act as this user on the share.
chmod -R a+rX "$share"

qrc=0
FAAS_VM_IMAGE_DIR=$image_dir "$here/boot.sh" "$share" || qrc=$?
log "total ${t_image}s image + $(awk -v a="$t0" -v i="$t_image" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a - i }')s share and VM = $(since "$t0")s; exit $qrc"
exit "$qrc"
