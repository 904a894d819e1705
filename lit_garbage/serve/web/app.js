// The browser demo: the exported TensorFlow.js graph model, run entirely client-side.
//
// Files (served by scripts/serve_demo.py): model/tfjs/model.json (+ shards), model/metadata.json
// (class names, image size), model/labels.txt (fallback for the names).
//
// Preprocessing follows the project's one contract (lit_garbage/transforms.py): decode with EXIF
// orientation applied, alpha composited on white, RGB, resized to image_size x image_size, values / 255,
// NHWC float32 (the TFJS model's layout). Only the resize filter differs: the browser's canvas scaler
// is not PIL's antialiased bilinear, so a photo larger than the model input can get slightly different
// numbers than in Python (large downscales go through 2x halving steps to stay close to an area filter).
// An image already at image_size x image_size is copied pixel for pixel: identical input, identical output.
//
// Hooks for automated tests (and curious people): <body data-state="loading|ready|running|done|error"
// data-runs="N">, each result row carries data-label / data-prob, and window.lastResult holds the
// last probabilities.
'use strict';

const TOP_K = 3;
const els = {};
let model = null;
let classNames = [];
let imageSize = 224;
let busy = Promise.resolve();
let cameraStream = null;

function $(id) { return document.getElementById(id); }

function setStatus(text, isError = false) {
  els.status.textContent = text;
  els.status.classList.toggle('error', isError);
}

function setState(state) { document.body.dataset.state = state; }

async function fetchOk(url, as) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return as === 'json' ? res.json() : res.text();
}

async function chooseBackend() {
  const asked = new URLSearchParams(location.search).get('backend');
  const order = asked ? [asked] : ['wasm', 'webgl', 'cpu'];
  if (tf.wasm && tf.wasm.setWasmPaths) {
    tf.wasm.setWasmPaths(new URL('vendor/tfjs-backend-wasm/', location.href).href);
  }
  for (const name of order) {
    try {
      if (await tf.setBackend(name)) { await tf.ready(); return name; }
    } catch (err) {
      console.warn(`tfjs backend ${name} unavailable:`, err);
    }
  }
  throw new Error(`no TensorFlow.js backend could start (tried ${order.join(', ')})`);
}

async function loadModel() {
  setState('loading');
  if (typeof tf === 'undefined') {
    throw new Error('TensorFlow.js did not load (vendor/tfjs/tf.min.js): run `npm ci` in the project and ' +
                    'serve the page with scripts/serve_demo.py');
  }
  const backend = await chooseBackend();
  let meta = null;
  try { meta = await fetchOk('model/metadata.json', 'json'); } catch (err) { console.warn(err); }
  if (meta && Array.isArray(meta.class_names)) {
    classNames = meta.class_names;
  } else {
    classNames = (await fetchOk('model/labels.txt')).split('\n').map((s) => s.trim()).filter(Boolean);
  }
  model = await tf.loadGraphModel('model/tfjs/model.json');
  const shape = model.inputs[0].shape || [];
  imageSize = (meta && meta.image_size) || shape[1] || 224;
  if (shape[1] > 0 && shape[1] !== imageSize) throw new Error(`metadata image_size ${imageSize} != model input ${shape[1]}`);
  tf.tidy(() => model.predict(tf.zeros([1, imageSize, imageSize, 3])));  // warm-up: compile kernels once

  for (const el of document.querySelectorAll('.image-size')) el.textContent = imageSize;
  const bits = [];
  if (meta && meta.backbone) bits.push(meta.backbone);
  bits.push(`${classNames.length} classes`, `${imageSize} px input`);
  const acc = meta && meta.training_metrics && meta.training_metrics.test_acc;
  if (typeof acc === 'number') bits.push(`test accuracy ${(100 * acc).toFixed(1)} %`);
  els.modelInfo.textContent = `model: ${bits.join(' · ')}`;
  els.known.textContent = `This model knows ${classNames.length} classes: ${classNames.join(', ')}.`;
  els.backendInfo.textContent = `TensorFlow.js ${tf.version.tfjs} · ${backend} backend · runs on this device`;
  setStatus('Ready: drop a photo, choose one, or use the camera.');
  setState('ready');
}

