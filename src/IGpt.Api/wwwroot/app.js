// The IGpt web page: pick a model, pick one of its examples, draw or upload an image, complete it (rows streamed in
// as they are drawn, beside the original), draw unconditional samples, classify.
import { apiKey, classify, generate, getExamples, getModels, setApiKey } from './api.js';
import { Drawing } from './drawing.js';
import { clearError, clearFieldErrors, showError, showFieldProblem } from './errors.js';
import { base64Blob, classBar, decode, drawRow } from './pixels.js';

const $ = (id) => document.getElementById(id);
const ui = {
  form: $('controls'), model: $('model'), modelInfo: $('model-info'),
  drawing: $('drawing'), brushSize: $('brush-size'), brushSizeValue: $('brush-size-value'),
  greyTool: $('grey-tool'), brushGrey: $('brush-grey'), greySwatch: $('brush-grey-swatch'),
  colourTool: $('colour-tool'), brushColour: $('brush-colour'), clear: $('clear'),
  upload: $('upload'), sourceInfo: $('source-info'),
  preview: $('preview'), previewCut: $('preview-cut'), previewShade: $('preview-shade'),
  rows: $('rows'), rowsValue: $('rows-value'),
  complete: $('complete'), samples: $('samples'), classify: $('classify'), stop: $('stop'),
  examplesArea: $('examples-area'), examples: $('examples'),
  status: $('status'), results: $('results'), classesStatus: $('classes-status'), bars: $('bars'),
  original: $('original'), originalImage: $('original-image'), originalCut: $('original-cut'),
  keyCard: $('key-card'), apiKey: $('api-key'), useKey: $('use-key'),
};
const samplingFields = ['n', 'temperature', 'top_k', 'top_p', 'seed'];
/** Which error slot a problem's `errors` key goes to; keys not here go next to the button. */
const fieldSlots = new Set(['model', 'image', 'rows', ...samplingFields]);

let models = [];
let model = null;          // the chosen model (a /v1/models entry)
let upload = null;         // the uploaded File (or chosen example) while it is the source, else null (the drawing is)
let uploadImage = null;    // the uploaded file decoded, for the preview
let running = null;        // AbortController of the request in flight

const drawing = new Drawing(ui.drawing, () => {
  upload = null;
  markExample(null);
  ui.sourceInfo.textContent = 'Using your drawing.';
  clearError('image');
  updatePreview();
});

const clearErrors = (button) => clearFieldErrors(fieldSlots, button);
const showProblem = (button, error) => showFieldProblem(fieldSlots, button, error, askForKey);

// ---- API key (shown only once the service answers 401) ----

function askForKey(error) {
  ui.keyCard.hidden = false;
  showError('api-key', apiKey() ? `${error.message} Enter another key.` : error.message);
  ui.apiKey.focus();
}

ui.useKey.addEventListener('click', () => {
  setApiKey(ui.apiKey.value.trim());
  ui.apiKey.value = '';
  clearError('api-key');
  clearError('model');
  loadModels();
});
ui.apiKey.addEventListener('keydown', (event) => {
  if (event.key === 'Enter') {
    event.preventDefault();
    ui.useKey.click();
  }
});

// ---- models ----

async function loadModels() {
  try {
    models = await getModels();
  } catch (error) {
    ui.model.innerHTML = '<option>No models</option>';
    showProblem('model', error);
    return;
  }
  if (apiKey()) ui.keyCard.hidden = true;
  const ready = models.filter((m) => m.status === 'ready');
  ui.model.replaceChildren(...ready.map((m) => new Option(`${m.id} (${m.width}×${m.height} ${m.channels === 1 ? 'grey' : 'colour'})`, m.id)));
  if (!ready.length) {
    ui.model.append(new Option('No model is ready'));
    showError('model', models.length ? 'Every model failed to load: see GET /v1/models.' : 'The service has no models.');
    setBusy(false);
    return;
  }
  ui.model.disabled = false;
  const failed = models.length - ready.length;
  if (failed) ui.modelInfo.dataset.failed = `${failed} model${failed > 1 ? 's' : ''} failed to load.`;
  const wanted = new URLSearchParams(location.search).get('model');
  if (ready.some((m) => m.id === wanted)) ui.model.value = wanted;
  selectModel();
}

