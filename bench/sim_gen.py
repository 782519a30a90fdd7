#!/usr/bin/python3
"""Generate abstract DAG instances for `loom sim` (docs/sim.md): Topcuoglu-style random DAGs,
Gaussian elimination, FFT, fork-join, transformer and mixture-of-experts shapes, with a target
communication-to-computation ratio (CCR), 2-4 heterogeneous devices and some tasks a device
cannot run (null costs).

usage: sim_gen.py OUTDIR [--seed N] [--big N]   (--big N: also OUTDIR/big_N.json, N tasks, 4 devices)

Deterministic for a seed. Only the standard library and NumPy.
"""
import json
import math
import os
import sys

import numpy as np

# Device kinds: (name prefix, relative speed for compute-heavy tasks, for memory-bound tasks).
KINDS = [("cpu", 1.0, 1.0), ("gpu", 8.0, 3.0), ("npu", 12.0, 1.5), ("gpu", 5.0, 2.5)]


def devices(rng, nd):
    devs = [{"name": f"{KINDS[i][0]}{i}", "kind": KINDS[i][0]} for i in range(nd)]
    bw = [[None if i == j else float(rng.uniform(0.8e10, 2.4e10)) for j in range(nd)] for i in range(nd)]
    lat = [[0.0 if i == j else float(rng.uniform(5e-6, 2e-5)) for j in range(nd)] for i in range(nd)]
    for i in range(nd):  # symmetric links
        for j in range(i):
            bw[i][j] = bw[j][i]
            lat[i][j] = lat[j][i]
    return devs, bw, lat


def costs(rng, work, heavy, nd, beta=0.5, null_p=0.08):
    """Per-task cost rows: WORK seconds on the CPU, sped up per device kind, with heterogeneity
    BETA; the NPU (kind 2) cannot run some non-heavy tasks."""
    rows = []
    for w, h in zip(work, heavy):
        row = []
        for d in range(nd):
            speed = KINDS[d][1] if h else KINDS[d][2]
            c = w / speed * rng.uniform(1 - beta / 2, 1 + beta / 2)
            if d > 0 and not h and rng.random() < null_p:
                c = None
            row.append(None if c is None else float(c))
        rows.append(row)
    return rows


def finish(rng, name, n, edges, work, heavy, nd, ccr):
    devs, bw, lat = devices(rng, nd)
    rows = costs(rng, work, heavy, nd)
    # Scale bytes so that mean transfer time / mean task cost = CCR.
    mean_cost = np.mean([np.mean([c for c in r if c is not None]) for r in rows])
    mean_bw = np.mean([bw[i][j] for i in range(nd) for j in range(nd) if i != j])
    mean_lat = np.mean([lat[i][j] for i in range(nd) for j in range(nd) if i != j])
    raw = rng.uniform(0.5, 1.5, size=len(edges))
    target = ccr * mean_cost
    scale = max(target - mean_lat, target * 0.05) * mean_bw / max(np.mean(raw), 1e-12)
    perm = rng.permutation(n)  # ids not in topological order, as in the public samples
    tasks = [{"id": f"t{perm[i]}", "cost": rows[i]} for i in range(n)]
    ed = [{"from": f"t{perm[a]}", "to": f"t{perm[b]}", "bytes": float(round(r * scale))}
          for (a, b), r in zip(edges, raw)]
    return name, {"devices": devs, "bandwidth": bw, "latency": lat, "tasks": tasks, "edges": ed}


def random_dag(rng, v, alpha=1.0, out_deg=3):
    height = max(2, int(round(math.sqrt(v) / alpha)))
    level = sorted(rng.integers(0, height, size=v))
    level[0] = 0
    edges = set()
    for i in range(v):
        later = [j for j in range(v) if level[j] > level[i]]
        if later:
            k = min(len(later), int(rng.integers(1, out_deg + 1)))
            near = [j for j in later if level[j] <= level[i] + 2] or later
            for j in rng.choice(near, size=min(k, len(near)), replace=False):
                edges.add((i, int(j)))
    for j in range(v):  # every task but level 0 has a predecessor
        if level[j] > 0 and not any(b == j for _, b in edges):
            prev = [i for i in range(v) if level[i] == level[j] - 1] or [0]
            edges.add((int(rng.choice(prev)), j))
    work = rng.uniform(1e-4, 2e-3, size=v)
    heavy = rng.random(v) < 0.6
    return v, sorted(edges), work, heavy


