#!/usr/bin/env bash
# Builds the Debian bookworm image that the VM tier boots (tests/vm/README.md).
#
# Output, under $FAAS_VM_CACHE (default /var/cache/faas-vm):
#   image-KEY/rootfs.img   ext4, 2G sparse, / of the guest (booted with snapshot=on, never changed)
#   image-KEY/vmlinuz      the guest kernel, taken from the rootfs /boot
#   image-KEY/initrd.img   its initramfs (MODULES=list: virtio, ext4, 9p)
#   debs/                  debootstrap's .deb cache, shared by every KEY
# KEY is a hash of this script, so editing it rebuilds and an unchanged script reuses the
# image in a second. The image directory is printed on stdout (last line); progress and
# timings go to stderr. Needs root (debootstrap, chroot); installs debootstrap if missing.
set -euo pipefail

SUITE=bookworm
MIRROR=${FAAS_VM_MIRROR:-http://deb.debian.org/debian}
CACHE=${FAAS_VM_CACHE:-/var/cache/faas-vm}
IMAGE_SIZE=2G
# Everything the guest tests use. debootstrap does not install Recommends.
PACKAGES=(
    systemd systemd-sysv dbus udev
    linux-image-amd64 initramfs-tools kmod
    python3 nodejs curl jq procps iproute2 util-linux psmisc strace libcap2-bin make
)
# Kernel module trees the guest never needs (no network card, no GPU, no sound): dropping
# them roughly halves the image. The second line is what udev would otherwise load for
# q35's chipset (AHCI, SMBus, TCO watchdog) and -cpu max (kvm, cpufreq) while the test
# already runs, costing seconds under TCG. Paths are relative to /lib/modules/VERSION/kernel.
DROP_MODULES=(
    drivers/gpu drivers/media drivers/infiniband drivers/staging drivers/bluetooth
    drivers/net/wireless drivers/net/ethernet drivers/isdn drivers/iio drivers/hid
    drivers/usb drivers/input/touchscreen drivers/mmc drivers/thunderbolt
    sound net/wireless net/mac80211 net/bluetooth
    arch/x86/kvm drivers/ata drivers/watchdog drivers/i2c drivers/mfd drivers/cpufreq
    drivers/input/misc drivers/md
)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
script="$here/$(basename "${BASH_SOURCE[0]}")"
key=$(sha256sum "$script" | cut -c1-16)
image_dir="$CACHE/image-$key"

t_start=$(date +%s.%N)
log() { printf 'build-rootfs: %s\n' "$*" >&2; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
die() { log "error: $*"; exit 1; }

if [[ -f "$image_dir/ready" ]]; then
    log "reusing $image_dir ($(since "$t_start")s)"
    echo "$image_dir"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap and chroot); run it with sudo"
[[ $CACHE == /* ]] || die "FAAS_VM_CACHE must be an absolute path, not '$CACHE'"

missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

mkdir -p "$CACHE/debs"
# One build at a time per cache; a second caller waits, then finds the image ready.
exec 9>"$CACHE/lock"
if ! flock -n 9; then
    log "another build holds $CACHE/lock; waiting"
    flock 9
fi
if [[ -f "$image_dir/ready" ]]; then
    log "reusing $image_dir, built meanwhile ($(since "$t_start")s)"
    echo "$image_dir"
    exit 0
fi

work="$CACHE/build-$key"
root="$work/root"

# Unmounts everything under a build directory; rm only ever runs after this, and with
# --one-file-system, so a leftover bind of /dev or /proc is never descended into.
unmount_under() {
    local m
    while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done < <(awk -v r="$1" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/self/mounts | sort -r)
}
unmount_root() { unmount_under "$root"; }
cleanup() {
    local rc=$?
    unmount_root
    if ((rc != 0)); then
        log "failed (exit $rc) after $(since "$t_start")s; removing $work"
        rm -rf --one-file-system "$work"
    fi
}
trap cleanup EXIT

# Leftovers of builds that were killed (this one's, or an older script's): the lock says
# none of them is running.
for stale in "$CACHE"/build-*; do
    [[ -d $stale ]] || continue
    log "removing leftover $stale"
    unmount_under "$stale"
    rm -rf --one-file-system "$stale"
done
mkdir -p "$work"

# --- 1. debootstrap, first stage: download (into the shared cache) and unpack the base ---
t=$(date +%s.%N)
log "debootstrap $SUITE from $MIRROR (debs cached in $CACHE/debs)"
include=$(IFS=,; echo "${PACKAGES[*]}")
debootstrap --foreign --variant=minbase --merged-usr --include="$include" \
    --cache-dir="$CACHE/debs" "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap (first stage) failed; full log above"; }

# Set before the second stage configures the kernel, so its initramfs is small from the
# start. conf.d is not a conffile, so dpkg leaves it alone. The guest's root is virtio-blk
# ext4; 9p is mounted after boot but listed too, so it never depends on autoloading.
mkdir -p "$root/etc/initramfs-tools/conf.d"
cat >"$root/etc/initramfs-tools/conf.d/faas-vm.conf" <<'EOF'
MODULES=list
COMPRESS=gzip
EOF

# --- 2. debootstrap, second stage: install and configure every package ---
log "debootstrap second stage"
chroot "$root" /debootstrap/debootstrap --second-stage >>"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap (second stage) failed; full log above"; }
unmount_root
t_debootstrap=$(since "$t")
log "debootstrap done in ${t_debootstrap}s"

# --- 3. configure the guest ---
t=$(date +%s.%N)
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin LANG=C.UTF-8 "$@"; }

echo faas-vm >"$root/etc/hostname"
cat >"$root/etc/hosts" <<'EOF'
127.0.0.1	localhost
127.0.1.1	faas-vm
::1		localhost ip6-localhost ip6-loopback
EOF
# Pass 0: no fsck; the image is booted with snapshot=on and never written back.
cat >"$root/etc/fstab" <<'EOF'
/dev/vda	/	ext4	rw,errors=remount-ro	0	0
EOF
cat >"$root/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
EOF
rm -f "$root/etc/resolv.conf"
in_root passwd -d root >/dev/null
# A fixed machine id: without one every boot is a "first boot" (presets, slower, noisier).
in_root systemd-machine-id-setup >/dev/null 2>&1 || head -c16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$root/etc/machine-id"
mkdir -p "$root/var/log/journal"

cat >"$root/etc/initramfs-tools/modules" <<'EOF'
virtio_pci
virtio_blk
virtio_console
ext4
9p
9pnet_virtio
EOF

# No logins on any console and no login manager; timers and jobs that only cost boot time
# under TCG.
for unit in serial-getty@.service getty@.service getty-static.service console-getty.service \
    systemd-logind.service systemd-update-utmp.service systemd-update-utmp-runlevel.service \
    apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
    fstrim.timer dpkg-db-backup.timer systemd-timesyncd.service; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
done

install -D -m 0755 /dev/stdin "$root/usr/local/libexec/faas-vm-test" <<'EOF'
#!/bin/bash
# Runs /mnt/faas/guest-test.sh once boot has settled, reports its output and exit code
# through the 9p share (out/log, out/rc) and ttyS1, then powers off (SuccessAction= and
# FailureAction= of faas-vm-test.service). Installed by tests/vm/build-rootfs.sh.
set -u
say() { echo "faas-vm-test: $*"; }
report_rc() {
    echo "$1" >/mnt/faas/out/rc 2>/dev/null
    sync
    echo "FAAS_VM_RC=$1" >/dev/ttyS1 2>/dev/null
}

# is-system-running --wait returns once the boot job queue is empty: "running" or
# "degraded" (a failed unit, listed below so the log shows which). This unit is
# Type=simple, so it is not itself in the queue it waits for.
state=$(timeout 300 systemctl is-system-running --wait 2>&1)
say "system state: $state after $(cut -d' ' -f1 /proc/uptime)s"
if [[ $state != running ]]; then
    systemctl --no-legend --plain list-units --state=failed | sed 's/^/faas-vm-test: failed unit: /'
fi

mkdir -p /mnt/faas
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 faas /mnt/faas; then
    say "cannot mount the 9p share 'faas' at /mnt/faas"
    echo "FAAS_VM_RC=125" >/dev/ttyS1
    exit 1
fi
mkdir -p /mnt/faas/out
echo "$state" >/mnt/faas/out/system-state
cut -d' ' -f1 /proc/uptime >/mnt/faas/out/boot-seconds

if [[ ! -f /mnt/faas/guest-test.sh ]]; then
    say "no guest-test.sh in the share"
    report_rc 125
    exit 0
fi
say "running guest-test.sh"
start=$(cut -d' ' -f1 /proc/uptime)
# Output goes to the share (the host prints it) and to ttyS0, so a hang shows where it
# stopped in the console log even when the host has to kill the VM.
(cd /mnt/faas && FAAS_VM=1 bash ./guest-test.sh </dev/null) 2>&1 | tee /mnt/faas/out/log
rc=${PIPESTATUS[0]}
awk -v a="$start" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.1f\n", b - a }' \
    >/mnt/faas/out/test-seconds
# The whole boot's journal, for whoever reads a failure on the host.
timeout 60 journalctl -b --no-pager -o short-monotonic >/mnt/faas/out/journal.txt 2>&1
say "guest-test.sh exited $rc; powering off"
report_rc "$rc"
exit 0
EOF

cat >"$root/etc/systemd/system/faas-vm-test.service" <<'EOF'
[Unit]
Description=faas VM tier: run /mnt/faas/guest-test.sh and power off
# No After=multi-user.target: the runner waits for is-system-running itself.
After=basic.target
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
# Not oneshot: a oneshot's start job would sit in the queue that is-system-running --wait
# waits to drain, and the two would wait for each other.
Type=simple
ExecStart=/usr/local/libexec/faas-vm-test
StandardOutput=tty
StandardError=inherit
TTYPath=/dev/ttyS0
TTYReset=no
TTYVHangup=no
TTYVTDisallocate=no

[Install]
WantedBy=multi-user.target
EOF
mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
ln -sf ../faas-vm-test.service "$root/etc/systemd/system/multi-user.target.wants/faas-vm-test.service"

# Slim the tree: docs, man pages, locales, apt lists, unneeded kernel modules.
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
[[ ! -d "$root/usr/share/locale" ]] || find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'C.*' ! -name locale.alias -exec rm -rf {} +
kdirs=("$root"/lib/modules/*)
((${#kdirs[@]} == 1)) || die "expected one kernel in $root/lib/modules, found: ${kdirs[*]##*/}"
kver=${kdirs[0]##*/}
[[ -f "$root/boot/vmlinuz-$kver" ]] || die "no /boot/vmlinuz-$kver in the rootfs"
for d in "${DROP_MODULES[@]}"; do
    rm -rf "$root/lib/modules/$kver/kernel/$d"
done
in_root depmod "$kver"
log "kernel $kver; building initramfs"
in_root update-initramfs -u -k "$kver" >"$work/initramfs.log" 2>&1 \
    || { tail -n 20 "$work/initramfs.log" >&2; die "update-initramfs failed"; }
in_root lsinitramfs "/boot/initrd.img-$kver" >"$work/initramfs.list"
for m in virtio_blk ext4 9pnet_virtio; do
    grep -q "/$m\.ko" "$work/initramfs.list" \
        || die "initramfs lacks $m.ko; see $root/etc/initramfs-tools/modules"
done
t_configure=$(since "$t")
log "configured in ${t_configure}s"

# --- 4. the image: ext4 populated straight from the directory (no loop mount) ---
t=$(date +%s.%N)
out="$work/image"
mkdir -p "$out"
install -m 0644 "$root/boot/vmlinuz-$kver" "$out/vmlinuz"
install -m 0644 "$root/boot/initrd.img-$kver" "$out/initrd.img"
rm -f "$root/boot/initrd.img-$kver"   # the guest boots the copy above
mkfs.ext4 -q -F -L faas-vm -E root_owner=0:0 -d "$root" "$out/rootfs.img" "$IMAGE_SIZE" >&2
t_image=$(since "$t")
log "image built in ${t_image}s"

cat >"$out/info" <<EOF
suite=$SUITE
kernel=$kver
key=$key
built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
debootstrap_seconds=$t_debootstrap
configure_seconds=$t_configure
image_seconds=$t_image
EOF
touch "$out/ready"
rm -rf "$image_dir"
mv "$out" "$image_dir"
rm -rf --one-file-system "$work"

# Images of older versions of this script are dead weight; the .deb cache stays.
for old in "$CACHE"/image-*; do
    [[ $old == "$image_dir" ]] || { log "removing stale $old"; rm -rf "$old"; }
done

log "done in $(since "$t_start")s: debootstrap ${t_debootstrap}s, configure ${t_configure}s, image ${t_image}s"
log "cache $CACHE: $(du -sh --apparent-size "$CACHE" | cut -f1) apparent, $(du -sh "$CACHE" | cut -f1) on disk"
echo "$image_dir"
