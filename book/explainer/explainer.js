// ConvMixer in your browser: the page side of chapter book/10_explainer.
//
// The chapter's HTML output holds <div id="convmixer-explainer"> and a module script that calls
// mount(root).  This module draws the explainer into that div and runs the model in a Web Worker
// (worker.js: onnxruntime-web, WebAssembly, one thread).  Everything it loads sits beside it:
// model/ (the ONNX file and model.json, written by tools/explainer_assets.py), vendor/ (the runtime),
// sprite.png + sprite.json (100 CIFAR-10 test images).
//
// Contract, for readers' experiments in the console and for tests (tests/test_explainer_site.py):
//
//   window.convmixerExplainer.ready        Promise, resolves when the model can run (rejects if it cannot)
//   window.convmixerExplainer.modelName    "convmixer-paper.pt": the checkpoint the ONNX file was exported from
//   window.convmixerExplainer.predict(imageData, {cover, intermediates})
//       -> Promise of {logits: [10 numbers], probabilities, predicted, className, ms, grids?}
//       imageData: an ImageData; 32 x 32 is used as it is, any other size is centre-cropped to a square
//       and resized to 32 x 32.  Transparent pixels are composited on white.  The training normalisation
//       (x / 255 - MEAN) / STD is applied here.  cover: [[row, col], ...] patch positions (0..15 at p = 2)
//       set to the training mean, i.e. zero after normalisation.  intermediates: true adds
//       grids = {z0: Float32Array(h * 16 * 16), ..., z8}, each channel-major.
//   window.convmixerExplainer.occlusion(imageData, {cover, onProgress, batch})
//       -> Promise of {target, base, probabilities: Float32Array(256), ms}: the probability of the
//       unoccluded prediction with each patch covered in turn (logits only, in batches).
//   window.convmixerExplainer.spriteImage(i)  the sprite's i-th test image as ImageData (32 x 32);
//       .sprite is sprite.json (its test-set index and label).
//   window.convmixerExplainer.timings      {ready: ms, firstPrediction: ms} since navigation start.

const BASE = new URL('./', import.meta.url);
const SIZE = 32;
const MAX_PIXELS = 40e6;  // larger uploads are refused before decoding (a 10000 x 10000 photo is 100 MP)
const MAX_FILE_BYTES = 64e6;

// ---------------------------------------------------------------- the model, in a worker
class Engine {
  constructor() {
    this.worker = new Worker(new URL('./worker.js', import.meta.url), {type: 'module'});
    this.nextId = 1;
    this.pending = new Map();
    this.queue = Promise.resolve();
    this.worker.onmessage = (event) => {
      const msg = event.data, entry = this.pending.get(msg.id);
      if (!entry) return;
      this.pending.delete(msg.id);
      if (msg.type === 'error') entry.reject(new Error(msg.message)); else entry.resolve(msg);
    };
    this.worker.onerror = (event) => {
      event.preventDefault();
      const error = new Error(`the model's worker failed: ${event.message || 'could not start'}`);
      for (const entry of this.pending.values()) entry.reject(error);
      this.pending.clear();
      this.broken = error;
    };
  }

  // One message at a time: an ONNX Runtime session runs one batch at a time.
  call(message, transfer = []) {
    const job = this.queue.then(() => new Promise((resolve, reject) => {
      if (this.broken) { reject(this.broken); return; }
      const id = this.nextId++;
      this.pending.set(id, {resolve, reject});
      this.worker.postMessage({...message, id}, transfer);
    }));
    this.queue = job.catch(() => {});
    return job;
  }
}

// ---------------------------------------------------------------- pixels -> the model's input
function canvas(w, h) {
  const c = document.createElement('canvas');
  c.width = w; c.height = h;
  return c;
}

// Any ImageData or drawable -> 32 x 32 ImageData: centre square, halved step by step (sharper than one
// big jump), composited on white.
function toModelSize(source, width, height) {
  const side = Math.min(width, height);
  let sx = (width - side) / 2, sy = (height - side) / 2, s = side, current = source;
  while (s / 2 >= 2 * SIZE) {
    const half = Math.floor(s / 2), step = canvas(half, half), ctx = step.getContext('2d');
    ctx.imageSmoothingQuality = 'high';
    ctx.drawImage(current, sx, sy, s, s, 0, 0, half, half);
    current = step; sx = 0; sy = 0; s = half;
  }
  const out = canvas(SIZE, SIZE), ctx = out.getContext('2d', {willReadFrequently: true});
  ctx.fillStyle = '#ffffff';
  ctx.fillRect(0, 0, SIZE, SIZE);
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(current, sx, sy, s, s, 0, 0, SIZE, SIZE);
  return ctx.getImageData(0, 0, SIZE, SIZE);
}