def gauss(rng, m):
    ids = {}
    edges = []
    n = 0
    for k in range(m - 1):
        ids[("p", k)] = n
        n += 1
        for j in range(k + 1, m):
            ids[("u", k, j)] = n
            n += 1
    for k in range(m - 1):
        p = ids[("p", k)]
        for j in range(k + 1, m):
            u = ids[("u", k, j)]
            edges.append((p, u))
            if k + 1 < m - 1:
                if j == k + 1:
                    edges.append((u, ids[("p", k + 1)]))
                else:
                    edges.append((u, ids[("u", k + 1, j)]))
    work = np.array([4e-4 if key[0] == "p" else 1e-3 * (m - key[1]) / m for key in ids], dtype=float)
    heavy = np.array([key[0] == "u" for key in ids])
    return n, edges, work, heavy


def fft(rng, m):
    # Recursive-call tree (2m-1 tasks) then log2(m) butterfly stages of m tasks.
    edges = []
    n_tree = 2 * m - 1
    for i in range(m - 1):
        edges += [(i, 2 * i + 1), (i, 2 * i + 2)]
    stages = int(math.log2(m))
    base = n_tree
    prev = list(range(m - 1, n_tree))
    for s in range(stages):
        cur = list(range(base, base + m))
        span = 1 << s
        for i in range(m):
            edges.append((prev[i], cur[i]))
            edges.append((prev[i ^ span], cur[i]))
        prev, base = cur, base + m
    n = base
    work = np.concatenate([np.full(n_tree, 3e-4), np.full(n - n_tree, 6e-4)]) * rng.uniform(0.8, 1.2, n)
    heavy = np.arange(n) >= n_tree
    return n, sorted(set(edges)), work, heavy


def forkjoin(rng, stages, width):
    edges = []
    n = 1
    join = 0
    for _ in range(stages):
        ws = list(range(n, n + width))
        n += width
        j = n
        n += 1
        edges += [(join, w) for w in ws] + [(w, j) for w in ws]
        join = j
    work = rng.uniform(2e-4, 2e-3, n)
    heavy = rng.random(n) < 0.7
    return n, edges, work, heavy


def transformer(rng, layers, heads):
    edges = []
    n = 1  # embedding
    x = 0
    work, heavy = [2e-4], [False]

    def add(w, h):
        nonlocal n
        work.append(w)
        heavy.append(h)
        n += 1
        return n - 1

    for _ in range(layers):
        ln = add(5e-5, False)
        edges.append((x, ln))
        outs = []
        for _ in range(heads):
            q, k, v = add(2e-4, True), add(2e-4, True), add(2e-4, True)
            edges += [(ln, q), (ln, k), (ln, v)]
            att = add(3e-4, True)
            sm = add(6e-5, False)
            ctx = add(2e-4, True)
            edges += [(q, att), (k, att), (att, sm), (sm, ctx), (v, ctx)]
            outs.append(ctx)
        proj = add(3e-4, True)
        edges += [(o, proj) for o in outs]
        res = add(3e-5, False)
        edges += [(proj, res), (x, res)]
        ln2 = add(5e-5, False)
        f1 = add(8e-4, True)
        act = add(6e-5, False)
        f2 = add(8e-4, True)
        res2 = add(3e-5, False)
        edges += [(res, ln2), (ln2, f1), (f1, act), (act, f2), (f2, res2), (res, res2)]
        x = res2
    return n, edges, np.array(work) * rng.uniform(0.8, 1.2, n), np.array(heavy)


