#!/bin/sh
# Install the default set of Debian-packaged Rust crates (pipelines/debian_crates.txt: one
# librust-*-dev package per line, each a crate whose own tests pass offline here) into
# /usr/share/cargo/registry, for `meap-data rust crates`. apt pulls their dependencies
# (other librust-*-dev packages, nothing else). Needs root (or sudo) and Debian's package
# registry; about 1 minute and 140 MB on a fresh Debian 12 machine.
#
#   sh pipelines/install_debian_crates.sh                 # the default set
#   sh pipelines/install_debian_crates.sh my-list.txt     # any list of packages
set -eu
list="${1:-$(dirname "$0")/debian_crates.txt}"
if [ ! -r "$list" ]; then
    echo "error: $list: no such package list (one librust-NAME-dev per line)" >&2
    exit 2
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: apt-get not found: Debian's crates install on Debian or Ubuntu only; on other systems vendor crates with 'cargo vendor' and pass --dir to 'meap-data rust crates'" >&2
    exit 2
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
    sudo="sudo"
fi
packages=$(grep -v '^#' "$list" | grep -v '^[[:space:]]*$' | tr '\n' ' ')
start=$(date +%s)
$sudo apt-get update -q
# shellcheck disable=SC2086
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $packages
count=$(ls /usr/share/cargo/registry | wc -l)
echo "installed $(echo $packages | wc -w) packages from $list: $count crates in /usr/share/cargo/registry, $(( $(date +%s) - start )) s"
