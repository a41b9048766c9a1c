// The explainer's model, in a Web Worker so the page never waits for it.
//
// onnxruntime-web runs the exported ConvMixer (convmixer/onnx.py) on its WebAssembly backend with one
// thread: more threads need SharedArrayBuffer, which browsers grant only to pages served with
// cross-origin-isolation headers (COOP/COEP) that a static book cannot count on.
//
// Messages (each answered once, with the same id):
//   {type: 'init', id, ortUrl, vendorUrl, modelUrl}     -> {type: 'ready', id, outputNames, ms}
//   {type: 'run', id, data: Float32Array, n, size, outputs: ['logits', 'z0', ...]}
//                                                       -> {type: 'result', id, outputs: {name: {data, dims}}, ms}
//   any failure                                         -> {type: 'error', id, message}
// The page sends one message at a time (a session runs one batch at a time).
let ort = null;
let session = null;

async function init(msg) {
  ort = await import(msg.ortUrl);
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.proxy = false;
  ort.env.wasm.wasmPaths = msg.vendorUrl;  // the folder holding ort-wasm-simd-threaded.{mjs,wasm}
  ort.env.logLevel = 'error';
  const t0 = performance.now();
  session = await ort.InferenceSession.create(msg.modelUrl, {executionProviders: ['wasm'], graphOptimizationLevel: 'all'});
  return {type: 'ready', outputNames: session.outputNames, ms: performance.now() - t0};
}

async function run(msg) {
  if (!session) throw new Error('the model is not loaded yet');
  const t0 = performance.now();
  const input = new ort.Tensor('float32', msg.data, [msg.n, 3, msg.size, msg.size]);
  const result = await session.run({image: input}, msg.outputs);
  const outputs = {}, transfer = [];
  for (const name of msg.outputs) {
    const data = new Float32Array(result[name].data);  // a copy the page can own
    outputs[name] = {data, dims: result[name].dims};
    transfer.push(data.buffer);
  }
  return [{type: 'result', outputs, ms: performance.now() - t0}, transfer];
}

self.onmessage = async (event) => {
  const msg = event.data;
  try {
    if (msg.type === 'init') {
      self.postMessage({...(await init(msg)), id: msg.id});
    } else if (msg.type === 'run') {
      const [reply, transfer] = await run(msg);
      self.postMessage({...reply, id: msg.id}, transfer);
    } else {
      throw new Error(`unknown message type ${msg.type}`);
    }
  } catch (e) {
    self.postMessage({type: 'error', id: msg.id, message: String((e && e.message) || e)});
  }
};
