#!/bin/bash
# `loom run` under an address-space limit (ulimit -v) ends promptly with exit 0, or 1 and one
# line on stderr; never a hang (OpenBLAS's exit handler joining a thread that spins forever
# trying to map its buffer: issue 17), never an abort inside a driver (PoCL cannot start its
# threads). Limits so low that the dynamic loader cannot map the libraries (exit 127, before any
# of Loom's code runs) are skipped. A run that succeeds under a limit writes the same outputs as
# one without (to 1e-4: where OpenBLAS has no room for its buffer, the CPU backend computes its
# GEMMs by a plain loop instead, backends/cpu/cpu_blas.c). Usage: test_memory_limit.sh LOOM
# SOURCE_ROOT
set -u
loom=$1
model=$2/tests/data/onnx/mlp.onnx
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
fail=0
ran=0
if ! "$loom" run "$model" -o "$out/ref" >/dev/null 2>"$out/err"; then
    echo "FAIL: loom run without a limit:"
    cat "$out/err"
    exit 1
fi
# same DIR: exit 0 when every .npy of $out/ref has its twin in DIR within 1e-4 (relative to 1).
same() {
    /usr/bin/python3 - "$out/ref" "$1" <<'PY'
import os, sys
import numpy as np
ref, got = sys.argv[1], sys.argv[2]
names = sorted(f for f in os.listdir(ref) if f.endswith(".npy"))
ok = bool(names)
for f in names:
    a = np.load(os.path.join(ref, f))
    b = np.load(os.path.join(got, f)) if os.path.exists(os.path.join(got, f)) else None
    if b is None or a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-4):
        print("  output", f, "differs" if b is not None else "missing")
        ok = False
sys.exit(0 if ok else 1)
PY
}
for threads in "" 64; do
    for kb in 70000 100000 150000 200000 300000 400000 600000; do
        err="$out/err"
        rm -rf "$out/o"
        (
            ulimit -v "$kb"
            LOOM_CPU_THREADS=$threads timeout 20 "$loom" run "$model" -o "$out/o" 2>"$err" >/dev/null
        )
        rc=$?
        what="ulimit -v $kb, LOOM_CPU_THREADS=${threads:-default}"
        if [ $rc = 127 ] && grep -q "error while loading shared libraries" "$err"; then
            continue
        fi
        ran=$((ran + 1))
        lines=$(wc -l <"$err")
        case $rc in
        0)
            if ! same "$out/o"; then
                echo "FAIL: $what: exit 0 with outputs unlike the unlimited run's"
                fail=1
            fi
            ;;
        1)
            if [ "$lines" != 1 ] || ! grep -q "^loom run: " "$err"; then
                echo "FAIL: $what: exit 1 with $lines lines on stderr, not one:"
                cat "$err"
                fail=1
            fi
            ;;
        124)
            echo "FAIL: $what: still running after 20 s (hang)"
            fail=1
            ;;
        *)
            echo "FAIL: $what: exit $rc"
            cat "$err"
            fail=1
            ;;
        esac
        [ $rc != 124 ] && echo "ok: $what: exit $rc"
    done
done
if [ $ran = 0 ]; then
    echo "SKIP: no limit let the loader start loom"
    exit 77
fi
exit $fail
