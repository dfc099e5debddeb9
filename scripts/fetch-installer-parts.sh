#!/usr/bin/env bash
# Fetches the debian-installer's own partman-auto udeb (component main/debian-installer,
# which apt on an installed system does not list) into .cache/, so the tests can run the
# installer's real recipe parser (decode_recipe in lib/partman/lib/recipes.sh) offline.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.cache/partman-auto
[ -f "$dest/lib/partman/lib/recipes.sh" ] && exit 0

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
cat >"$work/di.sources" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main/debian-installer
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
apt_opts=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::Etc::sourcelist=$work/di.sources" -o "Dir::State::Lists=$work/lists"
          -o "Dir::Cache=$work/cache" -o APT::Sandbox::User=root)
apt-get "${apt_opts[@]}" update -qq
(cd "$work" && apt-get "${apt_opts[@]}" download -qq partman-auto)
mkdir -p "$dest"
dpkg-deb -x "$work"/partman-auto_*.udeb "$dest"
echo "fetch-installer-parts: partman-auto unpacked in $dest"
