#!/bin/bash
# Builds Loom and runs the whole test suite (meson test). Installs the Debian packages it needs
# first when any is missing. Usage: scripts/test.sh [--sanitize | --tsan] [BUILD_DIR]
#   --sanitize   build with AddressSanitizer + UndefinedBehaviorSanitizer (in build-asan/)
#   --tsan       build with clang's ThreadSanitizer (in build-tsan/) and run the tests where
#                threads meet: the executor, multi-device plans, plugins, the fixtures (on the
#                CPU and placed over every device), npu-sim and the serving suite. gcc's TSan
#                build crashes at load inside a target_clones ifunc resolver (the resolver runs
#                before TSan's runtime is up); clang's does not. OpenCL stays off (PoCL is not
#                instrumented and its threads would only add noise).
# Prints a last line "N passed, N failed" and exits non-zero when anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
sanitize=0
tests=()
if [ "${1:-}" = "--sanitize" ]; then
    sanitize=1
    shift
elif [ "${1:-}" = "--tsan" ]; then
    sanitize=tsan
    shift
fi
./scripts/setup-deps.sh
if [ $sanitize = tsan ]; then
    build=${1:-build-tsan}
    export CC=clang
    # Warnings are held to -Werror by the gcc builds; clang warns about other things, and a
    # clang-only warning must not hide the races this build looks for.
    opts=(-Db_sanitize=thread -Db_lundef=false -Dbuildtype=debugoptimized -Dwerror=false)
    export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:exitcode=66}
    export LOOM_OPENCL=0
    tests=(test_runtime test_multidevice test_plugins test_fixtures test_fixtures_placed
           test_npu_sim test_events test_fallback)
elif [ $sanitize = 1 ]; then
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
if [ $sanitize = tsan ]; then
    # The serving tests, once they exist (suite "serve"), by name.
    while read -r t; do
        tests+=("$t")
    done < <(meson test -C "$build" --list --suite serve 2>/dev/null | sed -n 's|^.* / ||p')
fi
log="$build/meson-logs/testlog.json"
rm -f "$log" # a failed build must not leave the last run's results to be counted
if [ ${#tests[@]} -gt 0 ]; then
    # Only what those tests need: meson test builds its tests' dependencies.
    set +e
    meson test -C "$build" --print-errorlogs --num-processes 1 "${tests[@]}"
    rc=$?
    set -e
else
    meson compile -C "$build"
    set +e
    meson test -C "$build" --print-errorlogs --num-processes 1
    rc=$?
    set -e
fi
if [ ! -f "$log" ]; then
    echo "0 passed, 1 failed"
    exit 1
fi
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
