#!/bin/bash
# Installs Loom into a temporary prefix and builds the examples against the installed copy with
# examples/Makefile and pkg-config, exactly as a user would, then runs them: this is what proves
# that the installed headers, library and loom.pc are complete.
# Usage: install_test.sh SOURCE_ROOT SCRATCH_DIR
# SCRATCH_DIR is created if needed; this script only writes below SCRATCH_DIR/install-test.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 SOURCE_ROOT SCRATCH_DIR" >&2
    exit 2
fi
src="$(cd "$1" && pwd)"
mkdir -p "$2"
work="$(cd "$2" && pwd)/install-test"
rm -rf "$work"
mkdir -p "$work"

build="$work/build"
prefix="$work/prefix"
log="$work/build.log"

# A build of its own, so that the prefix baked into loom.pc is the temporary one. libdir is set
# explicitly: Debian's meson would otherwise pick lib/<multiarch triplet>.
step() {
    echo "install_test: $1"
    shift
    if ! "$@" >>"$log" 2>&1; then
        echo "install_test: FAILED: $*" >&2
        tail -n 60 "$log" >&2
        exit 1
    fi
}
step "configuring $build (prefix $prefix)" \
    meson setup "$build" "$src" --prefix="$prefix" --libdir=lib --buildtype=debugoptimized
step "building" meson compile -C "$build"
step "installing" meson install -C "$build" --no-rebuild

for f in include/loom/loom.h include/loom/graph.h include/loom/runtime.h include/loom/backend.h \
         lib/pkgconfig/loom.pc lib/pkgconfig/loom-backend.pc; do
    if [ ! -f "$prefix/$f" ]; then
        echo "install_test: FAILED: $prefix/$f was not installed" >&2
        exit 1
    fi
done

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export LD_LIBRARY_PATH="$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "install_test: pkg-config --cflags --libs loom: $(pkg-config --cflags --libs loom)"

# Out of tree: the objects and programs land in $work/examples, the sources stay untouched. The
# library is linked only as a user would get it: no -I or -L into the source or build tree.
exdir="$work/examples"
mkdir -p "$exdir"
step "building the examples with examples/Makefile" \
    make -C "$exdir" -f "$src/examples/Makefile" CFLAGS="-O2 -Wall -Wextra -Werror"

for ex in mlp attention; do
    # The programs must resolve libloom from the prefix, not from the build tree.
    # (captured first: with pipefail, grep -q closing the pipe early would fail ldd with SIGPIPE)
    deps="$(ldd "$exdir/$ex")"
    if ! grep -q "$prefix/lib/libloom" <<<"$deps"; then
        echo "install_test: FAILED: $ex does not load libloom from $prefix/lib:" >&2
        ldd "$exdir/$ex" >&2
        exit 1
    fi
    echo "install_test: running $ex"
    rc=0
    "$exdir/$ex" || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "install_test: FAILED: $ex exited with status $rc" >&2
        exit 1
    fi
done
# The backend skeleton, built out of tree against the installed headers, is found through
# LOOM_BACKEND_PATH by the installed `loom`, passes backend-test, and gets the nodes it supports.
# It is built through the headers-only loom-backend module with nothing but the prefix's .pc
# files visible (PKG_CONFIG_LIBDIR): a plugin needs none of libloom's private dependencies.
pc_only="$prefix/lib/pkgconfig"
if ! bcflags="$(PKG_CONFIG_PATH= PKG_CONFIG_LIBDIR="$pc_only" pkg-config --cflags loom-backend)"; then
    echo "install_test: FAILED: pkg-config --cflags loom-backend needs more than $pc_only" >&2
    exit 1
fi
echo "install_test: pkg-config --cflags loom-backend: $bcflags"
if [ "$(pkg-config --variable=plugindir loom-backend)" != "$(pkg-config --variable=plugindir loom)" ]; then
    echo "install_test: FAILED: loom-backend.pc and loom.pc disagree on plugindir" >&2
    exit 1
fi
skdir="$work/skeleton"
mkdir -p "$skdir"
step "building the backend skeleton with examples/backend-skeleton/Makefile (loom-backend.pc only)" \
    env PKG_CONFIG_PATH= PKG_CONFIG_LIBDIR="$pc_only" \
    make -C "$skdir" -f "$src/examples/backend-skeleton/Makefile" CFLAGS="-O2 -Wall -Wextra -Werror"
loom="$prefix/bin/loom"
devs="$(LOOM_BACKEND_PATH="$skdir" "$loom" devices)"
if ! grep -q "^skeleton:0 " <<<"$devs"; then
    echo "install_test: FAILED: loom devices does not list skeleton:0:" >&2
    echo "$devs" >&2
    exit 1
fi
# By path, from its folder, with the OpenCL backend on (PoCL, where installed): the skeleton's
# own device is the one tested.
echo "install_test: loom backend-test ./libloom-skeleton.so"
if ! (cd "$skdir" && LOOM_OPENCL=1 "$loom" backend-test ./libloom-skeleton.so) \
        >"$work/skeleton-test.log" 2>&1; then
    echo "install_test: FAILED: backend-test of the skeleton:" >&2
    cat "$work/skeleton-test.log" >&2
    exit 1
fi
if ! grep -q "^backend-test of skeleton:0 against cpu:0" "$work/skeleton-test.log"; then
    echo "install_test: FAILED: backend-test did not test skeleton:0:" >&2
    cat "$work/skeleton-test.log" >&2
    exit 1
fi
# Its device memory (option device_memory=1: alloc, upload, download, copies in the plan), its
# Add -> Relu claim kept as one kernel with right numbers, and its queue's chains.
echo "install_test: loom backend-test --backend-option skeleton:device_memory=1 ./libloom-skeleton.so"
if ! (cd "$skdir" && LOOM_OPENCL=1 "$loom" backend-test --backend-option skeleton:device_memory=1 \
        ./libloom-skeleton.so) >"$work/skeleton-devmem.log" 2>&1; then
    echo "install_test: FAILED: backend-test of the skeleton with device_memory=1:" >&2
    cat "$work/skeleton-devmem.log" >&2
    exit 1
fi
for want in 'kept: "Add+Relu" as one kernel (2 of 2 nodes): pass' 'memory device-only' \
            'claims: 1 kept, 10 not claimed, 0 failed' 'pipeline: 2 passed, 0 failed'; do
    if ! grep -qF -- "$want" "$work/skeleton-devmem.log"; then
        echo "install_test: FAILED: backend-test of the skeleton with device_memory=1 does not say '$want':" >&2
        cat "$work/skeleton-devmem.log" >&2
        exit 1
    fi
done
prof="$(LOOM_BACKEND_PATH="$skdir" "$loom" profile --model mlp --device skeleton --repeat 1 \
        --warmup 0 --no-calibrate --json)"
relu_devices="$(python3 -c '
import json, sys
p = json.load(sys.stdin)
print(" ".join(sorted({n["device"] for n in p["nodes"] if n["op"] == "Relu"})))' <<<"$prof")"
if [ "$relu_devices" != "skeleton:0" ]; then
    echo "install_test: FAILED: the skeleton did not receive the Relu nodes (got: $relu_devices)" >&2
    exit 1
fi
echo "install_test: OK"
