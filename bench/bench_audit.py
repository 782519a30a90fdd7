#!/usr/bin/python3
"""What the audit trail costs a server (issue 20), measured two ways against `loom serve`.

  bench/bench_audit.py LOOM_BINARY OUT_DIR [--rounds N] [--rate QPS] [--p99 MS] [--step S]
                       [--baseline LOOM_BINARY2] [MODEL.onnx ...]

For each model (default: the digits full classifier, tests/fixtures/digits/full.onnx), and
rounds interleaving the configurations so that a change in the machine's load hits all alike:

1. Server CPU per request: the server under an open-loop Poisson load at a fixed rate below
   its capacity (--rate, default 2000 QPS), its user+system CPU time over the run (from
   /proc/PID/stat) divided by the requests answered. Robust on a shared machine: it counts
   work, not waiting. Configurations: audit off, on (synchronous=NORMAL), on (FULL).
2. Maximum QPS at the p99 target (`loom loadgen --find-max-qps --p99 MS`, --step seconds a
   step, default 3), audit off and on (NORMAL): each round's figures, the best and the median
   of the rounds, and the median of the rounds' own on/off ratios (a round's two searches run
   minutes apart at most: the paired ratio is the figure least moved by this VM's slow and
   fast phases, which change a search's result by 15% either way).

With --baseline, every round runs every configuration with LOOM_BINARY2 too (interleaved:
a build before a change against the one after it, on a shared machine), rows labelled
"base".

Then `loom audit verify` on every database written (each binary verifies its own). Prints
markdown on stdout.
"""
import json, os, re, signal, statistics, subprocess, sys, time

args = sys.argv[1:]
LOOM = os.path.realpath(args.pop(0))
OUT = args.pop(0)


def opt(name, default):
    if name in args:
        i = args.index(name)
        v = args[i + 1]
        del args[i:i + 2]
        return type(default)(v)
    return default


ROUNDS = opt("--rounds", 3)
RATE = opt("--rate", 2000.0)
P99 = opt("--p99", 20.0)
STEP = opt("--step", 3.0)
BASE = opt("--baseline", "")
BINS = {"": LOOM}
if BASE:
    BINS = {"": LOOM, "base ": os.path.realpath(BASE)}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = args or [os.path.join(ROOT, "tests/fixtures/digits/full.onnx")]
os.makedirs(OUT, exist_ok=True)
TICK = os.sysconf("SC_CLK_TCK")
CONFIGS = {"off": [], "normal": ["--audit-sync", "normal"], "full": ["--audit-sync", "full"]}


def serve(loom, model, config, db):
    extra = [] if config == "off" else ["--audit", db, *CONFIGS[config]]
    p = subprocess.Popen([loom, "serve", "--port", "0", "--model", f"m={model}", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    m = re.search(r":(\d+)$", p.stdout.readline().strip())
    if not m:
        raise SystemExit("server did not start: " + p.stderr.read())
    return p, int(m.group(1))


def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=120)


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK   # utime + stime


def loadgen(port, *a):
    r = subprocess.run([LOOM, "loadgen", f"http://127.0.0.1:{port}/v2/models/m", "--json",
                        "--quiet", "--binary", *a], capture_output=True, text=True)
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise SystemExit("loadgen: " + r.stderr)


print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start\n")
dbs = []
for model in MODELS:
    name = os.path.basename(model)
    cpu = {b + c: [] for b in BINS for c in CONFIGS}
    qps = {b + c: [] for b in BINS for c in ("off", "normal")}
    loads = []
    for rnd in range(ROUNDS):
        loads.append(os.getloadavg()[0])
        for b, c in [(b, c) for c in CONFIGS for b in BINS]:
            db = os.path.join(OUT, f"{name}-{b.strip() or 'new'}-{c}-{rnd}.db")
            for sfx in ("", "-wal", "-shm", "-pending"):
                if os.path.exists(db + sfx):
                    os.remove(db + sfx)
            p, port = serve(BINS[b], model, c, db)
            loadgen(port, "--concurrency", "2", "--duration", "1")   # warm up
            c0 = cpu_s(p.pid)
            r = loadgen(port, "--rate", str(RATE), "--duration", "5")
            c1 = cpu_s(p.pid)
            ok = r["ok"]
            cpu[b + c].append((c1 - c0) / max(ok, 1) * 1e6)
            if b + c in qps:
                q = loadgen(port, "--find-max-qps", "--p99", str(P99), "--duration", str(STEP))
                qps[b + c].append(q["max_qps"])
            stop(p)
            if c != "off":
                dbs.append((BINS[b], db))
    print(f"### {name}\n")
    print("load average at each round's start: " + ", ".join(f"{x:.1f}" for x in loads) + "\n")
    print(f"Server CPU per request at {RATE:.0f} QPS (open loop, 5 s; user+system of the "
          f"server process / requests answered), {ROUNDS} rounds:\n")
    print("| audit | CPU us/request (each round) | median | vs off |")
    print("|---|---|---|---|")
    med = {c: sorted(v)[len(v) // 2] for c, v in cpu.items()}
    for c, v in cpu.items():
        off = "base off" if c.startswith("base ") else "off"
        print(f"| {c} | {', '.join(f'{x:.1f}' for x in v)} | {med[c]:.1f} | "
              f"{(med[c] / med[off] - 1) * 100:+.1f}% |")
    print(f"\nMaximum QPS with p99 <= {P99:g} ms (`loom loadgen --find-max-qps`, {STEP:g} s "
          f"steps):\n")
    print("| audit | max QPS (each round) | best | vs off | median | vs off | "
          "paired on/off per round | median paired |")
    print("|---|---|---|---|---|---|---|---|")
    best = {c: max(v) for c, v in qps.items()}
    medq = {c: statistics.median(v) for c, v in qps.items()}
    for c, v in qps.items():
        off = "base off" if c.startswith("base ") else "off"
        pairs = [x / y - 1 for x, y in zip(v, qps[off])]
        print(f"| {c} | {', '.join(f'{x:.0f}' for x in v)} | {best[c]:.0f} | "
              f"{(best[c] / best[off] - 1) * 100:+.1f}% | {medq[c]:.0f} | "
              f"{(medq[c] / medq[off] - 1) * 100:+.1f}% | "
              f"{', '.join(f'{100 * x:+.1f}%' for x in pairs)} | "
              f"{100 * statistics.median(pairs):+.1f}% |")
    print()

bad = 0
for loom, db in dbs:
    r = subprocess.run([loom, "audit", "verify", db], capture_output=True, text=True)
    bad += r.returncode != 0
print(f"`loom audit verify` on the {len(dbs)} databases written: "
      f"{len(dbs) - bad} OK, {bad} failed")
print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
