#!/usr/bin/env python3
"""Fails when a source file includes a header from a layer above its own.

Layers, each may use only those to its left (../shared/DESIGN.md, docs/architecture.md):
    core <- graph <- passes <- scheduler <- serve <- tools
Public headers (include/loom/*.h) are open to every layer. Backends see only
include/loom/backend.h and their own folder, exactly as a third-party plugin does; the scheduler
may include a built-in backend's entry header (backends/*/*_backend.h) to start it.
Usage: check-layers.py [SOURCE_ROOT]; prints one line per violation, exit 1 when any.
"""
import os
import re
import sys

LAYERS = ["core", "graph", "passes", "scheduler", "serve", "tools"]
RANK = {name: i for i, name in enumerate(LAYERS)}
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')


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
            "scheduler/s.h": '#include "backends/cpu/cpu_backend.h"\n#include "backends/cpu/k.h"\n',
            "passes/p.c": '#include "backends/cpu/cpu_backend.h"\n',
            "backends/cpu/cpu_backend.h": '#include <loom/backend.h>\n',
            "backends/cpu/k.h": '#include "graph/g.h"\n#include <loom/graph.h>\n',
            "graph/g.h": "",
            "include/loom/backend.h": "",
            "include/loom/graph.h": "",
        }
        for name, text in files.items():
            os.makedirs(os.path.join(root, os.path.dirname(name)), exist_ok=True)
            with open(os.path.join(root, name), "w") as fh:
                fh.write(text)
        found = check(root)
    want = ["graph/g.c:1", "scheduler/s.h:2", "passes/p.c:1", "backends/cpu/k.h:1",
            "backends/cpu/k.h:2"]
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
                            continue
                        theirs = layer_of(dep)
                        why = None
                        if mine == "backends":
                            own = src.split("/")[1]
                            if dep != "include/loom/backend.h" and not dep.startswith(
                                    "backends/%s/" % own):
                                why = "a backend sees only include/loom/backend.h and its own folder"
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
