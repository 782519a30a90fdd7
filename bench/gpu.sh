#!/usr/bin/env bash
# The measurements of issue 18 on the GPU machine (one NVIDIA H200, 16 cores), in one run.
#
#   bench/gpu.sh prepare   HERE: release build in build-gpu/; the programs the run needs copied
#                          to .gpu/build-gpu/ (the whole build is too big to carry), the Debian
#                          libraries they need packed into .gpu/lib by ../shared/gpu/pack.sh
#                          (OpenBLAS gzipped), the ONNX test cases the CPU passes packed into
#                          .gpu/onnx-testdata.tar.gz (the GPU machine has no libonnx-testdata);
#                          prints the size to carry (.gpu/ alone, under 64 MiB) and the exact
#                          device call to make.
#   bench/gpu.sh run       THERE (source .gpu/env.sh first), or here on PoCL as a rehearsal:
#                          every step with its own timeout, each step's log in $OUT/STEP.log
#                          (OUT defaults to /tmp/gpu-out), continuing past a failed step, and a
#                          summary table in $OUT/summary.txt (also printed at the end).
#
# Steps of `run`, in order of importance (the whole run is cut at GPU_SH_BUDGET seconds, 540 by
# default, so it fits the machine's 15 minutes with its start; a step that would pass the budget
# gets what is left, a step with under 5 s left is skipped):
#   sysinfo, devices        the machine, `loom devices --json`
#   backend_test            `loom backend-test opencl`: every operator case against the CPU
#   gemm                    bench_opencl 1024 4096 8192: GEMM through the backend vs CLBlast
#                           direct, bandwidth of elementwise/reduction/softmax/layernorm, and a
#                           tiny kernel's dispatch (synchronous, submit + callback)
#   calibrate               `loom calibrate --force`: every device's profile for the cost model
#   bert_opencl, bert_cpu, bert_placed
#                           `loom profile --model bert` (BERT-base built in C, batch 1, seq 128,
#                           f32) on the GPU, on the CPU, and placed across both
#   cuda_build              the CUDA plugin (backends/cuda) built here by backends/cuda/build.sh
#                           with the machine's nvcc (sources travel as tracked files; nothing
#                           of it is carried in .gpu/)
#   cuda_backend_test       `loom backend-test` of that plugin: every case against the CPU
#   cuda_calibrate, bert_cuda, bert_placed_cuda
#                           calibrate cuda:0 alone; BERT on the CUDA device; BERT placed across
#                           CPU + OpenCL + CUDA. These load the plugin (LOOM_BACKEND_PATH) and
#                           SKIP, saying why, when it offers no device
#   towers_placed, towers_cpu, towers_opencl
#                           the three-tower model across CPU+GPU against each device alone
#   moe_placed, moe_cpu, moe_opencl
#                           the MoE layer (`--model moe`: top-2 of 8 experts, examples/models.c)
#                           placed across CPU+GPU (its experts split into placement units when
#                           the GPU can run them), against the CPU alone (the fused kernel) and
#                           the experts on the GPU (LOOM_MOE_SPLIT=1 --device opencl: OpenCL
#                           runs a MoE only as split experts; the router and the sum stay on
#                           the CPU)
#   costmodel_opencl        bench_costmodel --device opencl:0: prediction error after calibration
#   dispatch_opencl, dispatch_cpu
#                           bench_dispatch: per-node dispatch of 20,000 tiny nodes, chain and
#                           independent, on the GPU and on the CPU
#   fixtures_opencl         the ONNX Runtime fixtures (tests/test_fixtures.c) on opencl
#   conformance_opencl      the ONNX backend cases of tests/conformance/expected_pass.txt with
#                           --device opencl, in parallel shards
#
# Environment: OUT (logs, default /tmp/gpu-out); GPU_SH_BUILD (the programs, default
# .gpu/build-gpu); GPU_SH_BUDGET (seconds for the whole run); GPU_SH_QUICK=1 (small sizes for a rehearsal on
# PoCL: bert-tiny, GEMM 256/512, 2,000 dispatch nodes, 40 conformance cases, timeouts x4);
# GPU_SH_STEPS=a,b (only these steps); GPU_SH_SHARDS (conformance processes, default 12).
# Nothing here asserts on time: a step fails only when its program fails or times out.
set -uo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$src" || exit 2
build_dir=build-gpu       # where `prepare` builds
staged=.gpu/build-gpu     # what travels: the run's programs, in the build's layout
build="${GPU_SH_BUILD:-$staged}"
testdata_tar=.gpu/onnx-testdata.tar.gz
expect_file=tests/conformance/expected_pass.txt
carry_limit=$((64 * 1024 * 1024))

