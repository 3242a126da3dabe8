// Run a TF.js graph model with the pure-JS TF.js runtime (cpu backend) on raw input tensors.
//
//   node build/tfjs_run.mjs <node_modules parent dir> <job.json>
//
// job.json: {"model": "/abs/model.json",
//            "cases": [{"input": "/abs/x.bin", "dtype": "int32"|"float32", "shape": [1, h, w, 3],
//                       "output": "/abs/y.bin"}, ...]}
// Each output is written as raw little-endian float32; its shape goes to <output>.json.
// The modules (@tensorflow/tfjs-core, -backend-cpu, -converter) are resolved from the first argument,
// so nothing is installed in the repository. build/verify_conversion.py drives this.

import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const [modulesDir, jobPath] = process.argv.slice(2);
if (!modulesDir || !jobPath) {
  console.error('usage: node tfjs_run.mjs <dir with node_modules> <job.json>');
  process.exit(2);
}
const require = createRequire(path.join(path.resolve(modulesDir), 'node_modules', 'x.js'));
const tf = require('@tensorflow/tfjs-core');
require('@tensorflow/tfjs-backend-cpu');
const tfconv = require('@tensorflow/tfjs-converter');

function loadArtifacts(modelPath) {
  const json = JSON.parse(fs.readFileSync(modelPath, 'utf8'));
  const dir = path.dirname(modelPath);
  const weightSpecs = [];
  const buffers = [];
  for (const group of json.weightsManifest) {
    weightSpecs.push(...group.weights);
    for (const p of group.paths) buffers.push(fs.readFileSync(path.join(dir, p)));
  }
  const all = Buffer.concat(buffers);
  const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
  return {
    modelTopology: json.modelTopology,
    weightSpecs,
    weightData,
    format: json.format,
    generatedBy: json.generatedBy,
    convertedBy: json.convertedBy,
    signature: json.signature,
    userDefinedMetadata: json.userDefinedMetadata,
  };
}

async function main() {
  await tf.setBackend('cpu');
  await tf.ready();
  const job = JSON.parse(fs.readFileSync(jobPath, 'utf8'));
  const model = await tfconv.loadGraphModel(tf.io.fromMemory(loadArtifacts(job.model)));
  const info = {
    tfjs: tf.version_core, backend: tf.getBackend(),
    inputs: model.inputs.map((t) => ({ name: t.name, shape: t.shape, dtype: t.dtype })),
    outputs: model.outputs.map((t) => ({ name: t.name, shape: t.shape, dtype: t.dtype })),
  };
  for (const c of job.cases) {
    const raw = fs.readFileSync(c.input);
    const ab = raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength);
    const data = c.dtype === 'int32' ? new Int32Array(ab) : new Float32Array(ab);
    const x = tf.tensor(data, c.shape, c.dtype);
    const y = await model.executeAsync(x);
    const out = Array.isArray(y) ? y[0] : y;
    const values = await out.data();
    fs.writeFileSync(c.output, Buffer.from(new Float32Array(values).buffer));
    fs.writeFileSync(`${c.output}.json`, JSON.stringify({ shape: out.shape, dtype: out.dtype }));
    tf.dispose([x, y]);
  }
  console.log(JSON.stringify(info));
}

main().catch((err) => { console.error(err); process.exit(1); });