function selectModel() {
  model = models.find((m) => m.id === ui.model.value) || null;
  if (!model) return;
  const grey = model.channels === 1;
  const info = [`${model.width}×${model.height} pixels, ${grey ? 'grey' : 'colour'}, ${model.palette_size} colours`,
    model.has_classifier ? `${model.classes.length} classes` : 'no classifier',
    model.execution_provider ? `runs on ${model.execution_provider}` : null, ui.modelInfo.dataset.failed].filter(Boolean);
  ui.modelInfo.textContent = (model.description ? `${model.description}. ` : '') + info.join(' · ');
  ui.greyTool.hidden = !grey;
  ui.colourTool.hidden = grey;
  drawing.setShape(model.width, model.height, grey);
  updateBrush();

  ui.preview.width = model.width;
  ui.preview.height = model.height;
  const previewScale = displayScale(model);
  ui.preview.style.width = `${model.width * previewScale}px`;
  ui.preview.style.height = `${model.height * previewScale}px`;
  ui.rows.max = String(model.height - 1);
  ui.rows.value = String(Math.floor(model.height / 2));
  updateRows();
  updatePreview();
  ui.classify.disabled = !model.has_classifier;
  ui.classify.title = model.has_classifier ? '' : 'This model has no classifier.';
  setBusy(false);
  showExamples(model);
}

// ---- examples: a few test images shipped with the model's package, loaded into the image box in one click ----

const examplesOf = new Map(); // model id -> its examples, fetched once

async function showExamples(m) {
  ui.examples.replaceChildren();
  ui.examplesArea.hidden = true;
  let examples = examplesOf.get(m.id);
  if (!examples) {
    try {
      examples = await getExamples(m.id);
    } catch {
      return; // examples are a shortcut: without them the page still takes drawings and files
    }
    examplesOf.set(m.id, examples);
  }
  if (model !== m || !examples.length) return; // another model was picked meanwhile, or this one has none
  ui.examples.replaceChildren(...examples.map((example) => exampleButton(m, example)));
  ui.examplesArea.hidden = false;
}

function exampleButton(m, example) {
  const label = exampleLabel(m, example.name);
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'example';
  button.dataset.name = example.name;
  button.setAttribute('aria-pressed', 'false');
  button.title = `${label} (${example.width}×${example.height}): use it as the image`;
  const thumbnail = new Image();
  thumbnail.alt = '';
  thumbnail.src = `data:image/png;base64,${example.image}`;
  const scale = Math.max(1, Math.round(96 / Math.max(example.width, example.height)));
  thumbnail.width = example.width * scale;
  thumbnail.height = example.height * scale;
  const caption = document.createElement('span');
  caption.textContent = label;
  button.append(thumbnail, caption);
  button.addEventListener('click', () => useExample(m, example, button));
  return button;
}

/** "4-dress" -> "Dress": examples are named <n>-<class>, with the class as a slug; other names are shown as they are. */
function exampleLabel(m, name) {
  const slug = (text) => text.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
  const rest = name.replace(/^\d+-/, '');
  return m.classes.find((c) => slug(c) === rest) || rest.replace(/[-_]+/g, ' ');
}

async function useExample(m, example, button) {
  clearError('image');
  const file = new File([base64Blob(example.image)], `${example.name}.png`, { type: 'image/png' });
  try {
    uploadImage = await decode(file);
  } catch {
    showError('image', `The example ${example.name} could not be read as an image.`);
    return;
  }
  upload = file;
  ui.upload.value = '';
  drawing.showImage(uploadImage);
  markExample(button);
  ui.sourceInfo.textContent = `Using the example ${exampleLabel(m, example.name)} (${uploadImage.naturalWidth}×${uploadImage.naturalHeight}) from the model's test set.`;
  updatePreview();
}