usage() {
    awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "${BASH_SOURCE[0]}"
    exit "${1:-2}"
}

# ---- prepare ----------------------------------------------------------------------------------

prepare() {
    local pack="$src/../shared/gpu/pack.sh"
    [ -x "$pack" ] || { echo "gpu.sh: no $pack (the shared GPU folder)" >&2; exit 1; }
    work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-sh.XXXXXX") || exit 1
    trap 'rm -rf "$work"' EXIT
    echo "== release build in $build_dir/"
    # No -Werror here: GCC 12 at -O3 warns where the debug builds of CI do not (a maybe-
    # uninitialized in core/tensor.c), and the figures should not wait on that.
    if [ -f "$build_dir/build.ninja" ]; then
        meson configure "$build_dir" --buildtype=release -Dwerror=false || exit 1
    else
        meson setup "$build_dir" --buildtype=release -Dwerror=false || exit 1
    fi
    # Only what the run needs: a test program half-edited elsewhere must not stop the figures.
    meson compile -C "$build_dir" tools/loom bench/bench_opencl bench/bench_costmodel \
        bench/bench_dispatch tests/test_fixtures_dev tests/onnx_conformance || exit 1

    # Only the programs the run needs travel (the whole build is 45 MB, most of it test programs
    # the run does not use), in the build's layout so that their rpath $ORIGIN/.. still finds
    # libloom.so. Packing this folder of ELF files also keeps pack.sh away from meson's
    # libloom.so.0.1.0.p/libloom.so.0.1.0.symbols, which matches its '*.so.*' but which ldd
    # refuses (pack.sh then stops, under pipefail, before it writes env.sh).
    echo "== the programs of the run -> $staged/"
    rm -rf .gpu/lib "$staged" "$testdata_tar"
    mkdir -p "$staged/tools" "$staged/bench" "$staged/tests"
    local p
    for p in tools/loom bench/bench_opencl bench/bench_costmodel bench/bench_dispatch \
             tests/test_fixtures_dev tests/onnx_conformance; do
        [ -x "$build_dir/$p" ] || { echo "gpu.sh: $build_dir/$p was not built" >&2; exit 1; }
        cp "$build_dir/$p" "$staged/$p"
    done
    find "$build_dir" -maxdepth 1 -name 'libloom.so*' ! -type d -exec cp -P {} "$staged/" \;

    echo "== libraries: $pack $staged"
    "$pack" "$staged" || exit 1
    echo "   (pack.sh names $staged apart; it lies inside .gpu, so carrying .gpu is enough)"
    # The largest library, gzip-compressed (36 -> 11 MB); `run` unpacks it into a folder of its
    # own, first on LD_LIBRARY_PATH.
    for p in .gpu/lib/libopenblas.so.*; do
        [ -f "$p" ] && gzip -9 "$p"
    done

    local data=/usr/share/libonnx-testdata/data
    if [ -d "$data" ]; then
        echo "== ONNX test cases of $expect_file from $data -> $testdata_tar"
        grep -v '^#' "$expect_file" | sed '/^[[:space:]]*$/d' >"$work/cases.txt"
        tar -C "$data" -czf "$testdata_tar" -T "$work/cases.txt" || exit 1
    else
        echo "== no $data here: the conformance step will be skipped there"
    fi

    local bytes
    bytes=$(du -sb .gpu | cut -f1)
    printf '== carried: .gpu/ %.1f MiB (limit 64 MiB): programs %s, libraries %s, ONNX cases %s\n' \
        "$(echo "$bytes / 1048576" | bc -l)" "$(du -sh "$staged" | cut -f1)" \
        "$(du -sh .gpu/lib | cut -f1)" "$(du -sh "$testdata_tar" 2>/dev/null | cut -f1)"
    if [ "$bytes" -gt "$carry_limit" ]; then
        echo "gpu.sh: over the 64 MiB carry limit" >&2
        exit 1
    fi
    cat <<EOF

== the device call (one run; give_back afterwards unless you rerun at once):
run(carry=[".gpu"],
    command="source .gpu/env.sh && bench/gpu.sh run",
    timeout_s=600)
Logs come back under \$OUT: summary.txt first, then STEP.log for each step.
EOF
}

# ---- run --------------------------------------------------------------------------------------

