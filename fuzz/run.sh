#!/bin/sh
# Fuzz the ONNX importer: build libloom with clang (ASan + UBSan, coverage for libFuzzer) in its
# own build directory, link fuzz/fuzz_onnx.c against it, and run it for SECONDS (default 60)
# with the test models as seed corpus. Exits non-zero when the fuzzer finds a crash, a leak or
# undefined behaviour; the input that caused it is left in BUILD/fuzz-artifacts/.
#
#   fuzz/run.sh [SECONDS]          environment: LOOM_FUZZ_BUILD (default build-fuzz),
#                                  LOOM_FUZZ_JOBS (parallel fuzzing processes, default 1),
#                                  LOOM_FUZZ_FLAGS (more compiler flags, for a fresh build dir)
# Needs clang and libFuzzer's runtime (Debian: clang, libclang-rt-14-dev).
set -eu
seconds=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
build=${LOOM_FUZZ_BUILD:-$root/build-fuzz}
jobs=${LOOM_FUZZ_JOBS:-1}
cc=${CC:-clang}
flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g"
flags="$flags ${LOOM_FUZZ_FLAGS:-}"

if [ ! -f "$build/build.ninja" ]; then
    CC="$cc" meson setup "$build" "$root" --buildtype=debugoptimized \
        -Db_lundef=false -Dc_args="$flags -fsanitize=fuzzer-no-link" \
        -Dc_link_args="$flags" >/dev/null
fi
meson compile -C "$build" loom:static_library >/dev/null

# shellcheck disable=SC2086,SC2046
"$cc" $flags -fsanitize=fuzzer -I"$root/include" "$root/fuzz/fuzz_onnx.c" \
    "$build/libloom.a" $(pkg-config --libs openblas hwloc numa jansson libprotobuf-c) \
    -lm -ldl -lpthread -o "$build/fuzz_onnx"

# Inputs that once failed must keep passing: each is run once before fuzzing.
if ls "$root"/fuzz/regressions/* >/dev/null 2>&1; then
    if ! LOOM_FUZZ_BASE_DIR="$root/tests/data/onnx" "$build/fuzz_onnx" \
            "$root"/fuzz/regressions/* >"$build/fuzz-regressions.log" 2>&1; then
        echo "fuzz/run.sh: a regression input fails again (see $build/fuzz-regressions.log)" >&2
        exit 1
    fi
fi

parallel=""
[ "$jobs" -gt 1 ] && parallel="-jobs=$jobs -workers=$jobs"
corpus="$build/fuzz-corpus"
artifacts="$build/fuzz-artifacts"
mkdir -p "$corpus" "$artifacts"
export LOOM_FUZZ_BASE_DIR="$root/tests/data/onnx"
# The working corpus grows in the build directory; the committed models are only the seeds.
set +e
# shellcheck disable=SC2086
ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$build/fuzz_onnx" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -malloc_limit_mb=1024 -max_len=16384 $parallel \
    -artifact_prefix="$artifacts/" -print_final_stats=1 \
    "$corpus" "$root/tests/data/onnx"
status=$?
set -e
if [ "$status" -ne 0 ]; then
    echo "fuzz/run.sh: the fuzzer failed (status $status); reproducers in $artifacts" >&2
    exit 1
fi
echo "fuzz/run.sh: no failure in ${seconds}s"
