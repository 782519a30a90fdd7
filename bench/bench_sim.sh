#!/bin/bash
# Placement quality and speed of `loom sim` (docs/sim.md): Loom's default policy against HEFT on
# the public sample instances and on a generated set (bench/sim_gen.py), against the optimum
# where the exact search proves one, and the time to place a 10,000-task, 4-device graph.
# Prints figures; asserts nothing.
#
# usage: bench/bench_sim.sh [LOOM] [PUBLIC_DIR] [BUDGET]
#   LOOM        the loom binary (default: build-place/tools/loom, else build/tools/loom)
#   PUBLIC_DIR  the public instances (default: ../shared/sim/public/instances)
#   BUDGET      --budget for the default policy (default: 0.5 s)
# Environment: EXACT_MAX (default 16): instances with at most this many tasks also get
# `--policy exact --budget 10`; GEN_DIR: where the generated set goes (default: a temp dir).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOOM=${1:-}
if [ -z "$LOOM" ]; then
    for b in build-place build; do
        [ -x "$ROOT/$b/tools/loom" ] && { LOOM="$ROOT/$b/tools/loom"; break; }
    done
fi
PUB=${2:-$ROOT/../shared/sim/public/instances}
BUDGET=${3:-0.5}
EXACT_MAX=${EXACT_MAX:-16}
PY=/usr/bin/python3
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
GEN=${GEN_DIR:-$TMP/gen}
[ -d "$GEN" ] || $PY "$ROOT/bench/sim_gen.py" "$GEN" --big 10000 || exit 1
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "loom: $LOOM   budget: $BUDGET s   exact: up to $EXACT_MAX tasks, 10 s"

run_set() { # NAME DIR [RESULTS_CSV]
    local name="$1" dir="$2" csv="${3:-}"
    : >"$TMP/$name.tsv"
    for f in "$dir"/*.json; do
        local b; b=$(basename "$f" .json)
        [[ "$b" == big_* ]] && continue
        "$LOOM" sim "$f" --policy heft --json >"$TMP/h.json" || { echo "FAIL heft $b"; continue; }
        "$LOOM" sim "$f" --budget "$BUDGET" --json >"$TMP/d.json" || { echo "FAIL default $b"; continue; }
        local n; n=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["tasks"])' "$TMP/h.json")
        : >"$TMP/e.json"
        if [ "$n" -le "$EXACT_MAX" ]; then
            "$LOOM" sim "$f" --policy exact --budget 10 --json >"$TMP/e.json" || echo "FAIL exact $b"
        fi
        $PY - "$b" "$TMP/h.json" "$TMP/d.json" "$TMP/e.json" "$csv" >>"$TMP/$name.tsv" <<'PY'
import csv, json, sys
b, hf, df, ef, cf = sys.argv[1:6]
h, d = json.load(open(hf)), json.load(open(df))
opt = ""
try:
    e = json.load(open(ef))
    if e["proven_optimal"]:
        opt = repr(e["makespan"])
except Exception:
    pass
if not opt and cf:
    for r in csv.DictReader(open(cf)):
        if r["instance"] == b and r["optimal"]:
            opt = r["optimal"]
print("\t".join([b, str(d["tasks"]), str(d["devices"]), repr(h["makespan"]), repr(d["makespan"]),
                 repr(d["seconds"]), opt]))
PY
    done
    $PY - "$name" "$TMP/$name.tsv" <<'PY'
import math, sys
name, path = sys.argv[1:3]
rows = [l.rstrip("\n").split("\t") for l in open(path) if l.strip()]
print(f"\n## {name}: {len(rows)} instances")
print(f"{'instance':28} {'n':>4} {'dev':>3} {'HEFT':>12} {'default':>12} {'def/HEFT':>8} {'time s':>6} {'def/opt':>8}")
lr, lo, worst, tmax = [], [], None, 0.0
for b, n, nd, h, d, t, opt in rows:
    h, d, t = float(h), float(d), float(t)
    r = d / h
    lr.append(math.log(r))
    tmax = max(tmax, t)
    if worst is None or r > worst[1]:
        worst = (b, r)
    o = ""
    if opt:
        lo.append(math.log(d / float(opt)))
        o = f"{d / float(opt):8.4f}"
    print(f"{b:28} {n:>4} {nd:>3} {h:12.6g} {d:12.6g} {r:8.4f} {t:6.3f} {o:>8}")
print(f"geomean default/HEFT: {math.exp(sum(lr) / len(lr)):.4f}   worst: {worst[0]} {worst[1]:.4f}"
      f"   slowest placement: {tmax:.3f} s")
if lo:
    print(f"geomean default/optimum over {len(lo)} solved: {math.exp(sum(lo) / len(lo)):.4f}")
PY
}

run_set public "$PUB" "$(dirname "$PUB")/results.csv"
run_set generated "$GEN"
cat "$TMP/public.tsv" "$TMP/generated.tsv" >"$TMP/all.tsv"
$PY - "$TMP/all.tsv" <<'PY'
import math, sys
rows = [l.split("\t") for l in open(sys.argv[1]) if l.strip()]
g = math.exp(sum(math.log(float(r[4]) / float(r[3])) for r in rows) / len(rows))
print(f"\n## both sets: {len(rows)} instances, geomean default/HEFT {g:.4f}")
PY

echo
echo "## 10,000 tasks, 4 devices ($(basename "$GEN")/big_10000.json; placement time only, JSON parsing excluded)"
for p in heft default; do
    for i in 1 2 3; do
        "$LOOM" sim "$GEN/big_10000.json" --policy $p --json
    done | $PY -c '
import json, sys
rs = [json.loads(l) for l in sys.stdin]
ts = sorted(r["seconds"] for r in rs)
r = rs[0]
print("%-8s makespan %.6g (HEFT %.6g, ratio %.4f)  time min/median/max %.1f/%.1f/%.1f ms"
      % (r["policy"], r["makespan"], r["heft_makespan"], r["ratio"], ts[0] * 1e3, ts[1] * 1e3,
         ts[2] * 1e3))'
done
