#!/bin/bash
# Builds Loom and runs the whole test suite (meson test). Installs the Debian packages it needs
# first when any is missing. Usage: scripts/test.sh [--sanitize] [BUILD_DIR]
#   --sanitize   build with AddressSanitizer + UndefinedBehaviorSanitizer (in build-asan/)
# Prints a last line "N passed, N failed" and exits non-zero when anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
sanitize=0
if [ "${1:-}" = "--sanitize" ]; then
    sanitize=1
    shift
fi
./scripts/setup-deps.sh
if [ $sanitize = 1 ]; then
    build=${1:-build-asan}
    opts=(-Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug)
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
    # Leaks inside the OpenCL driver (PoCL's compiler) only; see the file.
    export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0}
    # PoCL's threads winding down at exit sometimes crash LeakSanitizer's tracer: only the
    # tests about OpenCL start it in this run (tests/meson.build turns it on for them).
    export LOOM_OPENCL=${LOOM_OPENCL:-0}
else
    build=${1:-build}
    opts=(-Dbuildtype=debugoptimized)
fi
if [ -d "$build" ]; then
    meson setup --reconfigure "$build" -Dwerror=true "${opts[@]}" >/dev/null
else
    meson setup "$build" -Dwerror=true "${opts[@]}" >/dev/null
fi
meson compile -C "$build"
set +e
meson test -C "$build" --print-errorlogs --num-processes 1
rc=$?
set -e
log="$build/meson-logs/testlog.json"
python3 - "$log" <<'PY'
import json, sys
passed = failed = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["result"] in ("OK", "EXPECTEDFAIL", "SKIP"):
        passed += 1
    else:
        failed += 1
print(f"{passed} passed, {failed} failed")
PY
exit $rc
