#!/usr/bin/env node
/*
 * ONNX Runtime (CPU execution provider) as Loom's independent reference: runs one model on
 * inputs read from .npy files, writes its outputs as .npy, and optionally times N runs with a
 * fixed intra-op thread count, so that fixtures and benchmarks compare Loom with ORT on the same
 * inputs. The command line mirrors `loom run` where it can.
 *
 *   node run_ort.js MODEL.onnx [-i NAME=FILE.npy]... [-o DIR] [--threads N] [--repeat N]
 *                  [--warmup N] [--opt all|extended|basic|disabled] [--profile PREFIX] [--json]
 *
 * Every graph input must be given (no random filling: the point is to share inputs with Loom).
 * Exit status 0 on success, 1 when ORT fails, 2 on bad usage or bad input.
 *
 * Needs onnxruntime-node installed beside this file: npm install --ignore-scripts (the CPU
 * binary is part of the package; the install script only fetches CUDA libraries).
 */
'use strict';

const fs = require('fs');
const path = require('path');

function usage(msg) {
    if (msg) process.stderr.write(`run_ort: ${msg}\n`);
    process.stderr.write(
        'usage: node run_ort.js MODEL.onnx [-i NAME=FILE.npy]... [-o DIR] [--threads N]\n' +
        '       [--repeat N] [--warmup N] [--opt all|extended|basic|disabled]\n' +
        '       [--profile PREFIX] [--json]\n');
    process.exit(2);
}

function fail(code, msg) {
    process.stderr.write(`run_ort: ${msg}\n`);
    process.exit(code);
}

let ort;
try {
    ort = require('onnxruntime-node');
} catch (e) {
    fail(1, `cannot load onnxruntime-node (run: npm install --ignore-scripts in ${__dirname}): ` +
        e.message.split('\n')[0]);
}

/* ---- .npy ------------------------------------------------------------------------------- */

// NumPy descr -> [ORT tensor type, typed array constructor]. Only little-endian (or byte-wide).
const NPY_TYPES = {
    '<f4': ['float32', Float32Array],
    '<f8': ['float64', Float64Array],
    '<f2': ['float16', Uint16Array],
    '<i8': ['int64', BigInt64Array],
    '<i4': ['int32', Int32Array],
    '<i2': ['int16', Int16Array],
    '|i1': ['int8', Int8Array],
    '<u8': ['uint64', BigUint64Array],
    '<u4': ['uint32', Uint32Array],
    '<u2': ['uint16', Uint16Array],
    '|u1': ['uint8', Uint8Array],
    '|b1': ['bool', Uint8Array],
};
const ORT_TO_DESCR = {};
for (const [descr, [t]] of Object.entries(NPY_TYPES)) {
    if (!(t in ORT_TO_DESCR)) ORT_TO_DESCR[t] = descr;
}

function readNpy(file) {
    let buf;
    try {
        buf = fs.readFileSync(file);
    } catch (e) {
        fail(2, `${file}: ${e.message}`);
    }
    const magic = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]); // \x93NUMPY
    if (buf.length < 10 || !buf.subarray(0, 6).equals(magic)) fail(2, `${file}: not a .npy file`);
    const major = buf[6];
    let hlen, hstart;
    if (major === 1) {
        hlen = buf.readUInt16LE(8);
        hstart = 10;
    } else if (major === 2 || major === 3) {
        hlen = buf.readUInt32LE(8);
        hstart = 12;
    } else {
        fail(2, `${file}: .npy format version ${major} is not supported`);
    }
    const header = buf.toString('latin1', hstart, hstart + hlen);
    const descr = /'descr'\s*:\s*'([^']+)'/.exec(header);
    const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header);
    const shape = /'shape'\s*:\s*\(([^)]*)\)/.exec(header);
    if (!descr || !fortran || !shape) fail(2, `${file}: malformed .npy header`);
    if (fortran[1] === 'True') fail(2, `${file}: Fortran order is not supported`);
    let d = descr[1];
    if (d[0] === '=') d = '<' + d.slice(1); // native order: little-endian on every host we run
    if (!(d in NPY_TYPES)) fail(2, `${file}: dtype '${descr[1]}' is not supported`);
    const dims = shape[1].split(',').map((s) => s.trim()).filter((s) => s.length).map(Number);
    const [type, Ctor] = NPY_TYPES[d];
    const count = dims.reduce((a, b) => a * b, 1);
    const off = hstart + hlen;
    const nbytes = count * Ctor.BYTES_PER_ELEMENT;
    if (buf.length - off < nbytes) fail(2, `${file}: truncated data (${buf.length - off} of ${nbytes} bytes)`);
    // Copy into a fresh, aligned buffer: the file's data offset need not be aligned.
    const data = new Ctor(count);
    new Uint8Array(data.buffer).set(buf.subarray(off, off + nbytes));
    const values = type === 'bool' ? Uint8Array.from(data, (v) => (v ? 1 : 0)) : data;
    return new ort.Tensor(type, values, dims);
}

