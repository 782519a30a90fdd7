#!/bin/bash
# docs/operators.md is `loom ops --markdown` (tools/cmd_ops.c): fails, with the difference, when
# the page and the registry drift apart (an operator added, a dtype set changed) so that the page
# is regenerated with the change: loom ops --markdown > docs/operators.md
# Also checks the text listing and bad usage (exit 2).
# Usage: test_ops_doc.sh LOOM SOURCE_ROOT
set -u
LOOM="$1"
SRC="$2"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail=0
if ! "$LOOM" ops --markdown > "$TMP/operators.md"; then
    echo "FAIL: loom ops --markdown exited with $?"
    exit 1
fi
if ! diff -u "$SRC/docs/operators.md" "$TMP/operators.md"; then
    echo "FAIL: docs/operators.md differs from 'loom ops --markdown' (diff above);" \
         "regenerate it: loom ops --markdown > docs/operators.md"
    fail=1
fi
"$LOOM" ops > "$TMP/ops.txt" || { echo "FAIL: loom ops exited with $?"; fail=1; }
# the text form lists the same operators as the page
n_md=$(grep -c '^| [A-Za-z]' "$TMP/operators.md")
n_txt=$(($(wc -l < "$TMP/ops.txt") - 2))
n_md=$((n_md - 1)) # the table's header row
if [ "$n_md" != "$n_txt" ]; then
    echo "FAIL: the page lists $n_md operators, the text $n_txt"
    fail=1
fi
grep -q '^GridSample .*ai\.onnx' "$TMP/ops.txt" || { echo "FAIL: GridSample not listed"; fail=1; }
"$LOOM" ops --bogus > /dev/null 2> "$TMP/err.txt"
st=$?
if [ "$st" != 2 ] || [ "$(wc -l < "$TMP/err.txt")" != 1 ]; then
    echo "FAIL: 'loom ops --bogus' exited $st with $(wc -l < "$TMP/err.txt") lines (want 2, 1)"
    fail=1
fi
[ "$fail" = 0 ] && echo "ok: docs/operators.md matches loom ops --markdown ($n_md operators)"
exit "$fail"
