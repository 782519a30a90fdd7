#!/usr/bin/python3
"""QoS, cascade and audit figures (issue 20) against `loom serve` on loopback.

  bench/bench_qos.py LOOM_BINARY OUT_DIR [--quick] [--sections 1,2,3]

1. Cascade on the digits held-out 30% (tests/fixtures/digits): every image asked of the full
   and the lite variant (parameters.variant) -> accuracy, and for each threshold the cascade's
   accuracy and escalated fraction (the cascade is deterministic: the lite answer decides, the
   full one replaces it); then real cascade runs (mode=cascade) at chosen thresholds, local and
   with the full model behind a second `loom serve` (remote=), measuring mean latency and
   checking the accuracy matches. Writes cascade.svg (accuracy against escalated fraction).
2. QoS under overload: a full variant whose run time dominates the server's own work (the
   digits full model is a few microseconds, below the HTTP front end's cost, so a wider MLP
   with the same inputs and outputs is generated: 64 -> 2048 -> 2048 -> 2048 -> 10 (widths from
   $LOOM_QOS_HEAVY, e.g. 64,8192,8192,10), seeded random
   weights; only its cost matters here) with the digits lite model as its lite variant. Its
   capacity by `loom loadgen --find-max-qps` (mode=full, p99 <= the latency target), then
   open-loop rates 50% .. 200% of it with mode=auto and mode=full (switching off): p99 and the
   share served by lite.
3. Audit cost: closed-loop throughput with --audit on and off.
Prints markdown on stdout.
"""
import json, os, re, signal, subprocess, sys, time, urllib.request
import numpy as np

LOOM = os.path.realpath(sys.argv[1])
OUT = sys.argv[2]
QUICK = "--quick" in sys.argv
SECTIONS = sys.argv[sys.argv.index("--sections") + 1].split(",") if "--sections" in sys.argv \
    else ["1", "2", "3"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
D = os.path.join(ROOT, "tests/fixtures/digits")
os.makedirs(OUT, exist_ok=True)
X = np.load(f"{D}/test_x.npy")
Y = np.load(f"{D}/test_y.npy")


def serve(model_spec, *extra):
    p = subprocess.Popen([LOOM, "serve", "--port", "0", "--model", model_spec, *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    m = re.search(r":(\d+)$", line.strip())
    if not m:
        raise SystemExit("server did not start: " + p.stderr.read())
    return p, int(m.group(1))


def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)


def infer(port, i, variant=None):
    body = {"id": str(i), "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 64],
                                      "data": X[i].tolist()}]}
    if variant:
        body["parameters"] = {"variant": variant}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/digits/infer",
                                 json.dumps(body).encode(), {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    d = json.loads(urllib.request.urlopen(req).read())
    return d, time.perf_counter() - t0


def metric(port, name, **labels):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.split()[-1])
    return total


def loadgen(port, *args):
    r = subprocess.run([LOOM, "loadgen", f"http://127.0.0.1:{port}/v2/models/digits", "--json",
                        "--quiet", *args], capture_output=True, text=True)
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise SystemExit("loadgen: " + r.stderr)


n = len(Y)
print(f"machine: 2 shared cores, load average {os.getloadavg()[0]:.1f} at start "
      f"(other engineers' builds and tests run at the same time)\n")

