// Run an exported TensorFlow.js graph model in Node with the wasm backend (no native tfjs-node).
//
//   node tfjs_predict.mjs --model EXPORT/tfjs/model.json --input images.f32 --shape N,H,W,3 \
//        --output result.json [--node-modules DIR] [--backend wasm|cpu] [--warmup 1]
//
// --input: raw little-endian float32 NHWC RGB images in [0, 1] (the SavedModel / TFJS contract).
// --output: JSON {backend, shape, probabilities (row-major N x C), latency_ms_per_image, load_ms, metadata}
//           (metadata: model.json's userDefinedMetadata as tfjs returns it, `GraphModel.metadata`).
// --node-modules: the node_modules folder holding @tensorflow/tfjs and @tensorflow/tfjs-backend-wasm
//   (default: the one beside this file, where `npm ci --prefix <this folder>` puts them). They are loaded
//   with require() from there, so this file also runs from an installed package, away from its packages.
// Every image runs at batch size 1 after --warmup untimed runs, so the latency is per image.
import { readFile, realpath, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

let tf;  // @tensorflow/tfjs, loaded by main() from --node-modules

function parseArgs(argv) {
  const args = { backend: 'wasm', warmup: '1' };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i];
    if (!key.startsWith('--') || i + 1 >= argv.length) throw new Error(`bad argument near '${key}'`);
    args[key.slice(2)] = argv[i + 1];
  }
  for (const key of ['model', 'input', 'shape', 'output']) {
    if (!args[key]) throw new Error(`missing --${key}`);
  }
  return args;
}

// A weight shard named by model.json, refused unless it is a file inside the model's folder: no absolute path,
// no '..', no URL, no link leading out of the folder (a model file must not make us read other files).
async function shardPath(dir, p) {
  const parts = typeof p === 'string' ? p.split(/[\\/]/) : ['..'];
  const refuse = () => new Error(`${path.join(dir, 'model.json')}: its weightsManifest names ${JSON.stringify(p)}, `
    + `which is not a file inside the model's folder ${dir}; refused`);
  if (typeof p !== 'string' || !p || path.isAbsolute(p) || p.startsWith('\\') || p.includes(':') || parts.includes('..')) {
    throw refuse();
  }
  const real = await realpath(path.resolve(dir, p));
  if (!real.startsWith(dir + path.sep)) throw refuse();
  return real;
}

// Pure tfjs has no file:// loader in Node: a small IOHandler reading model.json and its weight shards.
function fileHandler(modelJsonPath) {
  return {
    async load() {
      const dir = await realpath(path.dirname(modelJsonPath));
      const modelJson = JSON.parse(await readFile(modelJsonPath, 'utf8'));
      return tf.io.getModelArtifactsForJSON(modelJson, async (manifest) => {
        const specs = [];
        const buffers = [];
        for (const group of manifest) {
          specs.push(...group.weights);
          for (const p of group.paths) buffers.push(await readFile(await shardPath(dir, p)));
        }
        const all = Buffer.concat(buffers);
        return [specs, all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength)];
      });
    },
  };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const modules = path.resolve(args['node-modules'] || path.join(path.dirname(fileURLToPath(import.meta.url)), 'node_modules'));
  // require() resolves packages from the node_modules folder next to the file it is created for.
  const require = createRequire(path.join(path.dirname(modules), 'resolve-from-here.js'));
  tf = require('@tensorflow/tfjs');
  const wasm = require('@tensorflow/tfjs-backend-wasm');
  if (args.backend === 'wasm') {
    const dist = path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm'));
    wasm.setWasmPaths(dist + path.sep);
  }
  if (!(await tf.setBackend(args.backend))) throw new Error(`tfjs backend '${args.backend}' failed to initialise`);
  await tf.ready();

  const shape = args.shape.split(',').map(Number);
  if (shape.length !== 4 || shape.some((d) => !Number.isInteger(d) || d < 1)) throw new Error(`bad --shape ${args.shape}`);
  const raw = await readFile(args.input);
  const count = shape.reduce((a, b) => a * b, 1);
  if (raw.byteLength !== count * 4) throw new Error(`--input holds ${raw.byteLength} bytes, shape ${shape} needs ${count * 4}`);
  const data = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));

  const t0 = performance.now();
  const model = await tf.loadGraphModel(fileHandler(path.resolve(args.model)));
  const loadMs = performance.now() - t0;

  const [n, h, w, c] = shape;
  const per = h * w * c;
  const run = (i) => tf.tidy(() => model.predict(tf.tensor4d(data.subarray(i * per, (i + 1) * per), [1, h, w, c])));
  for (let k = 0; k < Number(args.warmup); k++) {
    const out = run(0);
    await out.data();
    out.dispose();
  }
  const rows = [];
  let numClasses = 0;
  const t1 = performance.now();
  for (let i = 0; i < n; i++) {
    const out = run(i);
    const probs = await out.data();  // waits for the result, so the timing is complete
    numClasses = out.shape[out.shape.length - 1];
    rows.push(...probs);
    out.dispose();
  }
  const elapsed = performance.now() - t1;
  await writeFile(args.output, JSON.stringify({
    backend: tf.getBackend(),
    shape: [n, numClasses],
    probabilities: rows,
    latency_ms_per_image: elapsed / n,
    load_ms: loadMs,
    metadata: model.metadata ?? null,
  }));
}

main().catch((err) => {
  process.stderr.write(`tfjs_predict: ${err && err.message ? err.message : err}\n`);
  process.exit(1);
});
