#!/bin/bash
# The CUDA plugin (backends/cuda) through the real host path: `loom devices` with
# LOOM_BACKEND_PATH at the plugin's folder must accept it as backend 'cuda' (ABI 1.0, its
# options listed). Where no CUDA GPU is usable (no `nvidia-smi -L` listing one) it must offer no
# device and say why in exactly one line naming cudaGetDeviceCount's error, and `loom
# backend-test` must refuse it (exit 2, "offers no usable device"). Where a GPU is, it must
# list cuda:0 as a GPU whose memory the host cannot address, and pass `loom backend-test`.
# Usage: test_cuda_plugin.sh LOOM PLUGIN.so
set -uo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 LOOM PLUGIN.so" >&2
    exit 2
fi
loom="$1"
plugin="$2"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fail=0

# What loom said comes first (it says why a plugin was refused), then the end of its output.
bad() {
    echo "FAIL: $*" >&2
    sed 's/^/  stderr: /' "$work/err" | head -n 20 >&2
    sed 's/^/  stdout: /' "$work/out" | tail -n 8 >&2
    fail=1
}

# A folder holding only the plugin, so that the loader's folder path is the one tested.
mkdir -p "$work/plugins"
ln -s "$(cd "$(dirname "$plugin")" && pwd)/$(basename "$plugin")" "$work/plugins/loom-cuda.so"

rc=0
LOOM_BACKEND_PATH="$work/plugins" LOOM_NO_CALIBRATE=1 "$loom" devices --json \
    >"$work/out" 2>"$work/err" || rc=$?
[ "$rc" -eq 0 ] || bad "loom devices --json: exit $rc"
# meson builds the plugin only where the toolkit's libraries load; should one of them still
# fail to load when the test runs (a toolkit removed or damaged since, a process that cannot map
# it), there is nothing of the plugin's to test: say which and why, and skip. A refusal that
# names the plugin's own file (an undefined symbol, say) is the plugin's failure.
dep=$(grep -o "loom-cuda.so refused: cannot load it: .*" "$work/err" | head -n 1)
dep=${dep#*cannot load it: }
dep_file=${dep%%:*}
if [ -n "$dep" ] && [ "$(basename "$dep_file")" != loom-cuda.so ]; then
    echo "SKIP: a library the CUDA plugin needs does not load here: $dep"
    exit 77
fi
python3 - "$work/out" <<'EOF' || { bad "the JSON does not list backend 'cuda' as accepted"; }
import json, sys
d = json.load(open(sys.argv[1]))
b = [x for x in d["backends"] if x["name"] == "cuda"]
assert len(b) == 1, "no backend 'cuda' in %s" % [x["name"] for x in d["backends"]]
assert b[0]["abi"] == "1.0", b[0]
keys = sorted(o["key"] for o in b[0]["options"])
assert keys == ["graphs", "tf32"], keys
EOF
grep -q 'refused' "$work/err" && bad "the plugin was refused"

has_gpu=0
if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    has_gpu=1
fi

if [ "$has_gpu" = 0 ]; then
    python3 - "$work/out" <<'EOF' || bad "a cuda device is listed on a machine without a GPU"
import json, sys
d = json.load(open(sys.argv[1]))
assert not [x for x in d["devices"] if x["id"].startswith("cuda:")], d["devices"]
EOF
    n=$(grep -c 'cuda: no CUDA device: cudaGetDeviceCount' "$work/err")
    [ "$n" -eq 1 ] || bad "expected one line saying why there is no CUDA device, found $n"
    rc=0
    "$loom" backend-test "$plugin" >"$work/out" 2>"$work/err" || rc=$?
    [ "$rc" -eq 2 ] || bad "loom backend-test: exit $rc, expected 2 (no device)"
    tail -n 1 "$work/err" | grep -q 'offers no usable device' ||
        bad "loom backend-test's last line does not say the plugin offers no usable device"
    [ "$fail" = 0 ] && echo "ok: the cuda plugin loads, offers no device here, and says why:" &&
        grep 'cuda: no CUDA device' "$work/err" | head -n 1 | sed 's/^/  /'
else
    python3 - "$work/out" <<'EOF' || bad "no cuda:0 GPU listed although nvidia-smi lists one"
import json, sys
d = json.load(open(sys.argv[1]))
c = [x for x in d["devices"] if x["id"] == "cuda:0"]
assert c and c[0]["kind"] == "gpu", d["devices"]
EOF
    rc=0
    "$loom" backend-test "$plugin" >"$work/out" 2>"$work/err" || rc=$?
    [ "$rc" -eq 0 ] || bad "loom backend-test on the GPU: exit $rc"
    [ "$fail" = 0 ] && echo "ok: the cuda plugin drives the GPU and passes loom backend-test"
fi
exit "$fail"
