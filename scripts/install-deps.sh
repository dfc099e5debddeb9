#!/usr/bin/env bash
# Installs the Debian packages listed in deps/apt/*.txt (one name per line, '#' comments)
# that are not installed yet, and fetches the debian-installer pieces the tests use.
# Services that packages would start (dnsmasq, tftpd-hpa, kea, nginx...) are kept stopped:
# tests start their own copies, bound to namespaces or loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

mapfile -t wanted < <(sed -e 's/#.*//' deps/apt/*.txt | tr -s ' \t' '\n' | sed '/^$/d' | sort -u)
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${#missing[@]} Debian package(s): ${missing[*]}"
  policy=/usr/sbin/policy-rc.d
  created_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    created_policy=1
  fi
  trap '[ -n "$created_policy" ] && $SUDO rm -f "$policy"' EXIT
  $SUDO apt-get -o DPkg::Lock::Timeout=900 update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "install-deps: all ${#wanted[@]} Debian packages present"
fi

scripts/fetch-installer-parts.sh
# bench/tftp only: atftpd, the windowsize peer (it conflicts with tftpd-hpa as a package)
scripts/fetch-atftpd.sh || echo "install-deps: atftpd not fetched; only bench/tftp needs it"