// ------------------------------------------------------------------ preprocessing (the contract)

async function decode(blob) {
  // EXIF orientation applied; no colour-profile conversion (Pillow ignores embedded ICC profiles too).
  return createImageBitmap(blob, { imageOrientation: 'from-image', colorSpaceConversion: 'none',
                                   premultiplyAlpha: 'none' });
}

// Draw `source` at size x size on a white background; large downscales halve step by step first.
function resizeToCanvas(source, width, height, size, canvas) {
  let src = source;
  let w = width;
  let h = height;
  while (w >= 4 * size || h >= 4 * size) {
    const nw = Math.max(size, Math.round(w / 2));
    const nh = Math.max(size, Math.round(h / 2));
    const step = document.createElement('canvas');
    step.width = nw; step.height = nh;
    const sctx = step.getContext('2d');
    sctx.imageSmoothingEnabled = true;
    sctx.imageSmoothingQuality = 'high';
    sctx.drawImage(src, 0, 0, w, h, 0, 0, nw, nh);
    src = step; w = nw; h = nh;
  }
  canvas.width = size; canvas.height = size;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.fillStyle = '#ffffff';  // alpha is composited on white, as load_rgb does
  ctx.fillRect(0, 0, size, size);
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(src, 0, 0, w, h, 0, 0, size, size);
  return ctx.getImageData(0, 0, size, size).data;
}

function toInputTensor(rgba, size) {
  const x = new Float32Array(size * size * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    x[j] = rgba[i] / 255;
    x[j + 1] = rgba[i + 1] / 255;
    x[j + 2] = rgba[i + 2] / 255;
  }
  return tf.tensor4d(x, [1, size, size, 3]);
}

// ------------------------------------------------------------------ prediction and display

async function classify(source, width, height, name) {
  setState('running');
  setStatus(`Classifying ${name}…`);
  const t0 = performance.now();
  const rgba = resizeToCanvas(source, width, height, imageSize, els.modelInput);
  const input = toInputTensor(rgba, imageSize);
  const output = model.predict(input);
  const probs = Array.from(await output.data());
  input.dispose();
  output.dispose();
  const ms = performance.now() - t0;
  const order = probs.map((p, i) => i).sort((a, b) => probs[b] - probs[a] || a - b);
  const top = order.slice(0, TOP_K).map((i) => ({ label: classNames[i] || `class ${i}`, prob: probs[i] }));
  window.lastResult = { name, probabilities: probs, top, ms };
  showResults(top);
  setStatus(`${name}: ${ms.toFixed(0)} ms on this device`);
  document.body.dataset.runs = String(Number(document.body.dataset.runs) + 1);
  setState('done');
}

function showResults(top) {
  els.results.replaceChildren(...top.map((t) => {
    const li = document.createElement('li');
    li.dataset.label = t.label;
    li.dataset.prob = String(t.prob);
    const row = document.createElement('div');
    row.className = 'row';
    const label = document.createElement('span');
    label.className = 'label';
    label.textContent = t.label;
    const conf = document.createElement('span');
    conf.className = 'confidence';
    conf.textContent = `${(100 * t.prob).toFixed(2)} %`;
    row.append(label, conf);
    const bar = document.createElement('div');
    bar.className = 'bar';
    bar.setAttribute('role', 'meter');
    bar.setAttribute('aria-valuemin', '0');
    bar.setAttribute('aria-valuemax', '100');
    bar.setAttribute('aria-valuenow', (100 * t.prob).toFixed(2));
    bar.setAttribute('aria-label', `${t.label} confidence`);
    const fill = document.createElement('div');
    fill.className = 'fill';
    fill.style.width = `${(100 * t.prob).toFixed(2)}%`;
    bar.append(fill);
    li.append(row, bar);
    return li;
  }));
}

function fail(message) {
  setStatus(message, true);
  els.results.replaceChildren();
  document.body.dataset.errors = String(Number(document.body.dataset.errors || 0) + 1);
  setState('error');
}

