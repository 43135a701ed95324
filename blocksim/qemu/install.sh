#!/bin/sh
# Install the QEMU tools `blocksim qemu-check` needs: qemu-img and qemu-io
# (package qemu-utils) and qemu-storage-daemon (package qemu-system-common).
# Debian/Ubuntu; run as root or with sudo available.  Idempotent.
set -eu

if command -v qemu-storage-daemon >/dev/null 2>&1 &&
   command -v qemu-img >/dev/null 2>&1 &&
   command -v qemu-io >/dev/null 2>&1; then
    qemu-storage-daemon --version | head -n 1
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends \
    qemu-utils qemu-system-common
qemu-storage-daemon --version | head -n 1
