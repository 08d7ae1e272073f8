// The IGpt web page: pick a model, pick one of its examples, draw or upload an image, complete it (rows streamed in
// as they are drawn, beside the original), draw unconditional samples, classify, and show how surprising the model
// finds the image (a surprise map and a verdict in words).
import { apiKey, classify, generate, getModels, likelihood, setApiKey, surpriseMap } from './api.js';
import { Drawing } from './drawing.js';
import { ExamplePicker, exampleLabel } from './examples.js';
import { clearError, clearFieldErrors, showError, showFieldProblem } from './errors.js';
import { base64Blob, classBar, decode, displayScale, drawRow } from './pixels.js';
import { ResultsView } from './results.js';

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
  surprise: $('surprise'), surpriseMap: $('surprise-map'), surpriseVerdict: $('surprise-verdict'), surpriseDetail: $('surprise-detail'),
  keyCard: $('key-card'), apiKey: $('api-key'), useKey: $('use-key'),
};
const results = new ResultsView(ui.results, ui.preview, ui.original, ui.originalImage, ui.originalCut);
const examplePicker = new ExamplePicker(ui.examplesArea, ui.examples, useExample);
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
  examplePicker.mark(null);
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
    model.has_analysis ? null : 'no likelihoods',
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
  // The model's default sampling settings, which a request without these fields would get anyway.
  if (model.sampling) {
    for (const name of ['temperature', 'top_k', 'top_p']) $(name).value = String(model.sampling[name]);
  }
  updateRows();
  updatePreview();
  ui.classify.disabled = !canClassify(model);
  ui.classify.title = canClassify(model) ? '' : 'This model has neither a classifier nor an analysis graph.';
  ui.classify.textContent = model.has_analysis ? (model.has_classifier ? 'Classify and score' : 'Score') : 'Classify';
  ui.surprise.hidden = true;
  setBusy(false);
  examplePicker.show(model, (m) => m === model);
}

// ---- examples ----

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
  examplePicker.mark(button);
  ui.sourceInfo.textContent = `Using the example ${exampleLabel(m, example.name)} (${uploadImage.naturalWidth}×${uploadImage.naturalHeight}) from the model's test set.`;
  updatePreview();
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
    examplePicker.mark(null);
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
  ui.classify.disabled = !idle || !canClassify(model);
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
  const canvases = results.makeCanvases(m, Math.max(1, Math.min(16, Number.isFinite(n) ? n : 1)), rows);
  results.showOriginal(m, kind === 'completions' ? rows : null);
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
        const canvas = canvases[data.sample] || (canvases[data.sample] = results.addCanvas(m, data.sample, rows));
        drawRow(canvas, m, data.row, data.pixels);
        received += 1;
        ui.results.dataset.rowsReceived = String(received);
        const total = canvases.length * (m.height - rows);
        ui.status.textContent = `Drawing… ${received} of ${total} rows (${(data.elapsed_ms / 1000).toFixed(1)} s)`;
      } else if (event === 'heartbeat') {
        ui.status.textContent = data.state === 'queued' ? 'Waiting for a free slot…' : 'Drawing…';
      }
    }, running.signal);
    await results.show(m, result, canvases, rows);
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

const fmtMs = (ms) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`);

const canClassify = (m) => m.has_classifier || m.has_analysis;

/** The classes (when the model has a head) and the surprise map with its verdict (when it has an analysis graph), side by side. */
async function runClassify() {
  if (!model || running) return;
  clearErrors('classify');
  const m = model;
  running = new AbortController();
  const signal = running.signal;
  setBusy(true);
  ui.bars.dataset.state = 'running';
  ui.surprise.dataset.state = 'running';
  ui.classesStatus.textContent = m.has_classifier ? 'Classifying…' : 'Scoring…';
  try {
    const form = new FormData();
    const [blob, name] = await imageBlob();
    form.set('image', blob, name);
    const classes = m.has_classifier ? showClasses(m, form, signal) : Promise.resolve(null);
    const surprise = m.has_analysis ? showSurprise(m, form, signal) : Promise.resolve(null);
    const [classesDone, surpriseDone] = await Promise.allSettled([classes, surprise]);
    if (!m.has_classifier) ui.bars.replaceChildren();
    ui.surprise.hidden = !m.has_analysis || surpriseDone.status === 'rejected';
    const failed = [classesDone, surpriseDone].find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    const cached = classesDone.value?.cached || surpriseDone.value?.cached;
    ui.classesStatus.textContent = m.has_classifier
      ? `Most probable classes for the image (${m.id})${cached ? ', from the cache' : ''}:`
      : `How the model (${m.id}) sees the image${cached ? ', from the cache' : ''}:`;
    ui.bars.dataset.state = 'done';
  } catch (error) {
    ui.bars.dataset.state = 'error';
    ui.surprise.dataset.state = 'error';
    ui.bars.replaceChildren();
    ui.surprise.hidden = true;
    ui.classesStatus.textContent = error.name === 'AbortError' ? 'Stopped.' : 'Classification failed.';
    if (error.name !== 'AbortError') showProblem('classify', error);
  } finally {
    running = null;
    setBusy(false);
  }
}

async function showClasses(m, form, signal) {
  const top = new FormData();
  for (const [key, value] of form) top.set(key, value);
  top.set('top', '5');
  const answer = await classify(m.id, top, signal);
  ui.bars.replaceChildren(...answer.predictions.map(classBar));
  return answer;
}

/** The likelihood in words and the surprise map (the second request is answered from the service's analysis cache). */
async function showSurprise(m, form, signal) {
  const answer = await likelihood(m.id, form, signal);
  const map = await surpriseMap(m.id, form, signal);
  const previous = ui.surpriseMap.src;
  ui.surpriseMap.src = URL.createObjectURL(map);
  if (previous.startsWith('blob:')) URL.revokeObjectURL(previous);
  const scale = displayScale(m);
  ui.surpriseMap.style.width = `${m.width * scale}px`;
  ui.surpriseMap.style.height = `${m.height * scale}px`;
  ui.surpriseVerdict.textContent = answer.verdict
    ? `This image looks ${answer.verdict} to the model.`
    : 'This model has no calibration to put the score in words.';
  const fixed = (x) => x.toFixed(2);
  const q95 = answer.calibration?.test_quantiles?.['0.95'];
  ui.surpriseDetail.textContent = `The model needs ${fixed(answer.bits_per_pixel)} bits per pixel, a generic compressor `
    + `${fixed(answer.compressor_bits_per_pixel)}: surprise score ${fixed(answer.ood_score)}`
    + (q95 === undefined ? '.' : ` (19 in 20 of the test images score ${fixed(q95)} or less).`);
  ui.surprise.dataset.ood = String(answer.ood_score);
  ui.surprise.dataset.verdict = answer.verdict || '';
  ui.surprise.dataset.state = 'done';
  return answer;
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
  examplePicker.mark(null);
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
