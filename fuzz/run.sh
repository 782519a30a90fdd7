#!/bin/sh
# Fuzz Loom's parsers of untrusted input: build libloom with clang (ASan + UBSan, coverage for
# libFuzzer) in its own build directory, link each target against it, replay the inputs that once
# failed (fuzz/regressions/), then fuzz each target for SECONDS with its seeds. Exits non-zero when
# a fuzzer finds a crash, a leak, undefined behaviour or a timeout; the input that caused it is
# left in BUILD/fuzz-artifacts/TARGET/, the fuzzer's log in BUILD/fuzz-TARGET.log.
#
#   fuzz/run.sh [SECONDS] [TARGET...]   SECONDS per target (default 60); TARGETs (default all):
#                                       onnx  the ONNX importer (loom_onnx_load_memory), and
#                                             for models with dynamic dims the model API's
#                                             shape specialisation (loom_model_run at two
#                                             shapes from the bytes, dims 1-4, 1 MiB memory
#                                             cap; LOOM_FUZZ_TRACE=1 prints each run's verdict)
#                                       npy   the .npy reader (loom_tensor_load_npy)
#                                       sim   `loom sim` instances (tools/cmd_sim.c)
#                                       serve KServe v2 requests of `loom serve` (serve/kserve.c)
#   environment: LOOM_FUZZ_BUILD (default build-fuzz), LOOM_FUZZ_JOBS (parallel fuzzing
#   processes per target, default 1), LOOM_FUZZ_FLAGS (more compiler flags, for a fresh build dir)
# CI runs every target for a short time (.ci/run: 30 s each, serve 60 s); run it long by hand.
# Needs clang and libFuzzer's runtime (Debian: clang, libclang-rt-14-dev).
set -eu
seconds=${1:-60}
[ $# -gt 0 ] && shift
selected="$*"
root=$(cd "$(dirname "$0")/.." && pwd)
build=${LOOM_FUZZ_BUILD:-$root/build-fuzz}
jobs=${LOOM_FUZZ_JOBS:-1}
cc=${CC:-clang}
flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g"
flags="$flags ${LOOM_FUZZ_FLAGS:-}"
libs="$(pkg-config --libs openblas hwloc numa jansson libprotobuf-c libmicrohttpd libxxhash OpenCL \
    clblast libcrypto sqlite3 double-conversion) -ldnnl -lgomp" # oneDNN has no pkg-config file (meson.build)

if [ ! -f "$build/build.ninja" ]; then
    CC="$cc" meson setup "$build" "$root" --buildtype=debugoptimized \
        -Db_lundef=false -Dc_args="$flags -fsanitize=fuzzer-no-link" \
        -Dc_link_args="$flags" >/dev/null
fi
meson compile -C "$build" loom:static_library >/dev/null

failed=""
ran=""
# fuzz NAME MAX_LEN "SOURCES" "SEED DIRS" "REGRESSION GLOB" [EXTRA LIBFUZZER FLAGS]
# SOURCES, SEED DIRS and the glob are relative to the source root.
fuzz() {
    name=$1 max_len=$2 sources=$3 seeds=$4 regressions=$5
    extra=${6:-}
    if [ -n "$selected" ] && ! echo " $selected " | grep -q " $name "; then
        return 0
    fi
    ran="$ran $name"
    exe="$build/fuzz_$name"
    src=""
    for s in $sources; do src="$src $root/$s"; done
    # shellcheck disable=SC2086
    "$cc" $flags -fsanitize=fuzzer -D_GNU_SOURCE -I"$root/include" -I"$root" -I"$build" $src "$build/libloom.a" $libs \
        -lm -ldl -lpthread -o "$exe"
    log="$build/fuzz-$name.log"
    artifacts="$build/fuzz-artifacts/$name"
    corpus="$build/fuzz-corpus/$name"
    mkdir -p "$corpus" "$artifacts"
    # Inputs that once failed must keep passing: each is run once before fuzzing.
    # shellcheck disable=SC2086
    reg=$(cd "$root" && ls $regressions 2>/dev/null || true)
    if [ -n "$reg" ]; then
        # shellcheck disable=SC2086
        if ! (cd "$root" && "$exe" -close_fd_mask=1 $reg) >"$build/fuzz-$name-regressions.log" 2>&1
        then
            echo "fuzz/run.sh: $name: a regression input fails again" \
                "(see $build/fuzz-$name-regressions.log)" >&2
            failed="$failed $name"
            return 0
        fi
    fi
    seed_dirs=""
    for s in $seeds; do [ -d "$root/$s" ] && seed_dirs="$seed_dirs $root/$s"; done
    parallel=""
    [ "$jobs" -gt 1 ] && parallel="-jobs=$jobs -workers=$jobs"
    # The working corpus grows in the build directory; the committed files are only the seeds.
    status=0
    # shellcheck disable=SC2086
    ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$exe" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -malloc_limit_mb=1024 -max_len="$max_len" -close_fd_mask=1 $parallel $extra \
        -artifact_prefix="$artifacts/" -print_final_stats=1 \
        "$corpus" $seed_dirs >"$log" 2>&1 || status=$?
    if [ "$status" -ne 0 ]; then
        tail -40 "$log" >&2
        echo "fuzz/run.sh: $name: the fuzzer failed (status $status); reproducers in" \
            "$artifacts, log in $log" >&2
        failed="$failed $name"
    else
        echo "fuzz/run.sh: $name: $(ls "$corpus" | wc -l) corpus inputs," \
            "$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')" \
            "runs, no failure"
    fi
}

# External data files of the test models are looked up here (external.bin).
export LOOM_FUZZ_BASE_DIR="$root/tests/data/onnx"
# The ONNX importer: inputs up to 256 KiB, so that nesting thousands deep (If in If, sequence of
# sequence) is reachable; the seeds include nested models and models with dynamic dims
# (fuzz/seeds/onnx/dyn_*.onnx: shape arithmetic, shapes and counts fed as inputs, shared symbols).
fuzz onnx 262144 "fuzz/fuzz_onnx.c" "tests/data/onnx fuzz/seeds/onnx" "fuzz/regressions/*.onnx"
fuzz npy 8192 "fuzz/fuzz_npy.c" "fuzz/seeds/npy" "fuzz/regressions/*.npy"
fuzz sim 16384 "fuzz/fuzz_sim.c tools/cmd_sim.c tools/tool_util.c" "tests/data/sim" \
    "fuzz/regressions/sim_*.json"
# The KServe v2 request parser and response writer of `loom serve`.
fuzz serve 65536 "fuzz/fuzz_serve_request.c" "fuzz/seeds/serve" "fuzz/regressions/serve_*"

if [ -z "$ran" ]; then
    echo "fuzz/run.sh: no target named '$selected' (onnx, npy, sim, serve)" >&2
    exit 2
fi
if [ -n "$failed" ]; then
    echo "fuzz/run.sh: failed:$failed" >&2
    exit 1
fi
echo "fuzz/run.sh: no failure in ${seconds}s each:$ran"