/** Shows which example is the image (none once the user draws, uploads or clears). */
function markExample(button) {
  for (const b of ui.examples.querySelectorAll('.example')) b.setAttribute('aria-pressed', String(b === button));
}

/** Enlargement so that a 8-, 14-, 28- or 32-pixel image is comfortable to look at (nearest neighbour). */
function displayScale(m) {
  return Math.max(2, Math.min(28, Math.round(192 / Math.max(m.width, m.height))));
}

// ---- input image and preview ----

function updateBrush() {
  ui.brushSizeValue.value = ui.brushSize.value;
  const grey = Number(ui.brushGrey.value);
  ui.greySwatch.style.background = `rgb(${grey} ${grey} ${grey})`;
  drawing.brush = Number(ui.brushSize.value);
  drawing.colour = model && model.channels === 1 ? `rgb(${grey} ${grey} ${grey})` : ui.brushColour.value;
}

function updateRows() {
  const rows = Number(ui.rows.value);
  ui.rowsValue.value = String(rows);
  const fraction = model ? rows / model.height : 0.5;
  ui.previewCut.style.top = `${fraction * 100}%`;
  ui.previewShade.style.top = `${fraction * 100}%`;
  ui.rows.setAttribute('aria-valuetext', model ? `${rows} of ${model.height} rows` : String(rows));
}

/** The input at model resolution, as the service will see it (grey = BT.601 luma, transparency on white). */
function updatePreview() {
  if (!model) return;
  const ctx = ui.preview.getContext('2d', { willReadFrequently: true });
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = 'high';
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, model.width, model.height);
  ctx.drawImage(upload ? uploadImage : ui.drawing, 0, 0, model.width, model.height);
  if (model.channels === 1) {
    const image = ctx.getImageData(0, 0, model.width, model.height);
    const d = image.data;
    for (let i = 0; i < d.length; i += 4) {
      const y = Math.round(0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2]);
      d[i] = d[i + 1] = d[i + 2] = y;
    }
    ctx.putImageData(image, 0, 0);
  }
}

async function onUpload() {
  const file = ui.upload.files[0];
  clearError('image');
  if (!file) return;
  try {
    const image = await decode(file);
    upload = file;
    uploadImage = image;
    drawing.showImage(image);
    markExample(null);
    ui.sourceInfo.textContent = `Using ${file.name} (${image.naturalWidth}×${image.naturalHeight}), sent as it is. Drawing on it uses the drawing instead.`;
    updatePreview();
  } catch {
    showError('image', `${file.name} could not be read as an image.`);
  }
}

async function imageBlob() {
  if (upload) return [upload, upload.name];
  return [await drawing.toBlob(), 'drawing.png'];
}

// ---- requests ----

/** The sampling fields as typed (empty ones are left out so the service's defaults apply). */
function samplingForm() {
  const form = new FormData();
  for (const name of samplingFields) {
    const input = $(name);
    if (input.validity.badInput) throw new FieldError(name, 'Enter a number.');
    const value = input.value.trim();
    if (value !== '') form.set(name, value);
  }
  return form;
}

class FieldError extends Error {
  constructor(field, message) { super(message); this.field = field; }
}

function setBusy(busy) {
  const idle = !busy && !!model;
  ui.complete.disabled = !idle;
  ui.samples.disabled = !idle;
  ui.classify.disabled = !idle || !model.has_classifier;
  ui.model.disabled = busy || !models.some((m) => m.status === 'ready');
  ui.stop.hidden = !running;
}

