#!/bin/sh
# Runs the debian-installer's own recipe parser (decode_recipe from partman-auto's
# lib/partman/lib/recipes.sh) on a recipe file and prints the scheme it decoded, one item a line.
# usage: decode-recipe.sh RECIPES_SH RECIPE_FILE [DISK_LABEL]
# Only the installer's environment is provided here (debconf answers, the partman_server
# dialog that reports the disk label); the parsing is partman-auto's own code.
set -u
RECIPES=$1
RECIPE=$2
LABEL=${3:-msdos}
NL='
'
TAB='	'
restore_ifs() { IFS=" $TAB$NL"; }
db_get() { RET=''; }
db_metaget() { RET=''; }
logger() { :; }
convert_to_megabytes() { expr "$1" / 1000000; }
DIALOG=''
open_dialog() { DIALOG=$1; }
close_dialog() { DIALOG=''; }
read_line() {
	for var in "$@"; do eval "$var=''"; done
	if [ "$DIALOG" = GET_LABEL_TYPE ]; then eval "$1=\$LABEL"; DIALOG=''; fi
}
DEVICES=$(mktemp -d)
trap 'rm -rf "$DEVICES"' EXIT
mkdir "$DEVICES/=dev=sda"
cd "$DEVICES/=dev=sda" || exit 1
. "$RECIPES"
decode_recipe "$RECIPE" lvm
printf 'NAME %s\n' "$name"
printf '%s\n' "$scheme"