function asModelImage(imageData) {
  if (!(imageData && imageData.data && imageData.width && imageData.height)) throw new TypeError('predict() takes an ImageData');
  if (imageData.width === SIZE && imageData.height === SIZE) return imageData;
  const c = canvas(imageData.width, imageData.height);
  c.getContext('2d').putImageData(imageData, 0, 0);
  return toModelSize(c, imageData.width, imageData.height);
}

// (pixel / 255 - MEAN) / STD per channel, channel-major (3, 32, 32); alpha composited on white;
// covered patches are zero (the training mean).
function normalise(imageData, info, cover = [], out = new Float32Array(3 * SIZE * SIZE), offset = 0) {
  const px = imageData.data, n = SIZE * SIZE, p = info.patch_size;
  for (let i = 0; i < n; i++) {
    const a = px[4 * i + 3] / 255;
    for (let c = 0; c < 3; c++) {
      const v = (px[4 * i + c] * a + 255 * (1 - a)) / 255;
      out[offset + c * n + i] = (v - info.mean[c]) / info.std[c];
    }
  }
  for (const [row, col] of cover) coverPatch(out, offset, row, col, p);
  return out;
}

function coverPatch(out, offset, row, col, p) {
  for (let c = 0; c < 3; c++)
    for (let y = row * p; y < (row + 1) * p; y++)
      out.fill(0, offset + c * SIZE * SIZE + y * SIZE + col * p, offset + c * SIZE * SIZE + y * SIZE + (col + 1) * p);
}

function softmax(logits) {
  const m = Math.max(...logits), e = logits.map(v => Math.exp(v - m)), s = e.reduce((a, b) => a + b, 0);
  return e.map(v => v / s);
}

// ---------------------------------------------------------------- decoding a reader's file
function sniffSize(bytes) {
  const u8 = new Uint8Array(bytes), dv = new DataView(bytes);
  const ascii = (o, n) => String.fromCharCode(...u8.subarray(o, o + n));
  if (u8.length >= 24 && u8[0] === 0x89 && ascii(1, 3) === 'PNG') return [dv.getUint32(16), dv.getUint32(20)];
  if (u8.length >= 10 && ascii(0, 3) === 'GIF') return [dv.getUint16(6, true), dv.getUint16(8, true)];
  if (u8.length >= 26 && ascii(0, 2) === 'BM') return [Math.abs(dv.getInt32(18, true)), Math.abs(dv.getInt32(22, true))];
  if (u8.length >= 30 && ascii(0, 4) === 'RIFF' && ascii(8, 4) === 'WEBP') {
    const kind = ascii(12, 4);
    if (kind === 'VP8X') return [1 + (u8[24] | u8[25] << 8 | u8[26] << 16), 1 + (u8[27] | u8[28] << 8 | u8[29] << 16)];
    if (kind === 'VP8L') { const b = dv.getUint32(21, true); return [1 + (b & 0x3fff), 1 + ((b >> 14) & 0x3fff)]; }
    if (kind === 'VP8 ') return [dv.getUint16(26, true) & 0x3fff, dv.getUint16(28, true) & 0x3fff];
  }
  if (u8.length >= 4 && u8[0] === 0xff && u8[1] === 0xd8) {  // JPEG: walk the segments to a start-of-frame
    let o = 2;
    while (o + 9 < u8.length) {
      if (u8[o] !== 0xff) { o++; continue; }
      const marker = u8[o + 1];
      if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) return [dv.getUint16(o + 7), dv.getUint16(o + 5)];
      if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) { o += 2; continue; }
      o += 2 + dv.getUint16(o + 2);
    }
  }
  return null;  // another format (AVIF, ...): the browser's decoder is asked, and the size checked after
}

class InputProblem extends Error {}

