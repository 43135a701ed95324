#!/bin/sh
# Install the QEMU tools `blocksim qemu-check` needs: qemu-img and qemu-io
# (package qemu-utils) and qemu-storage-daemon (package qemu-system-common);
# and for `qemu-check --vm` (a real VM with a tiny guest): qemu-system-x86_64
# (qemu-system-x86), a kernel with its modules (linux-image-cloud-amd64) and
# a static busybox (busybox-static), from which the guest's initramfs is
# built at run time.  Debian/Ubuntu; run as root or with sudo available.
# Idempotent: installs only what is missing.  If the VM's packages cannot be
# installed, says so and exits 0 (the --vm tests are then skipped with that
# reason); the storage daemon's tools are required.
set -eu

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
UPDATED=""
apt_install() {
    if [ -z "$UPDATED" ]; then
        $SUDO apt-get update
        UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "$@"
}

if ! command -v qemu-storage-daemon >/dev/null 2>&1 ||
   ! command -v qemu-img >/dev/null 2>&1 ||
   ! command -v qemu-io >/dev/null 2>&1; then
    apt_install qemu-utils qemu-system-common
fi
qemu-storage-daemon --version | head -n 1

# the VM: a kernel whose modules are there, a static busybox, qemu-system-x86_64
have_kernel() {
    for k in /boot/vmlinuz-*; do
        [ -r "$k" ] && [ -f "/lib/modules/${k#/boot/vmlinuz-}/modules.dep" ] && return 0
    done
    return 1
}
VM=""
command -v qemu-system-x86_64 >/dev/null 2>&1 || VM="$VM qemu-system-x86"
have_kernel || VM="$VM linux-image-cloud-amd64"
# (the busybox package's binary is dynamic: the guest needs busybox-static)
dpkg -s busybox-static >/dev/null 2>&1 || VM="$VM busybox-static"
if [ -n "$VM" ]; then
    # shellcheck disable=SC2086
    if ! apt_install $VM; then
        echo "warning: could not install$VM; qemu-check --vm tests will be skipped" >&2
        exit 0
    fi
fi
qemu-system-x86_64 --version | head -n 1