if "1" in SECTIONS:
    # ---- 1. cascade ------------------------------------------------------------------------------
    p, port = serve(f"digits={D}/full.onnx:lite={D}/lite.onnx,mode=full")
    full_p, lite_p, full_t, lite_t = [], [], [], []
    for i in range(n):
        d, t = infer(port, i, "full"); full_p.append(d["outputs"][0]["data"]); full_t.append(t)
        d, t = infer(port, i, "lite"); lite_p.append(d["outputs"][0]["data"]); lite_t.append(t)
    stop(p)
    full_p, lite_p = np.array(full_p), np.array(lite_p)
    acc_full = float((full_p.argmax(1) == Y).mean())
    acc_lite = float((lite_p.argmax(1) == Y).mean())
    conf = lite_p.max(1)
    print("### Cascade on the digits held-out 30% (540 images), max softmax probability\n")
    print(f"Command: `bench/bench_qos.py build/tools/loom OUT` (each image asked of each variant "
          f"over HTTP, one at a time)\n")
    print("| configuration | accuracy | escalated | mean latency (ms, HTTP, modelled) |")
    print("|---|---|---|---|")
    print(f"| lite only | {acc_lite*100:.2f}% | 0% | {np.mean(lite_t)*1e3:.2f} |")
    print(f"| full only | {acc_full*100:.2f}% | 100% | {np.mean(full_t)*1e3:.2f} |")
    rows = []
    for th in [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.98, 0.99]:
        esc = conf < th
        pred = np.where(esc, full_p.argmax(1), lite_p.argmax(1))
        acc = float((pred == Y).mean())
        lat = float(np.mean(np.array(lite_t) + np.where(esc, full_t, 0)))
        rows.append((th, acc, float(esc.mean()), lat))
        print(f"| cascade t={th} | {acc*100:.2f}% | {esc.mean()*100:.1f}% | {lat*1e3:.2f} |")
    good = [r for r in rows if r[1] >= acc_full - 0.005 and r[2] <= 0.30]
    print()
    print(("Goal (within 0.5 points of full, <= 30% escalated): met at t=" +
           ", ".join(str(r[0]) for r in good)) if good else
          "Goal (within 0.5 points of full, <= 30% escalated): not met at any threshold")

    # SVG: accuracy against escalated fraction.
    W, H, M = 480, 320, 50
    def sx(f): return M + f * (W - 2 * M)
    lo = min(acc_lite, min(r[1] for r in rows)) - 0.005
    hi = max(acc_full, max(r[1] for r in rows)) + 0.005
    def sy(a): return H - M - (a - lo) / (hi - lo) * (H - 2 * M)
    pts = [(0.0, acc_lite)] + [(r[2], r[1]) for r in rows] + [(1.0, acc_full)]
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<line x1="{M}" y1="{H-M}" x2="{W-M}" y2="{H-M}" stroke="black"/>',
           f'<line x1="{M}" y1="{M}" x2="{M}" y2="{H-M}" stroke="black"/>',
           f'<text x="{W/2}" y="{H-12}" text-anchor="middle">fraction escalated to the full model</text>',
           f'<text x="14" y="{H/2}" transform="rotate(-90 14 {H/2})" text-anchor="middle">accuracy</text>',
           f'<text x="{W/2}" y="20" text-anchor="middle">digits cascade: lite MLP -> full MLP</text>',
           f'<line x1="{M}" y1="{sy(acc_full)}" x2="{W-M}" y2="{sy(acc_full)}" stroke="#999" stroke-dasharray="4"/>',
           f'<text x="{W-M}" y="{sy(acc_full)-4}" text-anchor="end" fill="#666">full {acc_full*100:.1f}%</text>']
    for k in range(6):
        f = k / 5
        svg.append(f'<text x="{sx(f)}" y="{H-M+14}" text-anchor="middle">{f:.1f}</text>')
    for k in range(5):
        a = lo + k * (hi - lo) / 4
        svg.append(f'<text x="{M-4}" y="{sy(a)+4}" text-anchor="end">{a*100:.1f}%</text>')
    svg.append('<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="' +
               " ".join(f"{sx(f):.1f},{sy(a):.1f}" for f, a in pts) + '"/>')
    for r in rows:
        svg.append(f'<circle cx="{sx(r[2]):.1f}" cy="{sy(r[1]):.1f}" r="3" fill="#1f77b4"/>')
        svg.append(f'<text x="{sx(r[2])+5:.1f}" y="{sy(r[1])+12:.1f}" font-size="9">{r[0]}</text>')
    svg.append("</svg>")
    open(os.path.join(OUT, "cascade.svg"), "w").write("\n".join(svg))

    # Real cascades, local and remote, at two thresholds.
    print("\nReal cascades (mode=cascade; latency measured per request over HTTP):\n")
    print("| where the full model is | threshold | accuracy | escalated | mean latency (ms) | paths |")
    print("|---|---|---|---|---|---|")
    cloud, cport = serve(f"digits={D}/full.onnx")
    for where in ["local", "remote (2nd loom serve, loopback)"]:
        for th in [0.7, 0.9]:
            if where == "local":
                spec = f"digits={D}/full.onnx:lite={D}/lite.onnx,mode=cascade,threshold={th}"
            else:
                spec = (f"digits={D}/lite.onnx:variant=lite,mode=cascade,threshold={th},"
                        f"remote=http://127.0.0.1:{cport}/v2/models/digits")
            p, port = serve(spec)
            correct, lat, paths = 0, [], {}
            for i in range(n):
                d, t = infer(port, i)
                correct += int(np.argmax(d["outputs"][0]["data"]) == Y[i])
                lat.append(t)
                path = d["parameters"]["path"]
                paths[path] = paths.get(path, 0) + 1
            stop(p)
            esc = sum(v for k, v in paths.items() if k != "lite") / n
            print(f"| {where} | {th} | {correct/n*100:.2f}% | {esc*100:.1f}% | {np.mean(lat)*1e3:.2f} | "
                  f"{', '.join(f'{k}: {v}' for k, v in sorted(paths.items()))} |")
    stop(cloud)

