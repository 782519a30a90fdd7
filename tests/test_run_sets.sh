#!/bin/sh
# `loom run MODEL --inputs DIR...` (issue 12): several input sets in one process through one
# model; the specialisation cache is seen working (hits and misses, in text and --json), outputs
# land in OUT/<set>/, and a set whose inputs contradict the model exits 2 with one line.
#   test_run_sets.sh LOOM SOURCE_ROOT
set -eu
loom=$1
data=$2/tests/data/model
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$loom" run "$data/dyn_mlp.onnx" --inputs "$data/sets/b2s3" --inputs "$data/sets/b5s3" \
    --inputs "$data/sets/b2s3" -o "$tmp/out" > "$tmp/text" || fail "three sets: exit $?"
grep -q "set 0 .*new specialisation" "$tmp/text" || fail "set 0 is not a new specialisation"
grep -q "set 2 .*cached specialisation" "$tmp/text" || fail "set 2 did not hit the cache"
grep -q "1 hit, 2 misses, 0 evictions, 2 live" "$tmp/text" || fail "counters: $(cat "$tmp/text")"
for s in 0 1 2; do
    [ -s "$tmp/out/$s/y.npy" ] && [ -s "$tmp/out/$s/s.npy" ] || fail "outputs of set $s missing"
done
cmp -s "$tmp/out/0/y.npy" "$tmp/out/2/y.npy" || fail "the same inputs gave other outputs"

"$loom" run "$data/dyn_mlp.onnx" --inputs "$data/sets/b2s3" --inputs "$data/sets/b2s3" --json \
    > "$tmp/json" || fail "--json: exit $?"
grep -q '"hits": 1' "$tmp/json" || fail "--json lacks hits"
grep -q '"misses": 1' "$tmp/json" || fail "--json lacks misses"

set +e
"$loom" run "$data/dyn_mlp.onnx" --inputs "$data/sets/b2s3" --inputs "$data/sets/b4s3_bad" \
    > /dev/null 2> "$tmp/err"
rc=$?
set -e
[ $rc -eq 2 ] || fail "contradicting set: exit $rc, expected 2"
[ "$(wc -l < "$tmp/err")" -eq 1 ] || fail "not one line: $(cat "$tmp/err")"
grep -q "dimension 'batch' is 4 in x but 3 in z" "$tmp/err" || fail "message: $(cat "$tmp/err")"

set +e
"$loom" run "$data/dyn_mlp.onnx" --inputs "$tmp/nowhere" > /dev/null 2> "$tmp/err"
rc=$?
set -e
[ $rc -eq 2 ] || fail "missing input set: exit $rc, expected 2"
echo "ok"