function handleFile(file) {
  if (!file) return;
  busy = busy.then(async () => {
    if (!model) return fail('The model is not loaded yet.');
    els.fileName.textContent = file.name;
    let bitmap;
    try {
      bitmap = await decode(file);
    } catch (err) {
      return fail(`“${file.name}” could not be read as an image (${err.message || err}).`);
    }
    stopCamera();
    showPreview(URL.createObjectURL(file));
    try {
      await classify(bitmap, bitmap.width, bitmap.height, file.name);
    } catch (err) {
      fail(`Prediction failed: ${err.message || err}`);
    } finally {
      bitmap.close();
    }
  });
}

function showPreview(url) {
  if (els.preview.src.startsWith('blob:')) URL.revokeObjectURL(els.preview.src);
  els.preview.src = url;
  els.preview.hidden = false;
  els.camera.hidden = true;
  els.dropHint.hidden = true;
}

// ------------------------------------------------------------------ camera (where the browser allows it)

async function startCamera() {
  try {
    cameraStream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment' } });
  } catch (err) {
    return fail(`The camera is not available: ${err.message || err}`);
  }
  els.camera.srcObject = cameraStream;
  els.camera.hidden = false;
  els.preview.hidden = true;
  els.dropHint.hidden = true;
  els.snapButton.hidden = false;
  els.cameraButton.hidden = true;
}

function stopCamera() {
  if (!cameraStream) return;
  for (const track of cameraStream.getTracks()) track.stop();
  cameraStream = null;
  els.camera.srcObject = null;
  els.snapButton.hidden = true;
  els.cameraButton.hidden = false;
}

function snap() {
  const v = els.camera;
  if (!v.videoWidth) return;
  const still = document.createElement('canvas');
  still.width = v.videoWidth; still.height = v.videoHeight;
  still.getContext('2d').drawImage(v, 0, 0);
  stopCamera();
  still.toBlob((blob) => {
    const file = new File([blob], 'camera photo.png', { type: 'image/png' });
    handleFile(file);
  }, 'image/png');
}

// ------------------------------------------------------------------ wiring

function init() {
  Object.assign(els, {
    status: $('status'), results: $('results'), preview: $('preview'), camera: $('camera'),
    dropzone: $('dropzone'), dropHint: $('drop-hint'), fileInput: $('file-input'), fileName: $('file-name'),
    modelInput: $('model-input'), known: $('known'), modelInfo: $('model-info'), backendInfo: $('backend-info'),
    cameraButton: $('camera-button'), snapButton: $('snap-button'),
  });
  els.fileInput.addEventListener('change', () => {
    handleFile(els.fileInput.files[0]);
    els.fileInput.value = '';  // choosing the same file again still triggers a run
  });
  const dz = els.dropzone;
  dz.addEventListener('click', () => { if (!cameraStream) els.fileInput.click(); });
  dz.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); els.fileInput.click(); }
  });
  for (const type of ['dragenter', 'dragover']) {
    dz.addEventListener(type, (e) => { e.preventDefault(); dz.classList.add('dragging'); });
  }
  for (const type of ['dragleave', 'drop']) {
    dz.addEventListener(type, (e) => { e.preventDefault(); dz.classList.remove('dragging'); });
  }
  dz.addEventListener('drop', (e) => handleFile(e.dataTransfer.files[0]));
  window.addEventListener('dragover', (e) => e.preventDefault());  // a near-miss drop must not navigate away
  window.addEventListener('drop', (e) => e.preventDefault());
  window.addEventListener('paste', (e) => {
    const item = [...(e.clipboardData ? e.clipboardData.items : [])].find((i) => i.type.startsWith('image/'));
    if (item) handleFile(item.getAsFile());
  });
  if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia && window.isSecureContext) {
    els.cameraButton.hidden = false;
    els.cameraButton.addEventListener('click', startCamera);
    els.snapButton.addEventListener('click', snap);
  }
  loadModel().catch((err) => {
    fail(`The model could not be loaded: ${err.message || err}`);
    console.error(err);
  });
}

document.addEventListener('DOMContentLoaded', init);
