#!/usr/bin/env python3
"""Fails when a source file includes a header from a layer above its own.

Layers, each may use only those to its left (../shared/DESIGN.md, docs/architecture.md):
    core <- graph <- passes <- scheduler <- serve <- tools
Public headers (include/loom/*.h) are open to every layer. Backends see only
include/loom/backend.h and their own folder, exactly as a third-party plugin does, plus the
headers of backends/common/: helpers any built-in backend may use, which themselves include only
<loom/backend.h>, their own folder and the C library (C11's standard headers). The scheduler may
include a built-in backend's entry header (backends/*/*_backend.h) to start it; nothing outside
backends/ includes backends/common/.
Usage: check-layers.py [SOURCE_ROOT]; prints one line per violation, exit 1 when any.
"""
import os
import re
import sys

LAYERS = ["core", "graph", "passes", "scheduler", "serve", "tools"]
RANK = {name: i for i, name in enumerate(LAYERS)}
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')
COMMON = "backends/common/"
# What backends/common/ may take from the system: the C library's headers (C11, 7.1.2).
C_LIBRARY = {
    "assert.h", "complex.h", "ctype.h", "errno.h", "fenv.h", "float.h", "inttypes.h", "iso646.h",
    "limits.h", "locale.h", "math.h", "setjmp.h", "signal.h", "stdalign.h", "stdarg.h",
    "stdatomic.h", "stdbool.h", "stddef.h", "stdint.h", "stdio.h", "stdlib.h", "stdnoreturn.h",
    "string.h", "tgmath.h", "threads.h", "time.h", "uchar.h", "wchar.h", "wctype.h",
}


def layer_of(path):
    top = path.split("/", 1)[0]
    if top in RANK or top == "backends":
        return top
    if path.startswith("include/loom/"):
        return "public"
    return None


def resolve(root, src, name, quoted):
    """The repository-relative path an include names, or None for a system header."""
    if name.startswith("loom/"):
        return "include/" + name
    if not quoted:
        return None
    for base in (os.path.dirname(src), "", "include"):
        cand = os.path.normpath(os.path.join(base, name))
        if os.path.isfile(os.path.join(root, cand)):
            return cand
    return None  # generated (onnx.pb-c.h, loom_config.h) or a system header


def self_test():
    """The check must catch what it is for: a tree with one violation of each kind."""
    import tempfile
    with tempfile.TemporaryDirectory() as root:
        files = {
            "core/a.h": "",
            "graph/g.c": '#include "scheduler/s.h"\n#include "core/a.h"\n',
            "scheduler/s.h": '#include "backends/cpu/cpu_backend.h"\n#include "backends/cpu/k.h"\n'
                             '#include "backends/common/m.h"\n',
            "passes/p.c": '#include "backends/cpu/cpu_backend.h"\n',
            "backends/cpu/cpu_backend.h": '#include <loom/backend.h>\n',
            "backends/cpu/k.h": '#include "graph/g.h"\n#include <loom/graph.h>\n'
                                '#include "backends/common/m.h"\n#include "../common/m.h"\n',
            "backends/cpu/k.c": '#include "backends/common/m.c"\n#include "k.h"\n',
            "backends/common/m.h": '#include <loom/backend.h>\n#include <stdint.h>\n',
            "backends/common/m.c": '#include "m.h"\n#include <string.h>\n'
                                   '#include "backends/cpu/k.h"\n#include <loom/graph.h>\n'
                                   '#include <CL/cl.h>\n#include "graph/g.h"\n',
            "graph/g.h": "",
            "include/loom/backend.h": "",
            "include/loom/graph.h": "",
        }
        for name, text in files.items():
            os.makedirs(os.path.join(root, os.path.dirname(name)), exist_ok=True)
            with open(os.path.join(root, name), "w") as fh:
                fh.write(text)
        found = check(root)
    want = ["graph/g.c:1", "scheduler/s.h:2", "scheduler/s.h:3", "passes/p.c:1",
            "backends/cpu/k.h:1", "backends/cpu/k.h:2", "backends/cpu/k.c:1",
            "backends/common/m.c:3", "backends/common/m.c:4", "backends/common/m.c:5",
            "backends/common/m.c:6"]
    got = [line.split(": ")[0] for line in found]
    if sorted(got) != sorted(want):
        print("self-test failed: expected violations %s, found %s" % (want, found))
        return False
    return True


def main():
    if not self_test():
        return 1
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                           os.path.join(os.path.dirname(__file__), ".."))
    bad = check(root)
    for line in bad:
        print(line)
    print("layers: %d violation%s" % (len(bad), "" if len(bad) == 1 else "s"))
    return 1 if bad else 0


def check(root):
    bad = []
    for top in LAYERS + ["backends"]:
        for dirpath, _, files in os.walk(os.path.join(root, top)):
            for f in sorted(files):
                if not f.endswith((".c", ".h")):
                    continue
                src = os.path.relpath(os.path.join(dirpath, f), root)
                mine = layer_of(src)
                with open(os.path.join(root, src), encoding="utf-8", errors="replace") as fh:
                    for lineno, line in enumerate(fh, 1):
                        m = INCLUDE.match(line)
                        if not m:
                            continue
                        dep = resolve(root, src, m.group(2), m.group(1) == '"')
                        if dep is None:
                            if (src.startswith(COMMON) and m.group(1) == "<" and
                                    m.group(2) not in C_LIBRARY):
                                bad.append("%s:%d: includes <%s> (backends/common/ includes only "
                                           "loom/backend.h and the C library)"
                                           % (src, lineno, m.group(2)))
                            continue
                        theirs = layer_of(dep)
                        why = None
                        if mine == "backends":
                            own = src.split("/")[1]
                            shared = (own != "common" and dep.startswith(COMMON) and
                                      dep.endswith(".h"))
                            if dep != "include/loom/backend.h" and not dep.startswith(
                                    "backends/%s/" % own) and not shared:
                                why = ("backends/common/ includes only loom/backend.h and the C "
                                       "library" if own == "common" else
                                       "a backend sees only include/loom/backend.h, its own "
                                       "folder and backends/common/'s headers")
                        elif theirs == "backends":
                            if not (mine == "scheduler" and re.match(
                                    r"backends/[^/]+/[^/]+_backend\.h$", dep)):
                                why = "only the scheduler starts backends, through their entry header"
                        elif theirs in RANK and RANK[theirs] > RANK[mine]:
                            why = "%s is above %s" % (theirs, mine)
                        if why:
                            bad.append("%s:%d: includes %s (%s)" % (src, lineno, dep, why))
    return bad


if __name__ == "__main__":
    sys.exit(main())
