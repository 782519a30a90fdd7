#!/bin/bash
# `loom backend-test PLUGIN.so` tests that plugin's own devices, and says so when the plugin
# cannot be tested (exit 2 with the refusal as the last line, exit 1 when it supports nothing);
# `loom devices` shows a plugin's slow loom_backend_query. Run with the OpenCL backend on (PoCL in
# CI): a built-in device must never be tested in a plugin's place.
# Usage: test_plugins_cli.sh LOOM PLUGIN_DIR
#   PLUGIN_DIR holds the test plugins (devmem.so, bad_abi.so, no_symbol.so, quirks.so,
#   old_abi_0_4.so, no_copy.so).
set -uo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 LOOM PLUGIN_DIR" >&2
    exit 2
fi
loom="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
plugins="$(cd "$2" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
unset LOOM_BACKEND_PATH
fail=0

# run NAME WANT_RC CMD...: runs CMD, stdout in $work/out, stderr in $work/err; checks the status.
run() {
    local name="$1" want="$2"
    shift 2
    local rc=0
    "$@" >"$work/out" 2>"$work/err" || rc=$?
    if [ "$rc" -ne "$want" ]; then
        echo "FAIL: $name: exit $rc, expected $want" >&2
        sed 's/^/  stdout: /' "$work/out" | tail -n 15 >&2
        sed 's/^/  stderr: /' "$work/err" | tail -n 15 >&2
        fail=1
        return 1
    fi
    echo "ok: $name (exit $rc)"
}

# expect NAME FILE TEXT: FILE contains TEXT (fixed string).
expect() {
    if ! grep -qF -- "$3" "$2"; then
        echo "FAIL: $1: '$3' not in $(basename "$2"):" >&2
        sed 's/^/  /' "$2" | tail -n 15 >&2
        fail=1
    fi
}

# expect_not NAME FILE TEXT
expect_not() {
    if grep -qF -- "$3" "$2"; then
        echo "FAIL: $1: '$3' found in $(basename "$2"):" >&2
        sed 's/^/  /' "$2" | tail -n 15 >&2
        fail=1
    fi
}

# last_line_has NAME TEXT: the last line of stderr (the refusal) contains TEXT.
last_line_has() {
    if ! tail -n 1 "$work/err" | grep -qF -- "$2"; then
        echo "FAIL: $1: the last line of stderr does not say '$2':" >&2
        sed 's/^/  stderr: /' "$work/err" | tail -n 15 >&2
        fail=1
    fi
}

if "$loom" devices 2>/dev/null | grep -q '^opencl:0 '; then
    echo "note: opencl:0 is present: the plugin's devices must be tested, not it"
else
    echo "note: no OpenCL device here: the checks still run, without that trap"
fi

# A plugin's own device, by path, with an OpenCL device present.
if run "backend-test devmem.so" 0 "$loom" backend-test "$plugins/devmem.so"; then
    expect "backend-test devmem.so" "$work/out" "backend-test of devmem:0 against cpu:0"
    expect_not "backend-test devmem.so" "$work/out" "opencl:0"
    expect "backend-test devmem.so" "$work/out" "Relu"
    # ABI 1.0: devmem claims MatMul+bias+Relu (its Add alone it cannot run): kept, right numbers
    expect "backend-test devmem.so" "$work/out" "claims on devmem:0"
    expect "backend-test devmem.so" "$work/out" \
        'kept: "MatMul+Add+Relu" as one kernel (3 of 3 nodes): pass'
    expect "backend-test devmem.so" "$work/out" "claims: 2 kept, 9 not claimed, 0 failed"
fi
# A claimed unit with wrong numbers fails backend-test (the op table alone passes).
if run "backend-test devmem.so with a wrong fused kernel" 1 \
    env LOOM_TEST_DEVMEM_WRONG_UNIT=1 "$loom" backend-test "$plugins/devmem.so"; then
    expect "backend-test devmem.so with a wrong fused kernel" "$work/out" \
        'kept: "MatMul+Add+Relu" as one kernel (3 of 3 nodes): FAIL'
    expect "backend-test devmem.so with a wrong fused kernel" "$work/out" \
        "claims: 0 kept, 9 not claimed, 2 failed"
    expect "backend-test devmem.so with a wrong fused kernel" "$work/out" "0 failed, 59 unsupported"