if "2" in SECTIONS:
    # ---- 2. QoS under overload ------------------------------------------------------------------
    def heavy_full(path):
        """The digits classifier's inputs and outputs around a much wider MLP (random weights)."""
        from onnx import TensorProto, helper, numpy_helper
        import onnx
        rng = np.random.default_rng(0)
        dims = [int(x) for x in os.environ.get("LOOM_QOS_HEAVY", "64,2048,2048,2048,10").split(",")]
        nodes, inits, x = [], [], "pixels"
        for i in range(len(dims) - 1):
            w = (rng.standard_normal((dims[i], dims[i + 1])) / np.sqrt(dims[i])).astype(np.float32)
            inits.append(numpy_helper.from_array(w, f"W{i}"))
            nodes.append(helper.make_node("MatMul", [x, f"W{i}"], [f"m{i}"]))
            if i < len(dims) - 2:
                nodes.append(helper.make_node("Relu", [f"m{i}"], [f"h{i}"]))
                x = f"h{i}"
        nodes.append(helper.make_node("Softmax", [f"m{len(dims) - 2}"], ["probs"], axis=1))
        g = helper.make_graph(nodes, "digits-heavy",
                              [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 64])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 10])],
                              inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 8
        onnx.save(m, path)


    dur = "3" if QUICK else "6"
    TARGET = 50
    heavy = os.path.join(OUT, "digits-heavy-" + os.environ.get("LOOM_QOS_HEAVY", "default").replace(",", "-") + ".onnx")
    if not os.path.exists(heavy):
        heavy_full(heavy)
    spec = f"digits={heavy}:lite={D}/lite.onnx,latency_ms={TARGET},max_batch=16,warm=1"
    p, port = serve(spec + ",mode=full")
    loadgen(port, "--concurrency", "2", "--duration", "1")
    cap = loadgen(port, "--find-max-qps", "--p99", str(TARGET), "--duration", "3")["max_qps"]
    stop(p)
    print(f"\n### QoS under overload\n\nFull variant: {heavy} (an MLP of widths "
          f"{os.environ.get('LOOM_QOS_HEAVY', '64,2048,2048,2048,10')}, generated); lite: the digits lite model. Capacity of the full variant (mode=full, "
          f"`loom loadgen URL --find-max-qps --p99 {TARGET}`): {cap:.0f} QPS. Open loop (Poisson) "
          f"at each share of it for {dur} s; latency target {TARGET} ms (latency_ms={TARGET}):\n")
    print("| load | mode | achieved QPS | p50 ms | p99 ms | served by lite | switches |")
    print("|---|---|---|---|---|---|---|")
    for mode in ["auto", "full"]:
        for share in [0.5, 1.0, 1.5, 2.0]:
            p, port = serve(spec + f",mode={mode}")
            loadgen(port, "--concurrency", "2", "--duration", "1")
            lite0 = metric(port, "loom_variant_answers_total", variant="lite")
            full0 = metric(port, "loom_variant_answers_total", variant="full")
            r = loadgen(port, "--rate", str(int(cap * share)), "--duration", dur)
            lite_n = metric(port, "loom_variant_answers_total", variant="lite") - lite0
            all_n = lite_n + metric(port, "loom_variant_answers_total", variant="full") - full0
            sw = metric(port, "loom_qos_switches_total")
            stop(p)
            print(f"| {share*100:.0f}% | {mode} | {r['achieved_qps']:.0f} | {r['latency_ms']['p50']:.2f} | "
                  f"{r['latency_ms']['p99']:.2f} | {lite_n/max(all_n,1)*100:.0f}% | {sw:.0f} |")

if "3" in SECTIONS:
    # ---- 3. audit cost --------------------------------------------------------------------------
    print("\n### Audit cost\n\nClosed loop, 8 clients, mode=full, the same server without and with "
          "`--audit` (synchronous NORMAL, the default, and FULL), two runs each:\n")
    print("| audit | QPS | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    res = {}
    for rep in range(2):
        for audit in ["off", "normal", "full"]:
            extra = [] if audit == "off" else ["--audit", os.path.join(OUT, f"audit-{audit}{rep}.db"),
                                               "--audit-sync", audit]
            p, port = serve(f"digits={D}/full.onnx:mode=full", *extra)
            r = loadgen(port, "--concurrency", "8", "--duration", dur)
            stop(p)
            res.setdefault(audit, []).append(r["achieved_qps"])
            print(f"| {audit} (run {rep+1}) | {r['achieved_qps']:.0f} | {r['latency_ms']['p50']:.2f} | "
                  f"{r['latency_ms']['p99']:.2f} |")
    off = max(res["off"])
    for audit in ["normal", "full"]:
        on = max(res[audit])
        print(f"\nBest of two, synchronous={audit.upper()}: {off:.0f} QPS off, {on:.0f} QPS on: "
              f"{(1 - on/off)*100:.1f}% lower with the audit.")
    print("Verify afterwards: " + subprocess.run([LOOM, "audit", "verify",
          os.path.join(OUT, "audit-normal0.db")], capture_output=True, text=True).stdout.strip())
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