async function decodeFile(file) {
  if (!file) throw new InputProblem('No file was given.');
  if (file.size === 0) throw new InputProblem(`“${file.name}” is empty (0 bytes).`);
  if (file.size > MAX_FILE_BYTES) throw new InputProblem(`“${file.name}” is ${(file.size / 1e6).toFixed(0)} MB; the explainer takes files up to ${MAX_FILE_BYTES / 1e6} MB.`);
  const size = sniffSize(await file.slice(0, 262144).arrayBuffer());
  const tooBig = (w, h) => new InputProblem(`“${file.name}” is ${w} × ${h} pixels (${(w * h / 1e6).toFixed(0)} MP); the explainer takes images up to ${MAX_PIXELS / 1e6} MP: scale it down first.`);
  if (size && size[0] * size[1] > MAX_PIXELS) throw tooBig(...size);
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, {imageOrientation: 'from-image'});
  } catch (e) {
    throw new InputProblem(`“${file.name}” is not an image this browser can decode${file.type ? ` (${file.type})` : ''}.`);
  }
  try {
    if (bitmap.width * bitmap.height > MAX_PIXELS) throw tooBig(bitmap.width, bitmap.height);
    if (bitmap.width < 1 || bitmap.height < 1) throw new InputProblem(`“${file.name}” has no pixels.`);
    return {imageData: toModelSize(bitmap, bitmap.width, bitmap.height), width: bitmap.width, height: bitmap.height};
  } finally {
    bitmap.close();
  }
}

// ---------------------------------------------------------------- drawing
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
function viridis(t) {
  t = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(t)), f = t - i;
  return VIRIDIS[i].map((a, j) => Math.round(a + f * (VIRIDIS[i + 1][j] - a)));
}
function diverging(t) {  // t in [-1, 1]: blue, white, red
  const a = Math.min(1, Math.abs(t));
  return t < 0 ? [Math.round(255 * (1 - a) + 33 * a), Math.round(255 * (1 - a) + 102 * a), Math.round(255 * (1 - a) + 172 * a)]
               : [Math.round(255 * (1 - a) + 178 * a), Math.round(255 * (1 - a) + 24 * a), Math.round(255 * (1 - a) + 43 * a)];
}

// values (w*h, row-major) -> canvas of w x h cells, each `scale` pixels.
function drawMap(target, values, w, h, colour) {
  const img = new ImageData(w, h);
  for (let i = 0; i < w * h; i++) {
    const [r, g, b] = colour(values[i]);
    img.data.set([r, g, b, 255], 4 * i);
  }
  const small = canvas(w, h);
  small.getContext('2d').putImageData(img, 0, 0);
  const ctx = target.getContext('2d');
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, target.width, target.height);
  ctx.drawImage(small, 0, 0, target.width, target.height);
}

function range(values) {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
  return [lo, hi];
}

const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v; else if (k === 'text') e.textContent = v; else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
};