fi
# Its in-order queues (enqueue, events, asynchronous copies): chains run 6 times, right.
if run "backend-test devmem.so with queues" 0 \
    env LOOM_TEST_DEVMEM_DEVICES=1 "$loom" backend-test "$plugins/devmem.so"; then
    expect "backend-test devmem.so with queues" "$work/out" \
        "pipeline on devmem:0 (in_order 1; enqueue; events yes; async copies yes"
    expect "backend-test devmem.so with queues" "$work/out" "6 runs: pass"
    expect "backend-test devmem.so with queues" "$work/out" "pipeline: 2 passed, 0 failed"
fi
# A plugin built for ABI 0.4, through the adapter.
if run "backend-test old_abi_0_4.so" 0 "$loom" backend-test "$plugins/old_abi_0_4.so" --op Relu; then
    expect "backend-test old_abi_0_4.so" "$work/out" "backend-test of old04:0 against cpu:0"
fi
# A file name without a '/' is the file in the current folder, not a library-path lookup.
if run "backend-test quirks.so (no slash)" 0 \
    bash -c 'cd "$1" && exec "$2" backend-test quirks.so --op Relu' _ "$plugins" "$loom"; then
    expect "backend-test quirks.so (no slash)" "$work/out" "backend-test of quirks:0"
fi
# Another copy of the same backend on LOOM_BACKEND_PATH: the file named is the one tested.
mkdir -p "$work/path"
cp "$plugins/quirks.so" "$work/path/quirks-installed.so"
if run "backend-test quirks.so with a copy on LOOM_BACKEND_PATH" 0 \
    env LOOM_BACKEND_PATH="$work/path" "$loom" backend-test "$plugins/quirks.so" --op Relu; then
    expect "backend-test quirks.so with a copy on LOOM_BACKEND_PATH" "$work/out" \
        "backend-test of quirks:0"
fi

# Refused plugins: exit 2, the refusal as the last line.
run "backend-test bad_abi.so" 2 "$loom" backend-test "$plugins/bad_abi.so" &&
    last_line_has "backend-test bad_abi.so" "built for backend ABI 99.0, this Loom speaks 1.0"
expect_not "backend-test bad_abi.so" "$work/out" "backend-test of"
run "backend-test no_symbol.so" 2 "$loom" backend-test "$plugins/no_symbol.so" &&
    last_line_has "backend-test no_symbol.so" "exports no loom_backend_query"
expect_not "backend-test no_symbol.so" "$work/out" "backend-test of"
head -c 4096 /dev/urandom >"$work/garbage.so"
run "backend-test garbage.so" 2 "$loom" backend-test "$work/garbage.so" &&
    last_line_has "backend-test garbage.so" "cannot load it"
expect_not "backend-test garbage.so" "$work/out" "backend-test of"
run "backend-test quirks.so without prepare" 2 \
    env LOOM_TEST_QUIRKS_NO_PREPARE=1 "$loom" backend-test "$plugins/quirks.so" &&
    last_line_has "backend-test quirks.so without prepare" "required slot 'prepare' is missing"
expect_not "backend-test quirks.so without prepare" "$work/out" "backend-test of"
run "backend-test no_copy.so, no usable device" 2 \
    env LOOM_TEST_NO_COPY_ALL_HIDDEN=1 "$loom" backend-test "$plugins/no_copy.so" &&
    last_line_has "backend-test no_copy.so, no usable device" "none of its 2 devices can be used"
run "backend-test of a missing file" 2 "$loom" backend-test "$work/nothing.so" &&
    last_line_has "backend-test of a missing file" "cannot open plugin"

# A plugin that supports none of the cases tested nothing: exit 1.
run "backend-test quirks.so --op Add" 1 "$loom" backend-test "$plugins/quirks.so" --op Add &&
    expect "backend-test quirks.so --op Add" "$work/err" "quirks:0 ran none of the"

# `loom devices` shows a plugin that took long to start.
mkdir -p "$work/slow"
cp "$plugins/quirks.so" "$work/slow/quirks.so"
if run "loom devices with a slow plugin" 0 \
    env LOOM_BACKEND_PATH="$work/slow" LOOM_TEST_QUIRKS_SLEEP_MS=1200 "$loom" devices; then
    expect "loom devices with a slow plugin" "$work/err" \
        "plugin $work/slow/quirks.so took 1."
    expect "loom devices with a slow plugin" "$work/err" "s in loom_backend_query"
    expect "loom devices with a slow plugin" "$work/out" "quirks:0"
fi

if [ "$fail" -ne 0 ]; then
    echo "test_plugins_cli: FAILED" >&2
    exit 1
fi
echo "test_plugins_cli: OK"
