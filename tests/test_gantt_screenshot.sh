#!/bin/bash
# The Gantt chart of `loom profile --gantt` as a browser draws it: headless Chromium renders the
# SVG to a PNG, and the PNG (decoded here with the Python standard library only) must not be
# blank: a white background with the op-class colours of the nodes on it. Skips (exit 77, meson's
# skip code) where chromium is not installed.
# Usage: test_gantt_screenshot.sh LOOM
set -u
LOOM="$1"
CHROMIUM=""
for c in chromium chromium-browser; do
    if command -v "$c" >/dev/null 2>&1; then
        CHROMIUM="$c"
        break
    fi
done
if [ -z "$CHROMIUM" ]; then
    echo "SKIP: chromium not installed"
    exit 77
fi
PY=/usr/bin/python3
if [ ! -x "$PY" ]; then
    echo "SKIP: /usr/bin/python3 not installed (needed to decode the PNG)"
    exit 77
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

if ! "$LOOM" profile --model attention --repeat 1 --warmup 0 \
        --gantt "$TMP/g.svg" >"$TMP/out" 2>&1; then
    echo "FAIL loom profile --gantt"; cat "$TMP/out"; exit 1
fi
# Chromium wants a writable profile folder and home; none of the user's is touched.
HOME="$TMP" timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu \
    --user-data-dir="$TMP/chromium" --hide-scrollbars --screenshot="$TMP/g.png" \
    --window-size=1200,420 "file://$TMP/g.svg" >"$TMP/chromium.log" 2>&1
if [ ! -s "$TMP/g.png" ]; then
    echo "FAIL chromium wrote no screenshot"; tail -5 "$TMP/chromium.log"; exit 1
fi
# A run of a few milliseconds under a 300 ms target (issue 17: the run was a sliver in the first
# 2% of the picture): the nodes must spread over most of the plot's width.
if ! "$LOOM" profile --model attention --device cpu --repeat 1 --warmup 0 \
        --target-latency 300ms --gantt "$TMP/far.svg" >"$TMP/out" 2>&1; then
    echo "FAIL loom profile --gantt --target-latency 300ms"; cat "$TMP/out"; exit 1
fi
HOME="$TMP" timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu \
    --user-data-dir="$TMP/chromium" --hide-scrollbars --screenshot="$TMP/far.png" \
    --window-size=1200,420 "file://$TMP/far.svg" >"$TMP/chromium.log" 2>&1
if [ ! -s "$TMP/far.png" ]; then
    echo "FAIL chromium wrote no screenshot of the far-target chart"; exit 1
fi
"$PY" - "$TMP/g.png" "$TMP/far.png" <<'PY'
import struct, sys, zlib

def decode_png(path):
    """Width, height, channels and rows of bytes of an 8-bit, non-interlaced PNG."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, head = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            head = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = head
    assert depth == 8 and interlace == 0, head
    ch = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    raw, stride, rows, prev = zlib.decompress(idat), w * ch, [], bytearray(w * ch)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - ch] if i >= ch else 0
            b = prev[i]
            c = prev[i - ch] if i >= ch else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        prev = line
    return w, h, ch, rows

w, h, ch, rows = decode_png(sys.argv[1])
assert w >= 600 and h >= 200, (w, h)
colours, coloured, dark = set(), 0, 0
for line in rows:
    for x in range(0, w * ch, ch):
        px = tuple(line[x:x + 3]) if ch >= 3 else (line[x],) * 3
        colours.add(px)
        if max(px) - min(px) > 60:  # saturated: a node's op-class colour, the target line
            coloured += 1
        if max(px) < 100:           # text and axis
            dark += 1
total = w * h
print("screenshot %dx%d: %d colours, %.1f%% coloured, %.1f%% dark"
      % (w, h, len(colours), 100.0 * coloured / total, 100.0 * dark / total))
assert len(colours) > 20, "blank: %d colours" % len(colours)
assert coloured > total * 0.002, "no coloured node rectangles"
assert dark > total * 0.001, "no text"

# The far-target chart: one lane (y 40 to 66 in the SVG), plot from x 170 to 1170. Where do
# pixels of the op-class colours reach on it?
w, h, ch, rows = decode_png(sys.argv[2])
classes = [(0x4e, 0x79, 0xa7), (0x59, 0xa1, 0x4f), (0xf2, 0x8e, 0x2b), (0xb0, 0x7a, 0xa1),
           (0xed, 0xc9, 0x48), (0x9e, 0x9e, 0x9e)]
right = 0
for y in range(44, 62):
    line = rows[y]
    for x in range(170, min(w, 1170)):
        px = tuple(line[x * ch:x * ch + 3])
        if any(sum(abs(a - b) for a, b in zip(px, c)) < 60 for c in classes):
            right = max(right, x)
print("far target: nodes reach x=%d of the plot's 170..1170" % right)
assert right > 170 + 0.6 * 1000, "the run is squeezed into the left of the chart (x <= %d)" % right
PY
rc=$?
if [ "$rc" -ne 0 ]; then
    echo "FAIL the screenshot of the Gantt chart is blank or unreadable"
    exit 1
fi
echo "ok   the Gantt chart renders in Chromium"