// ---------------------------------------------------------------- the explainer
export function mount(root) {
  root.classList.add('cxe');
  const status = root.querySelector('[data-cxe-status]') || root.appendChild(el('p', {'data-cxe-status': ''}));
  const say = (text, kind = 'info') => { status.textContent = text; status.dataset.kind = kind; };
  if (!document.querySelector('link[data-cxe-css]')) {
    document.head.appendChild(el('link', {rel: 'stylesheet', href: new URL('explainer.css', BASE).href, 'data-cxe-css': ''}));
  }
  const api = {modelName: null, timings: {}, sprite: null};
  window.convmixerExplainer = api;
  let info = null, engine = null, spritePixels = null;

  api.ready = (async () => {
    if (typeof WebAssembly !== 'object') throw new Error('this browser has no WebAssembly');
    if (typeof Worker !== 'function') throw new Error('this browser has no Web Workers');
    say('Loading the model (2.4 MB) and the WebAssembly runtime (15 MB) …');
    const [infoJson, spriteJson, spriteImage] = await Promise.all([
      fetch(new URL('model/model.json', BASE)).then(r => { if (!r.ok) throw new Error(`model/model.json: HTTP ${r.status}`); return r.json(); }),
      fetch(new URL('sprite.json', BASE)).then(r => r.json()),
      new Promise((resolve, reject) => { const img = new Image(); img.onload = () => resolve(img); img.onerror = () => reject(new Error('sprite.png did not load')); img.src = new URL('sprite.png', BASE).href; }),
    ]);
    info = infoJson; api.sprite = spriteJson; api.modelName = info.checkpoint;
    const sc = canvas(spriteImage.width, spriteImage.height), sctx = sc.getContext('2d', {willReadFrequently: true});
    sctx.drawImage(spriteImage, 0, 0);
    spritePixels = sctx;
    engine = new Engine();
    await engine.call({type: 'init', ortUrl: new URL('vendor/ort.wasm.min.mjs', BASE).href,
                       vendorUrl: new URL('vendor/', BASE).href, modelUrl: new URL(`model/${info.onnx}`, BASE).href});
    api.timings.ready = performance.now();
    return api;
  })();
  api.modelName = root.dataset.model || null;  // the page names it; model.json's value once read

  api.spriteImage = (i) => {
    const e = api.sprite.images[i];
    return spritePixels.getImageData(e.x, e.y, api.sprite.tile, api.sprite.tile);
  };

  api.predict = async (imageData, {cover = [], intermediates = false} = {}) => {
    await api.ready;
    const image = asModelImage(imageData);
    const data = normalise(image, info, cover);
    const outputs = intermediates ? info.outputs : ['logits'];
    const reply = await engine.call({type: 'run', data, n: 1, size: SIZE, outputs}, [data.buffer]);
    const logits = Array.from(reply.outputs.logits.data), probabilities = softmax(logits);
    const predicted = probabilities.indexOf(Math.max(...probabilities));
    if (api.timings.firstPrediction === undefined) api.timings.firstPrediction = performance.now();
    const result = {logits, probabilities, predicted, className: info.classes[predicted], ms: reply.ms};
    if (intermediates) result.grids = Object.fromEntries(info.outputs.slice(1).map(n => [n, reply.outputs[n].data]));
    return result;
  };

  api.occlusion = async (imageData, {cover = [], onProgress = null, batch = 32} = {}) => {
    await api.ready;
    const t0 = performance.now();
    const image = asModelImage(imageData), g = SIZE / info.patch_size, per = 3 * SIZE * SIZE;
    const base = await api.predict(image, {cover});
    const target = base.predicted, base1 = normalise(image, info, cover);
    const probabilities = new Float32Array(g * g);
    for (let start = 0; start < g * g; start += batch) {
      const n = Math.min(batch, g * g - start), data = new Float32Array(n * per);
      for (let j = 0; j < n; j++) {
        data.set(base1, j * per);
        coverPatch(data, j * per, Math.floor((start + j) / g), (start + j) % g, info.patch_size);
      }
      const reply = await engine.call({type: 'run', data, n, size: SIZE, outputs: ['logits']}, [data.buffer]);
      const logits = reply.outputs.logits.data, k = info.classes.length;
      for (let j = 0; j < n; j++) probabilities[start + j] = softmax(Array.from(logits.subarray(j * k, (j + 1) * k)))[target];
      if (onProgress) onProgress(start + n, g * g);
    }
    return {target, base: base.probabilities[target], probabilities, ms: performance.now() - t0};
  };

  api.ready.then(() => buildUI(root, api, info, say)).catch((e) => {
    say(`The model cannot run in this browser here (${e.message}); the results computed with PyTorch are shown below. ` +
        'Serve the built book with python -m http.server -d _build/html and open it over http://localhost.', 'error');
  });
  return api;
}

