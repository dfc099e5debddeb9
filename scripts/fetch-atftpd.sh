#!/usr/bin/env bash
# Fetches atftpd (the atftp server, the packaged TFTP server that answers RFC 7440 windowsize)
# into .cache/atftpd/ for bench/tftp: as a package it conflicts with tftpd-hpa, so it is
# unpacked, not installed. Nothing is started here.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.cache/atftpd
[ -x "$dest/usr/sbin/atftpd" ] && exit 0

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -qq atftpd)
mkdir -p "$dest"
dpkg-deb -x "$work"/atftpd_*.deb "$dest"
echo "fetch-atftpd: atftpd unpacked in $dest"
