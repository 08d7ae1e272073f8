// The results area: one enlarged canvas per image, the streamed rows drawn into it as they arrive, the final PNGs over
// them with a download link each, and, for completions, the original beside them.
import { base64Blob, decode, displayScale } from './pixels.js';

export class ResultsView {
  constructor(container, preview, original, originalImage, originalCut) {
    this.container = container;
    this.preview = preview; // the input at model resolution, as the model sees it
    this.original = original;
    this.originalImage = originalImage;
    this.originalCut = originalCut;
  }

  /** Beside the completions: the whole input as the model sees it, with the cut (hidden for samples: rows null). */
  showOriginal(m, rows) {
    this.original.hidden = rows === null;
    if (rows === null) return;
    const canvas = this.originalImage;
    canvas.width = m.width;
    canvas.height = m.height;
    enlarge(canvas, m);
    canvas.getContext('2d').drawImage(this.preview, 0, 0);
    this.originalCut.style.top = `${(rows / m.height) * 100}%`;
  }

  makeCanvases(m, n, rows) {
    this.container.replaceChildren();
    return Array.from({ length: n }, (_, i) => this.addCanvas(m, i, rows));
  }

  /** A sample's canvas at model resolution, shown enlarged; a completion starts with the prompt rows. */
  addCanvas(m, index, rows) {
    const figure = document.createElement('figure');
    figure.className = 'sample';
    const frame = document.createElement('div');
    frame.className = 'pixel-frame';
    const canvas = document.createElement('canvas');
    canvas.className = 'pixels';
    canvas.width = m.width;
    canvas.height = m.height;
    enlarge(canvas, m);
    canvas.dataset.sample = String(index);
    canvas.setAttribute('role', 'img');
    canvas.setAttribute('aria-label', `Image ${index + 1}`);
    frame.append(canvas);
    if (rows > 0) {
      canvas.getContext('2d').drawImage(this.preview, 0, 0, m.width, rows, 0, 0, m.width, rows);
      const cut = document.createElement('div');
      cut.className = 'cut';
      cut.style.top = `${(rows / m.height) * 100}%`;
      cut.setAttribute('aria-hidden', 'true');
      frame.append(cut);
    }
    const caption = document.createElement('figcaption');
    caption.textContent = `#${index + 1}`;
    figure.append(frame, caption);
    this.container.append(figure);
    return canvas;
  }

  /** The result's PNGs replace the streamed canvases: the prompt rows are now the quantized input. */
  async show(m, result, canvases, rows) {
    const images = await Promise.all(result.images.map((b64) => decode(base64Blob(b64))));
    images.forEach((image, i) => {
      const canvas = canvases[i] || (canvases[i] = this.addCanvas(m, i, rows));
      const ctx = canvas.getContext('2d');
      ctx.clearRect(0, 0, canvas.width, canvas.height);
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
      const link = document.createElement('a');
      link.href = `data:image/png;base64,${result.images[i]}`;
      link.download = `${m.id}-${result.seed}-${i + 1}.png`;
      link.textContent = 'PNG';
      link.setAttribute('aria-label', `Download image ${i + 1} as PNG`);
      canvas.closest('figure').querySelector('figcaption').append(' ', link);
    });
  }
}

/** A canvas at model resolution, shown at the page's enlargement for the model. */
function enlarge(canvas, m) {
  const scale = displayScale(m);
  canvas.style.width = `${m.width * scale}px`;
  canvas.style.height = `${m.height * scale}px`;
}