function buildUI(root, api, info, say) {
  const g = SIZE / info.patch_size, scale = 8, CLASSES = info.classes;
  const state = {image: null, title: '', cover: new Set(), layer: 1, channel: 0, grids: null, occlusion: null, token: 0};

  // Layout
  const gallery = el('canvas', {class: 'cxe-gallery', width: 320, height: 32 * Math.ceil(api.sprite.images.length / 10),
                                'aria-label': 'test images: click one to explain it', role: 'img'});
  const file = el('input', {type: 'file', accept: 'image/*', id: 'cxe-file'});
  const drop = el('label', {class: 'cxe-drop', for: 'cxe-file'}, 'Drop an image here, or click to choose one (any size: its centre square is shrunk to 32 × 32).');
  const view = el('canvas', {class: 'cxe-view', width: SIZE * scale, height: SIZE * scale, 'aria-label': 'the image as the model sees it; click a patch to cover it'});
  const heat = el('canvas', {class: 'cxe-view', width: SIZE * scale, height: SIZE * scale, 'aria-label': 'occlusion map'});
  const probs = el('div', {class: 'cxe-probs'});
  const occButton = el('button', {type: 'button', class: 'cxe-button'}, 'Occlusion map');
  const clearButton = el('button', {type: 'button', class: 'cxe-button'}, 'Uncover all');
  const progress = el('progress', {max: g * g, value: 0, hidden: ''});
  const occText = el('p', {class: 'cxe-note'}, `Press “Occlusion map” to cover each of the ${g * g} patches in turn.`);
  const layerSelect = el('select', {id: 'cxe-layer'}, ...info.outputs.slice(1).map((n, i) =>
    el('option', {value: String(i)}, i === 0 ? 'z0: patch embedding' : `z${i}: after layer ${i}`)));
  layerSelect.value = '1';
  const channelInput = el('input', {type: 'range', id: 'cxe-channel', min: '0', max: String(info.dim - 1), value: '0'});
  const channelOut = el('output', {for: 'cxe-channel'}, '0');
  const fmap = el('canvas', {class: 'cxe-map', width: 192, height: 192, 'aria-label': 'feature map'});
  const kernel = el('canvas', {class: 'cxe-kernel', width: 100, height: 100, 'aria-label': 'depthwise kernel'});
  const kernelNote = el('p', {class: 'cxe-note'});
  const mapNote = el('p', {class: 'cxe-note'});
  const top = el('div', {class: 'cxe-top'});
  const title = el('p', {class: 'cxe-title'});

  root.append(
    el('div', {class: 'cxe-row'},
      el('figure', {}, gallery, el('figcaption', {}, `${api.sprite.images.length} CIFAR-10 test images (a row per class): click one.`)),
      el('div', {class: 'cxe-col'}, drop, file, title, probs)),
    el('div', {class: 'cxe-row'},
      el('figure', {}, view, el('figcaption', {}, `As the model sees it: 32 × 32 pixels cut into ${g} × ${g} patches of ${info.patch_size} × ${info.patch_size}. Click patches to cover them with the training mean.`)),
      el('figure', {}, heat, el('figcaption', {}, 'Occlusion map: how much covering each patch lowers the probability of the predicted class.')),
      el('div', {class: 'cxe-col'}, el('div', {}, occButton, ' ', clearButton), progress, occText)),
    el('div', {class: 'cxe-row'},
      el('div', {class: 'cxe-col'},
        el('label', {for: 'cxe-layer'}, 'Token grid '), layerSelect,
        el('br'), el('label', {for: 'cxe-channel'}, 'Channel '), channelInput, ' ', channelOut,
        el('figure', {}, fmap, mapNote)),
      el('div', {class: 'cxe-col'}, el('figure', {}, kernel, kernelNote)),
      el('div', {class: 'cxe-col'}, el('p', {class: 'cxe-note'}, 'Most active channels (click one):'), top)));

  // The sprite, each tile scaled up without smoothing
  (() => {
    const ctx = gallery.getContext('2d'), t = api.sprite.tile, cell = gallery.width / 10, tmp = canvas(t, t);
    ctx.imageSmoothingEnabled = false;
    api.sprite.images.forEach((e, i) => {
      tmp.getContext('2d').putImageData(api.spriteImage(i), 0, 0);
      ctx.drawImage(tmp, (i % 10) * cell, Math.floor(i / 10) * cell, cell, cell);
    });
  })();

  const coverList = () => [...state.cover].map(k => [Math.floor(k / g), k % g]);

  function drawView() {
    const ctx = view.getContext('2d'), tmp = canvas(SIZE, SIZE);
    tmp.getContext('2d').putImageData(state.image, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(tmp, 0, 0, view.width, view.height);
    const cell = view.width / g;
    ctx.fillStyle = `rgb(${info.mean.map(m => Math.round(255 * m)).join(',')})`;
    for (const [r, c] of coverList()) ctx.fillRect(c * cell, r * cell, cell, cell);
    ctx.strokeStyle = 'rgba(255,255,255,0.35)';
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (let i = 1; i < g; i++) { ctx.moveTo(i * cell + 0.5, 0); ctx.lineTo(i * cell + 0.5, view.height); ctx.moveTo(0, i * cell + 0.5); ctx.lineTo(view.width, i * cell + 0.5); }
    ctx.stroke();
  }

  function drawProbs(result) {
    probs.replaceChildren(...CLASSES.map((name, i) => {
      const p = result.probabilities[i];
      return el('div', {class: 'cxe-bar' + (i === result.predicted ? ' cxe-best' : '')},
        el('span', {class: 'cxe-name'}, name),
        el('span', {class: 'cxe-track'}, el('span', {class: 'cxe-fill', style: `width:${(100 * p).toFixed(1)}%`})),
        el('span', {class: 'cxe-pct'}, `${(100 * p).toFixed(1)}%`));
    }));
  }

  function drawLayer() {
    if (!state.grids) return;
    const name = info.outputs[1 + state.layer], grid = state.grids[name], n = g * g, ch = state.channel;
    const values = grid.subarray(ch * n, (ch + 1) * n), [lo, hi] = range(values);
    drawMap(fmap, values, g, g, v => viridis(hi > lo ? (v - lo) / (hi - lo) : 0.5));
    mapNote.textContent = `${name}, channel ${ch}: ${g} × ${g} tokens, from ${lo.toFixed(2)} (dark) to ${hi.toFixed(2)} (yellow).`;
    const k = info.kernel_size;
    if (state.layer === 0) {
      const f = info.patch_filters[ch], p = info.patch_size, m = Math.max(...f.map(Math.abs)) || 1;
      const rgb = [];
      for (let y = 0; y < p; y++) for (let x = 0; x < p; x++) rgb.push([0, 1, 2].map(c => f[c * p * p + y * p + x]));
      drawMap(kernel, rgb, p, p, v => v.map(c => Math.round(255 * (0.5 + 0.5 * c / m))));
      kernelNote.textContent = `Patch-embedding filter of channel ${ch}: ${p} × ${p} × 3 weights shown as colour (grey = 0). z0 has no depthwise kernel.`;
    } else {
      const w = info.depthwise_kernels[state.layer - 1][ch], m = Math.max(...w.map(Math.abs)) || 1;
      drawMap(kernel, w, k, k, v => diverging(v / m));
      const centre = w[Math.floor(k * k / 2)];
      kernelNote.textContent = `Layer ${state.layer}'s depthwise kernel for channel ${ch}: ${k} × ${k} weights (red +, blue −; max |w| = ${m.toFixed(3)}, centre ${centre.toFixed(3)}). It mixes each token with its neighbours before the 1 × 1 convolution mixes channels.`;
    }
    // the most active channels of this grid (largest mean activation)
    const means = [];
    for (let c = 0; c < info.dim; c++) { let s = 0; for (let i = 0; i < n; i++) s += grid[c * n + i]; means.push([s / n, c]); }
    means.sort((a, b) => b[0] - a[0]);
    top.replaceChildren(...means.slice(0, 8).map(([mean, c]) => {
      const cv = el('canvas', {class: 'cxe-thumb' + (c === ch ? ' cxe-selected' : ''), width: 64, height: 64, title: `channel ${c}, mean ${mean.toFixed(2)}`});
      const v = grid.subarray(c * n, (c + 1) * n), [a, b] = range(v);
      drawMap(cv, v, g, g, x => viridis(b > a ? (x - a) / (b - a) : 0.5));
      const button = el('button', {type: 'button', class: 'cxe-thumb-button', 'aria-label': `channel ${c}`}, cv, el('span', {}, `#${c}`));
      button.addEventListener('click', () => { state.channel = c; channelInput.value = String(c); channelOut.textContent = String(c); drawLayer(); });
      return button;
    }));
  }

  function drawOcclusion() {
    const ctx = heat.getContext('2d');
    ctx.clearRect(0, 0, heat.width, heat.height);
    if (!state.occlusion) return;
    const o = state.occlusion, drops = Array.from(o.probabilities, p => o.base - p);
    const m = Math.max(1e-6, ...drops.map(Math.abs));
    const tmp = canvas(SIZE, SIZE);
    tmp.getContext('2d').putImageData(state.image, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.globalAlpha = 0.35;
    ctx.drawImage(tmp, 0, 0, heat.width, heat.height);
    ctx.globalAlpha = 0.75;
    const cell = heat.width / g;
    drops.forEach((d, i) => { const [r, gg, b] = diverging(d / m); ctx.fillStyle = `rgb(${r},${gg},${b})`; ctx.fillRect((i % g) * cell, Math.floor(i / g) * cell, cell, cell); });
    ctx.globalAlpha = 1;
    const best = drops.indexOf(Math.max(...drops)), flips = Array.from(o.probabilities).filter(p => p < 0.5 * o.base).length;
    occText.textContent = `P(${CLASSES[o.target]}) = ${(100 * o.base).toFixed(1)}% uncovered. Red patches lower it when covered, blue ones raise it; ` +
      `the largest drop, ${(100 * drops[best]).toFixed(1)} points, is at patch (${Math.floor(best / g)}, ${best % g}); ` +
      `${flips} of ${g * g} patches halve it on their own. ${g * g} forward passes in ${(o.ms / 1000).toFixed(1)} s.`;
  }

  async function update() {
    const token = ++state.token;
    try {
      const result = await api.predict(state.image, {cover: coverList(), intermediates: true});
      if (token !== state.token) return;
      state.grids = result.grids;
      drawProbs(result);
      drawLayer();
      say(`${state.title}: the model says ${result.className} (${(100 * result.probabilities[result.predicted]).toFixed(1)}%)` +
          `${state.cover.size ? `, with ${state.cover.size} patch${state.cover.size > 1 ? 'es' : ''} covered` : ''}; the forward pass (all ten outputs) took ${result.ms.toFixed(0)} ms.`);
    } catch (e) {
      say(`The model could not run on this image: ${e.message}`, 'error');
    }
  }

  function setImage(imageData, label) {
    state.image = imageData; state.title = label; state.cover.clear(); state.occlusion = null;
    title.textContent = label;
    drawView(); drawOcclusion();
    occText.textContent = `Press “Occlusion map” to cover each of the ${g * g} patches in turn.`;
    return update();
  }

  gallery.addEventListener('click', (event) => {
    const rect = gallery.getBoundingClientRect(), cell = rect.width / 10;
    const i = Math.floor((event.clientY - rect.top) / cell) * 10 + Math.floor((event.clientX - rect.left) / cell);
    const e = api.sprite.images[i];
    if (e) setImage(api.spriteImage(i), `Test image ${e.index} (${e.class})`);
  });

  view.addEventListener('click', (event) => {
    const rect = view.getBoundingClientRect(), cell = rect.width / g;
    const r = Math.floor((event.clientY - rect.top) / cell), c = Math.floor((event.clientX - rect.left) / cell);
    if (r < 0 || c < 0 || r >= g || c >= g) return;
    const key = r * g + c;
    if (state.cover.has(key)) state.cover.delete(key); else state.cover.add(key);
    drawView();
    update();
  });

  clearButton.addEventListener('click', () => { state.cover.clear(); drawView(); update(); });

  occButton.addEventListener('click', async () => {
    occButton.disabled = true; progress.hidden = false; progress.value = 0;
    try {
      state.occlusion = await api.occlusion(state.image, {cover: coverList(), onProgress: (done) => { progress.value = done; }});
      drawOcclusion();
    } catch (e) {
      occText.textContent = `The occlusion map could not be computed: ${e.message}`;
    } finally {
      occButton.disabled = false; progress.hidden = true;
    }
  });

  layerSelect.addEventListener('change', () => { state.layer = Number(layerSelect.value); drawLayer(); });
  channelInput.addEventListener('input', () => { state.channel = Number(channelInput.value); channelOut.textContent = channelInput.value; drawLayer(); });

  async function takeFile(f) {
    try {
      say(`Reading “${f ? f.name : ''}” …`);
      const {imageData, width, height} = await decodeFile(f);
      await setImage(imageData, `Your image “${f.name}” (${width} × ${height}, centre square shrunk to 32 × 32)`);
    } catch (e) {
      say(e instanceof InputProblem ? e.message : `That file could not be used: ${e.message}`, 'error');
    } finally {
      file.value = '';
    }
  }
  file.addEventListener('change', () => { if (file.files.length) takeFile(file.files[0]); });
  for (const target of [drop, view]) {
    target.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('cxe-over'); });
    target.addEventListener('dragleave', () => drop.classList.remove('cxe-over'));
    target.addEventListener('drop', (e) => { e.preventDefault(); drop.classList.remove('cxe-over'); if (e.dataTransfer.files.length) takeFile(e.dataTransfer.files[0]); });
  }

  api.ui = {setImage, takeFile, state};
  const first = api.sprite.images[0];
  return setImage(api.spriteImage(0), `Test image ${first.index} (${first.class})`);
}