def moe(rng, layers, experts):
    edges = []
    work, heavy = [2e-4], [False]
    n = 1
    x = 0

    def add(w, h):
        nonlocal n
        work.append(w)
        heavy.append(h)
        n += 1
        return n - 1

    for _ in range(layers):
        att = add(6e-4, True)
        edges.append((x, att))
        router = add(5e-5, False)
        edges.append((att, router))
        outs = []
        for _ in range(experts):
            e1 = add(4e-4 * rng.uniform(0.3, 1.7), True)
            act = add(4e-5, False)
            e2 = add(4e-4 * rng.uniform(0.3, 1.7), True)
            edges += [(router, e1), (att, e1), (e1, act), (act, e2)]
            outs.append(e2)
        comb = add(8e-5, False)
        edges += [(o, comb) for o in outs] + [(router, comb)]
        x = comb
    return n, edges, np.array(work) * rng.uniform(0.8, 1.2, n), np.array(heavy)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    seed, big = 7, 0
    args = sys.argv[2:]
    while args:
        if args[0] == "--seed":
            seed = int(args[1])
        elif args[0] == "--big":
            big = int(args[1])
        args = args[2:]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed)
    plan = []
    ccrs = [0.1, 0.5, 1.0, 3.0, 10.0]
    for i, ccr in enumerate(ccrs):
        nd = 2 + (i % 3)
        plan.append((f"rand_v040_c{ccr:g}", lambda r: random_dag(r, 40), nd, ccr))
        plan.append((f"rand_v120_c{ccr:g}", lambda r: random_dag(r, 120, alpha=0.7), 2 + ((i + 1) % 3), ccr))
        plan.append((f"rand_v350_c{ccr:g}", lambda r: random_dag(r, 350, alpha=1.5), 2 + ((i + 2) % 3), ccr))
    for ccr in (0.5, 3.0):
        plan.append((f"gauss_m12_c{ccr:g}", lambda r: gauss(r, 12), 3, ccr))
        plan.append((f"fft_m32_c{ccr:g}", lambda r: fft(r, 32), 4, ccr))
        plan.append((f"forkjoin_s3w12_c{ccr:g}", lambda r: forkjoin(r, 3, 12), 2, ccr))
        plan.append((f"transformer_l2h4_c{ccr:g}", lambda r: transformer(r, 2, 4), 3, ccr))
        plan.append((f"moe_l2e8_c{ccr:g}", lambda r: moe(r, 2, 8), 4, ccr))
    for k, ccr in enumerate([0.2, 1.0, 5.0, 0.5, 2.0, 8.0]):
        plan.append((f"small_rand_v{8 + k}_c{ccr:g}", lambda r, v=8 + k: random_dag(r, v), 2 + k % 3, ccr))
    plan.append(("small_gauss_m4_c2", lambda r: gauss(r, 4), 3, 2.0))
    plan.append(("small_forkjoin_s1w8_c1", lambda r: forkjoin(r, 1, 8), 3, 1.0))
    for name, make, nd, ccr in plan:
        n, edges, work, heavy = make(rng)
        fname, inst = finish(rng, name, n, edges, work, heavy, nd, ccr)
        with open(os.path.join(out, fname + ".json"), "w") as f:
            json.dump(inst, f)
    if big:
        n, edges, work, heavy = random_dag_big(rng, big)
        _, inst = finish(rng, "big", n, edges, work, heavy, 4, 1.0)
        with open(os.path.join(out, f"big_{big}.json"), "w") as f:
            json.dump(inst, f)


def random_dag_big(rng, v):
    """A layered random DAG of V tasks (about 3 edges per task) built in linear time."""
    height = int(math.sqrt(v))
    level = np.sort(rng.integers(0, height, size=v))
    level[0] = 0
    starts = np.searchsorted(level, np.arange(height + 1))
    edges = set()
    for j in range(v):
        lv = level[j]
        if lv == 0:
            continue
        lo, hi = starts[max(0, lv - 2)], starts[lv]
        if hi <= lo:
            continue
        for i in rng.integers(lo, hi, size=min(3, hi - lo)):
            edges.add((int(i), j))
    work = rng.uniform(1e-4, 2e-3, size=v)
    heavy = rng.random(v) < 0.6
    return v, sorted(edges), work, heavy


if __name__ == "__main__":
    main()