quick=${GPU_SH_QUICK:-0}
[ "$quick" = 1 ] && scale=4 || scale=1
budget=${GPU_SH_BUDGET:-$((540 * scale))}
only=",${GPU_SH_STEPS:-},"
rows=()

# STEP NAME TIMEOUT_S COMMAND...: run COMMAND with its output in $OUT/NAME.log, within TIMEOUT_S
# seconds (times the quick mode's scale) and what is left of the budget; record a summary row.
step() {
    local name="$1" limit=$(($2 * scale))
    shift 2
    if [ "$only" != ",," ] && [[ "$only" != *",$name,"* ]]; then
        return 0
    fi
    local log="$OUT/$name.log" left=$((budget - SECONDS))
    [ "$limit" -gt "$left" ] && limit=$left
    if [ "$limit" -lt 5 ]; then
        rows+=("$name|SKIP|0|no time left in the ${budget}s budget")
        echo "-- $name: skipped (budget spent)"
        return 0
    fi
    echo "-- $name (timeout ${limit}s): $*"
    printf '$ %s\n' "$*" >"$log"
    local t0=$SECONDS rc
    if [ "$(type -t "$1")" = function ]; then
        # A function of this script: in a bash of its own, which `timeout` can run and kill
        # (with the whole process group: the conformance shards too).
        timeout -k 10 "$limit" bash -c '"$@"' step "$@" >>"$log" 2>&1
    else
        timeout -k 10 "$limit" "$@" >>"$log" 2>&1
    fi
    rc=$?
    local took=$((SECONDS - t0)) status
    case $rc in
        0) status=ok ;;
        77) status=SKIP ;;
        124 | 137) status=TIMEOUT ;;
        *) status="FAIL($rc)" ;;
    esac
    local fig
    fig=$(figure "$name" "$log" 2>/dev/null | tr '\n' ' ' | sed 's/  */ /g; s/ $//')
    [ "$status" = SKIP ] && [ -z "$fig" ] && fig=$(grep -m1 -i 'skip' "$log" | cut -c1-100)
    rows+=("$name|$status|$took|$fig")
    echo "   $status in ${took}s${fig:+: $fig}"
}

# The figures worth a summary line, from a step's log.
figure() {
    local name="$1" log="$2"
    case $name in
        sysinfo)
            grep -m1 -E '^(NVIDIA H|GPU 0)' "$log"
            grep -m1 '^cores:' "$log" ;;
        devices)
            grep -o '"id": *"[^"]*"' "$log" | sed 's/"id": *//; s/"//g' | paste -sd, - ;;
        backend_test)
            tail -n 3 "$log" | grep -iE 'pass|fail|case' | tail -n 1 ;;
        cuda_backend_test)
            if grep -q 'offers no usable device' "$log"; then
                grep -m1 -o 'no CUDA device: [^;]*' "$log" || echo 'the plugin offers no device'
            else
                tail -n 3 "$log" | grep -iE 'pass|fail|case' | tail -n 1
            fi ;;
        cuda_build)
            grep -m1 '^build.sh: CUDA' "$log" | sed 's/^build.sh: //; s/ ->.*//' ;;
        cuda_calibrate)
            sed -n '/^{/,$p' "$log" | python3 -c '
import json, sys
for d in json.load(sys.stdin)["devices"]:
    print("%s %s: %.0f GFLOP/s, %.0f GB/s, launch %.1f us;" % (d["id"], d["status"],
        d["gflops_f32"] or 0, d["bandwidth_gbs"] or 0, d["launch_us"] or 0))' ;;
        gemm)
            grep -E '^gemm f32' "$log" | sed -E 's/  +/ /g; s/gemm f32 ([0-9]+): backend ([0-9.]+) GFLOP\/s CLBlast direct ([0-9.]+) GFLOP\/s ratio ([0-9.]+)/GEMM \1: \2 vs CLBlast \3 GFLOP\/s (x\4);/'
            grep -m1 'dispatch of' "$log" | sed 's/.*: execute/kernel dispatch: sync/; s/submit+callback/submit+callback/' ;;
        calibrate)
            sed 1d "$log" | python3 -c '
