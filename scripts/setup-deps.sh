#!/bin/sh
# Installs the Debian packages Loom needs to build and test, when any is missing.
# Idempotent: does nothing (and needs no root) when everything is already there.
set -e
PKGS="build-essential meson ninja-build pkg-config libopenblas-dev libhwloc-dev hwloc libnuma-dev
libcunit1-dev libjansson-dev ocl-icd-opencl-dev opencl-headers pocl-opencl-icd clinfo
libclblast-dev libssl-dev protobuf-c-compiler libprotobuf-c-dev libonnx-dev libonnx-testdata
python3 python3-onnx python3-numpy clang libclang-rt-14-dev graphviz chromium
libmicrohttpd-dev libxxhash-dev curl libsqlite3-dev libdnnl-dev libdouble-conversion-dev"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "loom: installing Debian packages:$missing" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $missing
