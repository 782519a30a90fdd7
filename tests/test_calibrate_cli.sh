#!/bin/bash
# End-to-end checks of `loom calibrate`: a quick calibration writes profiles.json into the
# cache folder ($XDG_CACHE_HOME/loom, a temporary folder here), a second run reuses it, --force
# measures again, --json is one JSON object, and bad usage exits 2 with one line on stderr.
# Usage: test_calibrate_cli.sh LOOM calibrate   (any command that takes calibrate's options)
# No assertion depends on how fast anything runs.
set -u
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# PoCL (the OpenCL device on CPU-only machines) caches compiled kernels under XDG_CACHE_HOME
# too: keep it where it would have been, or every calibration recompiles them (tens of seconds).
export POCL_CACHE_DIR="${POCL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pocl/kcache}"
export XDG_CACHE_HOME="$TMP/cache"
fail=0
check() { # NAME EXPECTED_STATUS ARGS...
    local name="$1" want="$2"
    shift 2
    "${CMD[@]}" "$@" >"$TMP/out" 2>"$TMP/err"
    local got=$?
    if [ "$got" -ne "$want" ]; then
        echo "FAIL $name: exit $got, wanted $want"; cat "$TMP/err"; fail=$((fail + 1))
    else
        echo "ok   $name"
    fi
}
CMD=("$@")

check "help" 0 --help
grep -q "usage: loom calibrate" "$TMP/out" || { echo "FAIL help text"; fail=$((fail + 1)); }
check "quick calibration" 0 --quick
[ -s "$XDG_CACHE_HOME/loom/profiles.json" ] || { echo "FAIL profiles.json written"; fail=$((fail + 1)); }
grep -q "^cpu:0 .*\[measured, quick\]" "$TMP/out" || { echo "FAIL cpu:0 measured"; cat "$TMP/out"; fail=$((fail + 1)); }
grep -q "GFLOP/s" "$TMP/out" || { echo "FAIL GFLOP/s printed"; fail=$((fail + 1)); }
grep -q "profiles written to $XDG_CACHE_HOME/loom/profiles.json" "$TMP/out" || { echo "FAIL cache path printed"; fail=$((fail + 1)); }
ls -a "$XDG_CACHE_HOME/loom" | grep -q '^\.profiles' && { echo "FAIL temporary file left behind"; fail=$((fail + 1)); }
cp "$XDG_CACHE_HOME/loom/profiles.json" "$TMP/first.json"

check "second run reuses the cache" 0 --quick --json
python3 - "$TMP/out" <<'PY' || { echo "FAIL reuse (json)"; cat "$TMP/out"; fail=$((fail + 1)); }
import json, math, sys
d = json.load(open(sys.argv[1]))
cpu = [x for x in d["devices"] if x["id"] == "cpu:0"][0]
assert cpu["status"] == "cached", cpu
for k in ("gflops_f32", "bandwidth_gbs", "launch_us"):
    assert cpu[k] > 0 and math.isfinite(cpu[k]), k
assert cpu["host_visible"] is True and cpu["to_host"] is None
assert d["profiles_file"].endswith("/loom/profiles.json")
PY
cmp -s "$TMP/first.json" "$XDG_CACHE_HOME/loom/profiles.json" || { echo "FAIL cache rewritten without --force"; fail=$((fail + 1)); }

check "--force on one device measures again" 0 --quick --force --device cpu
grep -q "^cpu:0 .*\[measured, quick\]" "$TMP/out" || { echo "FAIL --force measured"; fail=$((fail + 1)); }
python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["profiles"]; assert len(p) >= 1' \
    "$XDG_CACHE_HOME/loom/profiles.json" || { echo "FAIL profiles.json content"; fail=$((fail + 1)); }

echo '{"version": 1, "profiles": ' >"$XDG_CACHE_HOME/loom/profiles.json"
check "corrupt cache is reported and replaced" 0 --quick --device cpu:0
grep -q "corrupt" "$TMP/err" || { echo "FAIL corrupt cache reported"; fail=$((fail + 1)); }
python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$XDG_CACHE_HOME/loom/profiles.json" \
    || { echo "FAIL corrupt cache replaced"; fail=$((fail + 1)); }

check "bad flag is bad usage" 2 --frobnicate
[ "$(wc -l <"$TMP/err")" -eq 1 ] && grep -q "unknown option '--frobnicate'" "$TMP/err" \
    || { echo "FAIL one line naming the flag"; cat "$TMP/err"; fail=$((fail + 1)); }
check "unknown device is bad usage" 2 --device nosuch:7
check "missing value is bad usage" 2 --device

# The test plugins, each alone on the plugin path (LOOM_TEST_PLUGIN_DIR from meson).
if [ -n "${LOOM_TEST_PLUGIN_DIR:-}" ]; then
    mkdir -p "$TMP/quirks" "$TMP/devmem"
    cp "$LOOM_TEST_PLUGIN_DIR/quirks.so" "$TMP/quirks/"
    cp "$LOOM_TEST_PLUGIN_DIR/devmem.so" "$TMP/devmem/"
    # 250 lines while loading and a warning per Relu it runs: more than the runtime's ring of
    # 256 holds. Drained after each device, every one is printed and none is dropped.
    export LOOM_BACKEND_PATH="$TMP/quirks" LOOM_TEST_QUIRKS_LOG=250
    check "plugin messages past the ring" 0 --quick --force --device quirks:0
    { grep -q "line 1 of 250" "$TMP/err" && grep -q "line 250 of 250" "$TMP/err" &&
      grep -q "relu of .* elements ran" "$TMP/err" && ! grep -q "dropped" "$TMP/err"; } ||
        { echo "FAIL every plugin message printed"; head -5 "$TMP/err"; fail=$((fail + 1)); }
    unset LOOM_TEST_QUIRKS_LOG
    # The host-link timing's first copy (a 4 KiB download) returns 77, not a loom_status.
    export LOOM_BACKEND_PATH="$TMP/devmem" LOOM_TEST_DEVMEM_ODD_COPY_BYTES=4096
    check "a copy status outside the enum" 1 --quick --force --device devmem:0
    grep -q "calibrating devmem:0: download of 4096 bytes: backend 'devmem' returned status 77, not a loom_status: devmem: odd copy status on purpose" "$TMP/err" ||
        { echo "FAIL status 77 mapped, its number kept"; cat "$TMP/err"; fail=$((fail + 1)); }
    unset LOOM_BACKEND_PATH LOOM_TEST_DEVMEM_ODD_COPY_BYTES
fi

[ "$fail" -eq 0 ] && echo "all calibrate checks passed"
exit $((fail > 0))