import json, sys
for d in json.load(sys.stdin)["devices"]:
    link = d.get("from_host")
    print("%s %s: %.0f GFLOP/s, %.0f GB/s, launch %.1f us%s;" % (
        d["id"], d["status"], d["gflops_f32"] or 0, d["bandwidth_gbs"] or 0, d["launch_us"] or 0,
        ", from host %.1f GB/s" % link["bandwidth_gbs"] if link else ""))' ;;
        bert_* | towers_* | moe_*)
            grep -m1 '^== ' "$log" | sed 's/^== //; s/ ==$//; s/ (policy [a-z]*)//; s/,* [0-9]* runs after.*//'
            grep -m1 'latency ms: median' "$log" |
                awk '{print "| median " $4 " ms, p95 " $6 ", min " $10}'
            grep -m1 'placed plan' "$log" | sed 's/; predicted.*//; s/^/| /' ;;
        costmodel_*)
            awk '/^all nodes/ {print "node error over " $3 " nodes: before history median " $4 " p90 " $5 ", after median " $6 " p90 " $7}' "$log"
            grep -q 'no calibrated profile' "$log" && echo "(NOT calibrated)" ;;
        dispatch_cpu)
            awk '$1 == "independent" || $1 == "chain" {printf "%s %s thr: %s us/node; ", $1, $4, $8}' "$log" ;;
        dispatch_*)
            awk '$1 == "independent" || $1 == "chain" {printf "%s: %s us/node (%s plan nodes); ", $1, $8, $3}' "$log" ;;
        fixtures_*)
            awk '$1 == "tests" {print "tests run " $3 ", passed " $4 ", failed " $5 ";"}' "$log"
            grep -o '\[[0-9]* of [0-9]* nodes on [a-z]*\]' "$log" | sort -u | paste -sd' ' - ;;
        conformance_*)
            if grep -q '^conformance:' "$log"; then
                grep '^conformance:' "$log" | sed 's/^conformance: //'
            else # cut short: what the shards' per-case lines say
                cat "$OUT"/conformance_shards/*.log 2>/dev/null | awk '
                    $1 == "pass" {p++} $1 == "FAIL" {f++} $1 == "unsupported" {u++}
                    END {printf "cut short: %d passed, %d failed, %d unsupported so far\n", p, f, u}'
            fi ;;
    esac
}

# The conformance cases in GPU_SH_SHARDS processes at once (each case starts its own process
# and OpenCL context, so one runner would take minutes), each on a folder of links to its
# share of the cases and with its share of the expected list.
conformance_sharded() {
    local data="$1" shards="$2" runner="$build/tests/onnx_conformance" i
    # The shards' logs go to $OUT (--verbose: a line per case as it ends), so a step cut by its
    # timeout still says what ran; the folders of links stay in $work.
    local dir="$work/shards" logs="$OUT/conformance_shards"
    rm -rf "$dir" "$logs"
    mkdir -p "$dir" "$logs"
    local cases
    cases=$(grep -v '^#' "$expect_file" | sed '/^[[:space:]]*$/d')
    [ "$quick" = 1 ] && cases=$(echo "$cases" | awk 'NR % 15 == 1' | head -n 40)
    local n=0
    while read -r c; do
        [ -d "$data/$c" ] || continue
        i=$((n % shards))
        mkdir -p "$dir/$i/$(dirname "$c")"
        ln -s "$data/$c" "$dir/$i/$c"
        echo "$c" >>"$dir/$i.expect"
        n=$((n + 1))
    done <<<"$cases"
    echo "$n cases in $shards shards, data from $data"
    [ "$n" -gt 0 ] || { echo "SKIP: no case found under $data"; return 77; }
    local pids=() linebuf=
    command -v stdbuf >/dev/null && linebuf="stdbuf -oL" # each case's line, even if cut short
    for ((i = 0; i < shards; i++)); do
        [ -f "$dir/$i.expect" ] || continue
        $linebuf "$runner" --data "$dir/$i" --device opencl --expect "$dir/$i.expect" \
            --timeout 60 --verbose >"$logs/$i.log" 2>&1 &
        pids+=($!)
    done
    local rc=0 p
    for p in "${pids[@]}"; do
        wait "$p" || rc=1
    done
    local total=0 passed=0 line
    for ((i = 0; i < shards; i++)); do
        [ -f "$logs/$i.log" ] || continue
        echo "---- shard $i"
        grep -v '^pass ' "$logs/$i.log"
        line=$(grep -m1 '^total ' "$logs/$i.log")
        total=$((total + $(echo "$line" | awk '{print $2+0}' | tr -d ,)))
        passed=$((passed + $(echo "$line" | awk '{print $6+0}')))
    done
    echo
    if [ "$rc" = 0 ]; then
        echo "conformance: $passed of $total cases passed with --device opencl; all $n expected passed"
    else
        echo "conformance: $passed of $total cases passed with --device opencl;" \
             "$((n - passed)) of $n expected did not (see the shards above)"
    fi
    return "$rc"
}

# The ONNX test data: the Debian package's where installed (here), else the tar `prepare` packed.
find_testdata() {
    local d="${LOOM_ONNX_TESTDATA:-/usr/share/libonnx-testdata/data}"
    if [ -d "$d" ]; then
        echo "$d"
    elif [ -f "$testdata_tar" ]; then
        mkdir -p "$work/onnx-data"
        if tar -C "$work/onnx-data" -xzf "$testdata_tar" 2>/dev/null ||
            python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
                "$testdata_tar" "$work/onnx-data"; then
            echo "$work/onnx-data"
        fi
    fi
}

# The CUDA plugin from the tracked sources, into $cuda_dir (a step of its own, with its own
# timeout: nvcc is the one compiler the run needs).
cuda_build() {
    "$src/backends/cuda/build.sh" "$cuda_dir" || return 1
    LOOM_BACKEND_PATH="$cuda_dir" "$loom_bin" devices
}

# cuda_only CMD...: CMD with the CUDA plugin loaded, or SKIP (77) saying why when the plugin is
# missing or offers no device (its own log line says why: no GPU, no driver).
cuda_only() {
    [ -f "$cuda_dir/loom-cuda.so" ] || { echo "SKIP: no $cuda_dir/loom-cuda.so (cuda_build failed)"; return 77; }
    local listed
    listed=$(LOOM_BACKEND_PATH="$cuda_dir" "$loom_bin" devices 2>&1)
    if ! grep -q '^cuda:0 ' <<<"$listed"; then
        local why
        why=$(grep -m1 -o 'no CUDA device: [^;]*' <<<"$listed")
        echo "SKIP: the CUDA plugin offers no device here (${why:-its messages follow})"
        grep 'cuda' <<<"$listed" | head -n 3
        return 77
    fi
    LOOM_BACKEND_PATH="$cuda_dir" "$@"
}

sysinfo() {
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "commit: $(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo '?')" \
         "($(git -C "$src" status --porcelain 2>/dev/null | wc -l) changed paths)"
    echo "kernel: $(uname -srm)"
    echo "cores: $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "memory: $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "OCL_ICD_VENDORS=${OCL_ICD_VENDORS:-(unset)}: $(cat "${OCL_ICD_VENDORS:-/etc/OpenCL/vendors}"/*.icd 2>/dev/null | paste -sd' ' -)"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader ||
            true
    fi
    return 0
}

run() {
    OUT="${OUT:-/tmp/gpu-out}"
    mkdir -p "$OUT" || exit 1
    [ -x "$build/tools/loom" ] || { echo "gpu.sh: no $build/tools/loom (bench/gpu.sh prepare)" >&2; exit 1; }
    work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-sh.XXXXXX") || exit 1
    trap 'rm -rf "$work"' EXIT
    # Our own cache: calibration profiles, history and OpenCL binaries start empty, so every
    # figure comes from this run (the profiles are copied to $OUT at the end).
    export XDG_CACHE_HOME="$work/cache"
    export LOOM_OPENCL=1
    local loom="$build/tools/loom" b="$build/bench"
    local bert=bert gemm=(1024 4096 8192) nodes=20000 train=5 eval=10 rep=20 shards
    shards=${GPU_SH_SHARDS:-12}
    if [ "$quick" = 1 ]; then
        bert=bert-tiny gemm=(256 512) nodes=2000 train=2 eval=3 rep=5 shards=${GPU_SH_SHARDS:-2}
    fi
    # What prepare compressed, unpacked into a folder of our own ahead of .gpu/lib.
    local gz dst
    for gz in .gpu/lib/*.gz; do
        [ -f "$gz" ] || continue
        mkdir -p "$work/lib"
        dst="$work/lib/$(basename "$gz" .gz)"
        gzip -dc "$gz" >"$dst" 2>/dev/null ||
            python3 -c 'import gzip, shutil, sys; shutil.copyfileobj(gzip.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
                "$gz" "$dst" || echo "gpu.sh: cannot unpack $gz" >&2
    done
    [ -d "$work/lib" ] && export LD_LIBRARY_PATH="$work/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export build work quick expect_file src OUT
    export -f sysinfo conformance_sharded cuda_build cuda_only
    export cuda_dir="$work/cuda" loom_bin="$loom"
    echo "== bench/gpu.sh run: logs in $OUT, budget ${budget}s$([ "$quick" = 1 ] && echo ', QUICK (rehearsal sizes)')"

    step sysinfo 5 sysinfo
    step devices 15 "$loom" devices --json
    step backend_test 40 "$loom" backend-test opencl
    step gemm 60 "$b/bench_opencl" "${gemm[@]}"
    local cal=(--force --json)
    [ "$quick" = 1 ] && cal+=(--quick)
    step calibrate 40 "$loom" calibrate "${cal[@]}"
    step bert_opencl 40 "$loom" profile --model "$bert" --device opencl --repeat "$rep" --warmup 3
    step bert_cpu 45 "$loom" profile --model "$bert" --device cpu --repeat 10 --warmup 2
    step bert_placed 60 "$loom" profile --model "$bert" --repeat 10 --warmup 3 --all \
        --gantt "$OUT/bert_placed.svg"
    # The CUDA plugin: built on the machine (seconds), then only its own steps load it, so the
    # steps above and below keep measuring CPU + OpenCL as before.
    step cuda_build 90 cuda_build
    local cu=(env LOOM_BACKEND_PATH="$work/cuda")
    step cuda_backend_test 60 "${cu[@]}" "$loom" backend-test "$work/cuda/loom-cuda.so"
    local cucal=(--device cuda --force --json)
    [ "$quick" = 1 ] && cucal+=(--quick)
    step cuda_calibrate 40 cuda_only "$loom" calibrate "${cucal[@]}"
    step bert_cuda 40 cuda_only "$loom" profile --model "$bert" --device cuda --repeat "$rep" \
        --warmup 3
    step bert_placed_cuda 60 cuda_only "$loom" profile --model "$bert" --repeat 10 --warmup 3 \
        --all --gantt "$OUT/bert_placed_cuda.svg"
    step towers_placed 15 "$loom" profile --model towers --repeat "$rep" --warmup 3 --all \
        --gantt "$OUT/towers_placed.svg"
    step towers_cpu 15 "$loom" profile --model towers --device cpu --repeat "$rep" --warmup 3
    step towers_opencl 15 "$loom" profile --model towers --device opencl --repeat "$rep" --warmup 3
    step moe_placed 20 "$loom" profile --model moe --repeat "$rep" --warmup 3 --all \
        --gantt "$OUT/moe_placed.svg"
    step moe_cpu 15 "$loom" profile --model moe --device cpu --repeat "$rep" --warmup 3
    step moe_opencl 15 env LOOM_MOE_SPLIT=1 "$loom" profile --model moe --device opencl \
        --repeat "$rep" --warmup 3
    step costmodel_opencl 40 "$b/bench_costmodel" tests/fixtures --device opencl:0 \
        --train "$train" --eval "$eval"
    step dispatch_opencl 20 "$b/bench_dispatch" "$nodes" --device opencl
    step dispatch_cpu 20 "$b/bench_dispatch" "$nodes"
    step fixtures_opencl 30 env LOOM_TEST_DEVICE=opencl LOOM_FIXTURES=tests/fixtures \
        "$build/tests/test_fixtures_dev"
    local data
    data=$(find_testdata)
    if [ -n "$data" ]; then
        step conformance_opencl 60 conformance_sharded "$data" "$shards"
    else
        rows+=("conformance_opencl|SKIP|0|no ONNX test data (libonnx-testdata, or $testdata_tar from prepare)")
    fi

    cp "$XDG_CACHE_HOME"/loom/*.json "$OUT"/ 2>/dev/null
    {
        echo "bench/gpu.sh run, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores," \
             "$(grep -m1 '^OCL_ICD' "$OUT/sysinfo.log" 2>/dev/null | cut -d: -f2- | sed 's/^ *//')" \
             "$([ "$quick" = 1 ] && echo '(QUICK rehearsal sizes)')"
        printf '%-19s %-9s %5s  %s\n' STEP STATUS SECS FIGURES
        local r
        for r in "${rows[@]}"; do
            IFS='|' read -r n s t f <<<"$r"
            printf '%-19s %-9s %5s  %s\n' "$n" "$s" "$t" "$f"
        done
        echo "total ${SECONDS}s of a ${budget}s budget; logs: $OUT/STEP.log"
    } >"$OUT/summary.txt"
    echo
    cat "$OUT/summary.txt"
    return 0
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    -h | --help | help) usage 0 ;;
    *) usage 2 ;;
esac