function writeNpy(file, tensor) {
    const descr = ORT_TO_DESCR[tensor.type];
    if (!descr) fail(1, `output dtype ${tensor.type} cannot be written as .npy`);
    const dims = tensor.dims.map(Number);
    const shape = dims.length === 1 ? `(${dims[0]},)` : `(${dims.join(', ')})`;
    let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shape}, }`;
    // Pad so that magic + version + length + header + '\n' is a multiple of 64 (NumPy's rule).
    const total = 10 + header.length + 1;
    header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
    const pre = Buffer.alloc(10);
    Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]).copy(pre);
    pre.writeUInt16LE(header.length, 8);
    const d = tensor.data;
    const body = Buffer.from(d.buffer, d.byteOffset, d.byteLength);
    fs.writeFileSync(file, Buffer.concat([pre, Buffer.from(header, 'latin1'), body]));
}

/* ---- command line ------------------------------------------------------------------------- */

function parseArgs(argv) {
    const a = { model: null, inputs: [], outDir: null, threads: 0, repeat: 0, warmup: 1,
        opt: 'all', profile: null, json: false };
    const intArg = (name, v) => {
        if (v === undefined || !/^\d+$/.test(v)) usage(`${name} needs a non-negative integer`);
        return parseInt(v, 10);
    };
    for (let i = 0; i < argv.length; i++) {
        const s = argv[i];
        if (s === '-i' || s === '--input') {
            const v = argv[++i];
            const eq = v === undefined ? -1 : v.indexOf('=');
            if (eq <= 0) usage('-i needs NAME=FILE');
            a.inputs.push([v.slice(0, eq), v.slice(eq + 1)]);
        } else if (s === '-o' || s === '--output-dir') {
            a.outDir = argv[++i];
            if (!a.outDir) usage('-o needs a directory');
        } else if (s === '--threads') {
            a.threads = intArg(s, argv[++i]);
        } else if (s === '--repeat') {
            a.repeat = intArg(s, argv[++i]);
        } else if (s === '--warmup') {
            a.warmup = intArg(s, argv[++i]);
        } else if (s === '--opt') {
            a.opt = argv[++i];
            if (!['all', 'extended', 'basic', 'disabled'].includes(a.opt)) usage('--opt: all|extended|basic|disabled');
        } else if (s === '--profile') {
            a.profile = argv[++i];
            if (!a.profile) usage('--profile needs a file prefix');
        } else if (s === '--json') {
            a.json = true;
        } else if (s === '-h' || s === '--help') {
            usage();
        } else if (s.startsWith('-')) {
            usage(`unknown option ${s}`);
        } else if (a.model === null) {
            a.model = s;
        } else {
            usage(`unexpected argument ${s}`);
        }
    }
    if (!a.model) usage('no model given');
    return a;
}

function median(xs) {
    const s = [...xs].sort((x, y) => x - y);
    const n = s.length;
    return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* ORT's per-node profile events summed by op type within each run after the first SKIP (the
 * warm-up runs, which allocate), then the median over those runs (ms per run), to set beside
 * Loom's per-op times. ORT fuses nodes (Gelu, LayerNorm, attention, MatMul+Add...) from --opt
 * basic on, so its op names are those of the optimised graph. Per-node profiling adds a little
 * time to every node. */
function summariseProfile(file, skip) {
    const events = JSON.parse(fs.readFileSync(file, 'utf8'));
    const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run')
        .sort((x, y) => x.ts - y.ts).slice(skip);
    const perRun = runs.map(() => ({}));
    for (const e of events) {
        if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time')) continue;
        const r = runs.findIndex((m) => e.ts >= m.ts && e.ts <= m.ts + m.dur);
        if (r < 0) continue;
        const op = (e.args && e.args.op_name) || 'unknown';
        perRun[r][op] = (perRun[r][op] || 0) + e.dur / 1000.0;
    }
    const byOp = {};
    const ops = new Set(perRun.flatMap((m) => Object.keys(m)));
    for (const op of ops) byOp[op] = median(perRun.map((m) => m[op] || 0));
    return { runs: runs.length, byOp, modelRunMs: runs.length ? median(runs.map((m) => m.dur / 1000.0)) : null };
}

async function main() {
    const args = parseArgs(process.argv.slice(2));
    if (!fs.existsSync(args.model)) fail(2, `${args.model}: no such file`);

    const opts = {
        executionProviders: ['cpu'],
        graphOptimizationLevel: args.opt,
        executionMode: 'sequential',
        interOpNumThreads: 1,
        logSeverityLevel: 3,
    };
    if (args.threads > 0) opts.intraOpNumThreads = args.threads;
    if (args.profile) {
        opts.enableProfiling = true;
        opts.profileFilePrefix = args.profile;
    }

    const startedAt = Date.now();
    let session;
    try {
        session = await ort.InferenceSession.create(args.model, opts);
    } catch (e) {
        fail(1, `${args.model}: ${e.message}`);
    }

    const given = new Map(args.inputs);
    for (const name of given.keys()) {
        if (!session.inputNames.includes(name)) {
            fail(2, `-i ${name}: the model has no input '${name}' (inputs: ${session.inputNames.join(', ')})`);
        }
    }
    const feeds = {};
    for (const name of session.inputNames) {
        if (!given.has(name)) fail(2, `input '${name}' not given (-i ${name}=FILE.npy)`);
        feeds[name] = readNpy(given.get(name));
    }

    let results;
    const runOnce = async () => {
        try {
            return await session.run(feeds);
        } catch (e) {
            fail(1, `${args.model}: run failed: ${e.message}`);
        }
    };

    for (let i = 0; i < args.warmup; i++) results = await runOnce();
    const times = [];
    for (let i = 0; i < args.repeat; i++) {
        const t0 = process.hrtime.bigint();
        results = await runOnce();
        times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    if (!results) results = await runOnce();

    if (args.outDir) {
        fs.mkdirSync(args.outDir, { recursive: true });
        for (const name of session.outputNames) {
            writeNpy(path.join(args.outDir, `${name}.npy`), results[name]);
        }
    }

    let profile = null;
    if (args.profile) {
        // onnxruntime-node's endProfiling() returns nothing; the file is PREFIX_<date>.json.
        const before = Date.now();
        session.endProfiling();
        const dir = path.dirname(path.resolve(args.profile));
        const base = path.basename(args.profile) + '_';
        const file = fs.readdirSync(dir)
            .filter((f) => f.startsWith(base) && f.endsWith('.json'))
            .map((f) => path.join(dir, f))
            .filter((f) => fs.statSync(f).mtimeMs >= startedAt - 1000 && fs.statSync(f).mtimeMs <= before + 60000)
            .sort((x, y) => fs.statSync(y).mtimeMs - fs.statSync(x).mtimeMs)[0];
        if (!file) fail(1, `no ORT profile file ${args.profile}_*.json was written`);
        const sum = summariseProfile(file, args.warmup);
        // model_run: the time inside the session's Run, without the JS and N-API layers.
        profile = { file, runs: sum.runs, model_run_ms: sum.modelRunMs, ms_per_run_by_op: sum.byOp };
    }

    const report = {
        model: args.model,
        runtime: `onnxruntime-node ${ort.env.versions.node}`,
        intra_op_threads: args.threads,
        graph_optimization: args.opt,
        outputs: Object.fromEntries(session.outputNames.map((n) => [n, {
            dtype: results[n].type, shape: results[n].dims.map(Number) }])),
    };
    if (times.length) {
        report.repeat = times.length;
        report.latency_ms = {
            median: median(times),
            min: Math.min(...times),
            max: Math.max(...times),
            mean: times.reduce((x, y) => x + y, 0) / times.length,
        };
        report.runs_ms = times;
    }
    if (profile) report.profile = profile;

    if (args.json) {
        process.stdout.write(JSON.stringify(report, null, 1) + '\n');
    } else {
        for (const [n, o] of Object.entries(report.outputs)) {
            process.stdout.write(`${n}: ${o.dtype} [${o.shape.join(', ')}]\n`);
        }
        if (report.latency_ms) {
            const l = report.latency_ms;
            process.stdout.write(`latency over ${report.repeat} runs (${args.threads || 'default'} threads): ` +
                `median ${l.median.toFixed(3)} ms, min ${l.min.toFixed(3)} ms, mean ${l.mean.toFixed(3)} ms\n`);
        }
    }
    await session.release();
}

main().catch((e) => fail(1, e.stack || String(e)));
