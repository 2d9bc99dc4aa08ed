#!/usr/bin/env bash
# run.sh — the VM tier's entry point (tests/vm/README.md): builds or reuses the image,
# assembles the 9p share from this repo in a temp dir, boots it, prints the guest's log and
# exits with the guest's exit code (124: timed out, 125: the guest never reported).
#
# FAAS_BIN: the release binary to test (default target/release/faas, relative to the repo
# root); FAAS_BIN=none runs the tier's own checks without one, and anything else that is
# missing is an error. FAAS_VM_KEEP=1 keeps the share (and out/: log, console, journal)
# afterwards. boot.sh's variables (FAAS_VM_TIMEOUT, FAAS_VM_MEMORY, ...) pass through.
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
for path in Makefile README.md systemd config wrappers; do
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
fi
# 9p with security_model=none makes the guest's root act as this user on the share.
chmod -R a+rX "$share"

qrc=0
FAAS_VM_IMAGE_DIR=$image_dir "$here/boot.sh" "$share" || qrc=$?
log "total ${t_image}s image + $(awk -v a="$t0" -v i="$t_image" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a - i }')s share and VM = $(since "$t0")s; exit $qrc"
exit "$qrc"