async function runGeneration(kind, button) {
  if (!model || running) return;
  clearErrors(button);
  let form;
  try {
    form = samplingForm();
    if (kind === 'completions') {
      const [blob, name] = await imageBlob();
      form.set('image', blob, name);
      form.set('rows', ui.rows.value);
    }
  } catch (error) {
    if (error instanceof FieldError) showError(error.field, error.message);
    else showError(button, String(error.message || error));
    return;
  }

  const m = model;
  const rows = kind === 'completions' ? Number(ui.rows.value) : 0;
  const n = Number(form.get('n') || 1);
  const canvases = makeSampleCanvases(m, Math.max(1, Math.min(16, Number.isFinite(n) ? n : 1)), rows);
  showOriginal(m, kind === 'completions' ? rows : null);
  ui.results.dataset.state = 'streaming';
  ui.results.dataset.kind = kind;
  ui.results.dataset.rowsReceived = '0';
  ui.status.textContent = kind === 'completions' ? 'Sending the image…' : 'Asking for samples…';
  const started = performance.now();
  let received = 0;
  running = new AbortController();
  setBusy(true);
  try {
    const result = await generate(m.id, kind, form, (event, data) => {
      if (event === 'row') {
        const canvas = canvases[data.sample] || (canvases[data.sample] = addSampleCanvas(m, data.sample, rows));
        drawRow(canvas, m, data.row, data.pixels);
        received += 1;
        ui.results.dataset.rowsReceived = String(received);
        const total = canvases.length * (m.height - rows);
        ui.status.textContent = `Drawing… ${received} of ${total} rows (${(data.elapsed_ms / 1000).toFixed(1)} s)`;
      } else if (event === 'heartbeat') {
        ui.status.textContent = data.state === 'queued' ? 'Waiting for a free slot…' : 'Drawing…';
      }
    }, running.signal);
    await showResult(m, result, canvases, rows);
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const t = result.timings || {};
    ui.status.textContent = `${result.images.length} image${result.images.length > 1 ? 's' : ''} in ${seconds} s · seed ${result.seed}`
      + (t.decode_ms !== undefined ? ` · queue ${fmtMs(t.queue_ms)}, prefill ${fmtMs(t.prefill_ms)}, decode ${fmtMs(t.decode_ms)}` : '');
    ui.results.dataset.seed = String(result.seed);
    ui.results.dataset.state = 'done';
  } catch (error) {
    ui.results.dataset.state = 'error';
    if (error.name === 'AbortError') {
      ui.status.textContent = 'Stopped.';
    } else {
      ui.status.textContent = 'The request failed.';
      if (!received) {
        ui.results.replaceChildren();
        ui.original.hidden = true;
      }
      showProblem(button, error);
    }
  } finally {
    running = null;
    setBusy(false);
  }
}

/** Beside the completions: the whole input as the model sees it, with the cut (hidden for samples: rows null). */
function showOriginal(m, rows) {
  ui.original.hidden = rows === null;
  if (rows === null) return;
  const canvas = ui.originalImage;
  canvas.width = m.width;
  canvas.height = m.height;
  const scale = displayScale(m);
  canvas.style.width = `${m.width * scale}px`;
  canvas.style.height = `${m.height * scale}px`;
  canvas.getContext('2d').drawImage(ui.preview, 0, 0);
  ui.originalCut.style.top = `${(rows / m.height) * 100}%`;
}

