// Pixels on the page: decoding images, drawing a streamed row into a canvas, and the classes' probability bars.

/** An image (PNG, JPEG, ...) decoded by the browser. */
export function decode(blob) {
  return new Promise((resolve, reject) => {
    const url = URL.createObjectURL(blob);
    const image = new Image();
    image.onload = () => { URL.revokeObjectURL(url); resolve(image); };
    image.onerror = () => { URL.revokeObjectURL(url); reject(new Error('undecodable')); };
    image.src = url;
  });
}

/** The Blob of a base64 PNG (a result's image). */
export function base64Blob(b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type: 'image/png' });
}

/** One streamed row (0-255 values at model resolution, channels interleaved) into the canvas at its row. */
export function drawRow(canvas, m, row, pixels) {
  const ctx = canvas.getContext('2d');
  const line = ctx.createImageData(m.width, 1);
  const d = line.data;
  for (let x = 0; x < m.width; x++) {
    if (m.channels === 1) {
      d[4 * x] = d[4 * x + 1] = d[4 * x + 2] = pixels[x];
    } else {
      d[4 * x] = pixels[3 * x];
      d[4 * x + 1] = pixels[3 * x + 1];
      d[4 * x + 2] = pixels[3 * x + 2];
    }
    d[4 * x + 3] = 255;
  }
  ctx.putImageData(line, 0, row);
}

/** A class's probability as a labelled bar. */
export function classBar(prediction) {
  const li = document.createElement('li');
  const percent = (prediction.probability * 100).toFixed(1);
  const label = document.createElement('span');
  label.className = 'label';
  label.textContent = prediction.label;
  const track = document.createElement('span');
  track.className = 'track';
  track.setAttribute('aria-hidden', 'true');
  const fill = document.createElement('span');
  fill.className = 'fill';
  fill.style.width = `${Math.max(0.5, prediction.probability * 100)}%`;
  track.append(fill);
  const value = document.createElement('span');
  value.className = 'value';
  value.textContent = `${percent}%`;
  li.dataset.probability = String(prediction.probability);
  li.append(label, track, value);
  return li;
}

/** Enlargement so that a 8-, 14-, 28- or 32-pixel image is comfortable to look at (nearest neighbour). */
export function displayScale(m) {
  return Math.max(2, Math.min(28, Math.round(192 / Math.max(m.width, m.height))));
}
