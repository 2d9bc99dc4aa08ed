#!/usr/bin/env bash
# boot.sh GUEST_DIR — boots the VM tier image once with GUEST_DIR shared at /mnt/faas, where
# the guest runs guest-test.sh, writes out/log and out/rc, and powers off. Prints the guest's
# log and exits with the guest's exit code; 124 when the VM ran past FAAS_VM_TIMEOUT and was
# killed, 125 when the guest never reported an exit code. See tests/vm/README.md.
#
# Environment: FAAS_VM_TIMEOUT (seconds, default 900), FAAS_VM_MEMORY (default 2G),
# FAAS_VM_CPUS (default 2), FAAS_VM_ACCEL (default tcg,thread=multi; KVM does not work on
# the development machines), FAAS_VM_IMAGE_DIR (default: build or reuse via build-rootfs.sh),
# FAAS_VM_APPEND (extra kernel command line).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { printf 'boot: error: %s\n' "$*" >&2; exit 2; }
log() { printf 'boot: %s\n' "$*" >&2; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

(($# == 1)) || die "usage: $0 GUEST_DIR (a directory holding guest-test.sh)"
[[ -f $1/guest-test.sh ]] || die "$1/guest-test.sh does not exist"
guest_dir=$(realpath "$1")
timeout_s=${FAAS_VM_TIMEOUT:-900}
[[ $timeout_s =~ ^[0-9]+$ ]] || die "FAAS_VM_TIMEOUT must be whole seconds, not '$timeout_s'"

if ! command -v qemu-system-x86_64 >/dev/null; then
    [[ $(id -u) -eq 0 ]] || die "qemu-system-x86_64 not found: apt-get install qemu-system-x86"
    log "installing qemu-system-x86"
    apt-get update -q >&2
    # No recommends: qemu-utils from backports can conflict with bookworm's qemu-system.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends qemu-system-x86 >&2
fi

image_dir=${FAAS_VM_IMAGE_DIR:-$("$here/build-rootfs.sh")}
for f in rootfs.img vmlinuz initrd.img; do
    [[ -f $image_dir/$f ]] || die "$image_dir/$f missing; run tests/vm/build-rootfs.sh"
done

out="$guest_dir/out"
rm -rf "$out"
mkdir -p "$out"
console="$out/console.log"   # ttyS0: kernel, systemd and the test's own output
result="$out/ttyS1.log"      # ttyS1: FAAS_VM_RC=N, the exit code again, in case 9p broke

append="root=/dev/vda rootfstype=ext4 rw console=ttyS0 loglevel=4 panic=1"
append+=" systemd.unified_cgroup_hierarchy=1 systemd.show_status=auto mitigations=off"
append+=" ${FAAS_VM_APPEND:-}"

qemu=(
    qemu-system-x86_64
    -accel "${FAAS_VM_ACCEL:-tcg,thread=multi}" -cpu "${FAAS_VM_CPU:-max}" -M q35 -nodefaults
    -m "${FAAS_VM_MEMORY:-2G}" -smp "${FAAS_VM_CPUS:-2}"
    -kernel "$image_dir/vmlinuz" -initrd "$image_dir/initrd.img" -append "$append"
    -drive "file=$image_dir/rootfs.img,if=virtio,format=raw,snapshot=on"
    -virtfs "local,path=$guest_dir,mount_tag=faas,security_model=none,id=faas"
    -device virtio-rng-pci
    -nic none
    -serial "file:$console" -serial "file:$result"
    -monitor none -display none -no-reboot
)

log "booting $(basename "$image_dir") ($(sed -n 's/^kernel=//p' "$image_dir/info" 2>/dev/null)), timeout ${timeout_s}s"
t0=$(date +%s.%N)
# qemu runs in the background so that this script, interrupted, still kills it; timeout(1)
# bounds it even if this script is killed outright.
timeout --kill-after=10 "$timeout_s" "${qemu[@]}" </dev/null >"$out/qemu.log" 2>&1 &
qpid=$!
trap 'kill "$qpid" 2>/dev/null || true' EXIT
trap 'kill "$qpid" 2>/dev/null; exit 130' INT TERM
qrc=0
wait "$qpid" || qrc=$?
trap - EXIT
wall=$(since "$t0")

if [[ -s $out/log ]]; then
    echo "----- guest log ($out/log) -----"
    cat "$out/log"
    echo "----- end of guest log -----"
fi

rc=""
if [[ -f $out/rc ]]; then
    rc=$(tr -dc 0-9 <"$out/rc")
elif grep -q '^FAAS_VM_RC=' "$result" 2>/dev/null; then
    rc=$(sed -n 's/^FAAS_VM_RC=\([0-9]*\).*/\1/p' "$result" | tail -n1)
fi

boot_s=$(cat "$out/boot-seconds" 2>/dev/null || echo "?")
test_s=$(cat "$out/test-seconds" 2>/dev/null || echo "?")
log "timings: boot to test ${boot_s}s, test ${test_s}s, qemu wall clock ${wall}s (guest state: $(cat "$out/system-state" 2>/dev/null || echo unknown))"

if ((qrc == 124 || qrc == 137)); then
    log "timed out after ${timeout_s}s; qemu killed"
    rc=124
elif ((qrc != 0)); then
    log "qemu exited $qrc:"
    sed 's/^/  /' "$out/qemu.log" >&2
fi
if [[ -z $rc ]]; then
    log "the guest reported no exit code"
    rc=125
fi
if ((rc != 0)); then
    log "guest exit code $rc; last lines of the serial console ($console):"
    tail -n 60 "$console" | sed 's/^/  | /' >&2
else
    log "guest exit code 0"
fi
exit "$rc"
