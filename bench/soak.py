#!/usr/bin/python3
"""Soak `loom serve` (issue 19): find the maximum QPS at a p99 target, then hold an open-loop
Poisson load at a share of it for a long while, sampling the server's resident memory and open
file descriptors, and report errors, memory growth after warm-up and descriptors left open once the load has stopped, against before it started.

  bench/soak.py LOOM_BINARY [--model SPEC] [--minutes M] [--share S] [--p99 MS] [--warmup S]
                            [--max-qps Q]

SPEC defaults to the CNN fixture with batching and a result cache that churns:
  cnn=tests/fixtures/cnn/model.onnx:max_batch=8,cache_mb=4
and the load uses 4,096 distinct request bodies (so the cache both hits and evicts).
Defaults: 10 minutes at 80% of the maximum QPS with p99 <= 50 ms; memory growth is measured
from the first sample after --warmup seconds (60) to the last. --max-qps skips the search.
Goals (the issue's): zero errors, resident memory growth <= 5% after warm-up, no descriptor
growth. Prints markdown; exit 1 when a goal is missed.
"""
import json, os, re, signal, subprocess, sys, threading, time

args = sys.argv[1:]
LOOM = os.path.realpath(args.pop(0))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def opt(name, default):
    if name in args:
        i = args.index(name)
        v = args[i + 1]
        del args[i:i + 2]
        return type(default)(v)
    return default


SPEC = opt("--model", f"cnn={ROOT}/tests/fixtures/cnn/model.onnx:max_batch=8,cache_mb=4")
MINUTES = opt("--minutes", 10.0)
SHARE = opt("--share", 0.8)
P99 = opt("--p99", 50.0)
WARMUP = opt("--warmup", 60.0)
MAXQ = opt("--max-qps", 0.0)
NAME = SPEC.split("=", 1)[0]

p = subprocess.Popen([LOOM, "serve", "--port", "0", "--model", SPEC],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
m = re.search(r":(\d+)$", p.stdout.readline().strip())
if not m:
    raise SystemExit("server did not start: " + p.stderr.read())
URL = f"http://127.0.0.1:{m.group(1)}/v2/models/{NAME}"


def loadgen(*a):
    r = subprocess.run([LOOM, "loadgen", URL, "--json", "--quiet", "--binary", "--distinct",
                        "4096", *a], capture_output=True, text=True)
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise SystemExit("loadgen: " + r.stderr)


def sample():
    rss = 0
    with open(f"/proc/{p.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{p.pid}/fd"))


fd_idle0 = sample()[1]   # before any load: the listening socket and the server's own files
if MAXQ <= 0:
    MAXQ = loadgen("--find-max-qps", "--p99", str(P99), "--duration", "3")["max_qps"]
rate = MAXQ * SHARE
seconds = MINUTES * 60
samples = []
done = threading.Event()


def sampler():
    t0 = time.time()
    while not done.is_set():
        samples.append((time.time() - t0, *sample()))
        done.wait(5)


th = threading.Thread(target=sampler)
th.start()
r = loadgen("--rate", f"{rate:.1f}", "--duration", f"{seconds:.0f}")
done.set()
th.join()
time.sleep(2)            # the load generator's connections close
fd_idle1 = sample()[1]
p.send_signal(signal.SIGTERM)
rc = p.wait(timeout=120)

after = [s for s in samples if s[0] >= WARMUP] or samples
rss0, rss1 = after[0][1], after[-1][1]
growth = (rss1 / rss0 - 1) * 100
fd_after = [s[2] for s in after]
errors = sum(r.get("errors", {}).values())
print(f"### Soak: {NAME}, {MINUTES:g} min at {SHARE*100:.0f}% of {MAXQ:.0f} QPS "
      f"({rate:.0f} QPS, open loop, Poisson)\n")
print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end\n")
print("| figure | value | goal |")
print("|---|---|---|")
print(f"| requests sent / answered ok | {r['sent']} / {r['ok']} | |")
print(f"| errors | {errors} {json.dumps(r.get('errors', {}))} | 0 |")
print(f"| achieved QPS | {r['achieved_qps']:.0f} | |")
lat = r["latency_ms"]
print(f"| latency p50 / p99 / p99.9 ms | {lat['p50']:.2f} / {lat['p99']:.2f} / {lat['p99.9']:.2f} | |")
print(f"| resident memory at {after[0][0]:.0f} s / at the end | {rss0/1024:.1f} MiB / "
      f"{rss1/1024:.1f} MiB ({growth:+.1f}%) | <= +5% |")
print(f"| resident memory min / max after warm-up | {min(s[1] for s in after)/1024:.1f} / "
      f"{max(s[1] for s in after)/1024:.1f} MiB | |")
print(f"| open descriptors under load, min / max after warm-up | {min(fd_after)} / "
      f"{max(fd_after)} | |")
print(f"| open descriptors idle, before / after the soak | {fd_idle0} / {fd_idle1} | no growth |")
print(f"| server exit status after SIGTERM | {rc} | 0 |")
ok = errors == 0 and growth <= 5 and fd_idle1 <= fd_idle0 and rc == 0
print(f"\n{'All goals met' if ok else 'GOAL MISSED'} ({len(samples)} samples every 5 s).")
sys.exit(0 if ok else 1)