const fmtMs = (ms) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`);

function makeSampleCanvases(m, n, rows) {
  ui.results.replaceChildren();
  return Array.from({ length: n }, (_, i) => addSampleCanvas(m, i, rows));
}

/** A sample's canvas at model resolution, shown enlarged; a completion starts with the prompt rows. */
function addSampleCanvas(m, index, rows) {
  const figure = document.createElement('figure');
  figure.className = 'sample';
  const frame = document.createElement('div');
  frame.className = 'pixel-frame';
  const canvas = document.createElement('canvas');
  canvas.className = 'pixels';
  canvas.width = m.width;
  canvas.height = m.height;
  const scale = displayScale(m);
  canvas.style.width = `${m.width * scale}px`;
  canvas.style.height = `${m.height * scale}px`;
  canvas.dataset.sample = String(index);
  canvas.setAttribute('role', 'img');
  canvas.setAttribute('aria-label', `Image ${index + 1}`);
  frame.append(canvas);
  if (rows > 0) {
    canvas.getContext('2d').drawImage(ui.preview, 0, 0, m.width, rows, 0, 0, m.width, rows);
    const cut = document.createElement('div');
    cut.className = 'cut';
    cut.style.top = `${(rows / m.height) * 100}%`;
    cut.setAttribute('aria-hidden', 'true');
    frame.append(cut);
  }
  const caption = document.createElement('figcaption');
  caption.textContent = `#${index + 1}`;
  figure.append(frame, caption);
  ui.results.append(figure);
  return canvas;
}

/** The result's PNGs replace the streamed canvases: the prompt rows are now the quantized input. */
async function showResult(m, result, canvases, rows) {
  const images = await Promise.all(result.images.map((b64) => decode(base64Blob(b64))));
  images.forEach((image, i) => {
    const canvas = canvases[i] || (canvases[i] = addSampleCanvas(m, i, rows));
    const ctx = canvas.getContext('2d');
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
    const link = document.createElement('a');
    link.href = `data:image/png;base64,${b64Of(result, i)}`;
    link.download = `${m.id}-${result.seed}-${i + 1}.png`;
    link.textContent = 'PNG';
    link.setAttribute('aria-label', `Download image ${i + 1} as PNG`);
    canvas.closest('figure').querySelector('figcaption').append(' ', link);
  });
}

const b64Of = (result, i) => result.images[i];

async function runClassify() {
  if (!model || running) return;
  clearErrors('classify');
  const m = model;
  running = new AbortController();
  setBusy(true);
  ui.bars.dataset.state = 'running';
  ui.classesStatus.textContent = 'Classifying…';
  try {
    const form = new FormData();
    const [blob, name] = await imageBlob();
    form.set('image', blob, name);
    form.set('top', '5');
    const answer = await classify(m.id, form, running.signal);
    ui.bars.replaceChildren(...answer.predictions.map(classBar));
    ui.classesStatus.textContent = `Most probable classes for the image (${m.id})${answer.cached ? ', from the cache' : ''}:`;
    ui.bars.dataset.state = 'done';
  } catch (error) {
    ui.bars.dataset.state = 'error';
    ui.bars.replaceChildren();
    ui.classesStatus.textContent = error.name === 'AbortError' ? 'Stopped.' : 'Classification failed.';
    if (error.name !== 'AbortError') showProblem('classify', error);
  } finally {
    running = null;
    setBusy(false);
  }
}

// ---- wiring ----

ui.model.addEventListener('change', () => { clearError('model'); selectModel(); });
ui.brushSize.addEventListener('input', updateBrush);
ui.brushGrey.addEventListener('input', updateBrush);
ui.brushColour.addEventListener('input', updateBrush);
ui.clear.addEventListener('click', () => {
  upload = null;
  ui.upload.value = '';
  drawing.clear();
  markExample(null);
  ui.sourceInfo.textContent = 'Draw above, upload an image, or pick an example.';
  updatePreview();
});
ui.upload.addEventListener('change', onUpload);
ui.rows.addEventListener('input', () => { clearError('rows'); updateRows(); });
for (const name of samplingFields) $(name).addEventListener('input', () => clearError(name));
ui.form.addEventListener('submit', (e) => { e.preventDefault(); runGeneration('completions', 'complete'); });
ui.samples.addEventListener('click', () => runGeneration('samples', 'samples'));
ui.classify.addEventListener('click', runClassify);
ui.stop.addEventListener('click', () => running?.abort());

setBusy(false);
loadModels();
