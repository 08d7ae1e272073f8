// A canvas to draw on with a mouse, pen or finger (pointer events), shaped like the model's images.
const Size = 256; // the longer side of the drawing canvas, in canvas pixels

export class Drawing {
  /** @param {HTMLCanvasElement} canvas  @param {() => void} onChange called after each stroke (and while drawing) */
  constructor(canvas, onChange) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d', { willReadFrequently: true });
    this.onChange = onChange;
    this.brush = 18;
    this.colour = '#fff';
    this.background = '#000';
    this.last = null;
    this.pending = false;
    this.clear();

    canvas.addEventListener('pointerdown', (e) => this.down(e));
    canvas.addEventListener('pointermove', (e) => this.move(e));
    for (const type of ['pointerup', 'pointercancel', 'lostpointercapture']) canvas.addEventListener(type, () => this.up());
  }

  /** Resizes the canvas to the model's aspect ratio, keeping what was drawn. */
  setShape(width, height, grey) {
    const w = width >= height ? Size : Math.round((Size * width) / height);
    const h = height >= width ? Size : Math.round((Size * height) / width);
    if (this.canvas.width !== w || this.canvas.height !== h) {
      const old = document.createElement('canvas');
      old.width = this.canvas.width;
      old.height = this.canvas.height;
      old.getContext('2d').drawImage(this.canvas, 0, 0);
      this.canvas.width = w;
      this.canvas.height = h;
      this.clear();
      this.ctx.drawImage(old, 0, 0, w, h);
    }
    if (grey) this.toGrey();
  }

  clear() {
    this.ctx.fillStyle = this.background;
    this.ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
  }

  /** Shows an uploaded image (transparency on white), stretched to the canvas like the service resizes it. */
  showImage(image) {
    this.ctx.fillStyle = '#fff';
    this.ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    this.ctx.imageSmoothingEnabled = image.naturalWidth > this.canvas.width;
    this.ctx.drawImage(image, 0, 0, this.canvas.width, this.canvas.height);
    this.ctx.imageSmoothingEnabled = true;
  }

  toBlob() {
    return new Promise((resolve, reject) =>
      this.canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error('The drawing could not be encoded.'))), 'image/png'));
  }

  toGrey() {
    const image = this.ctx.getImageData(0, 0, this.canvas.width, this.canvas.height);
    const d = image.data;
    for (let i = 0; i < d.length; i += 4) {
      d[i] = d[i + 1] = d[i + 2] = Math.round(0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2]);
    }
    this.ctx.putImageData(image, 0, 0);
  }

  point(e) {
    const box = this.canvas.getBoundingClientRect();
    return {
      x: ((e.clientX - box.left) / box.width) * this.canvas.width,
      y: ((e.clientY - box.top) / box.height) * this.canvas.height,
    };
  }

  down(e) {
    if (e.button !== 0) return;
    e.preventDefault();
    this.canvas.setPointerCapture(e.pointerId);
    this.last = this.point(e);
    this.stroke(this.last, this.last);
  }

  move(e) {
    if (!this.last) return;
    e.preventDefault();
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
    for (const ev of events.length ? events : [e]) {
      const p = this.point(ev);
      this.stroke(this.last, p);
      this.last = p;
    }
  }

  up() {
    if (!this.last) return;
    this.last = null;
    this.changed();
  }

  stroke(from, to) {
    const ctx = this.ctx;
    ctx.strokeStyle = this.colour;
    ctx.fillStyle = this.colour;
    ctx.lineWidth = this.brush;
    ctx.lineCap = 'round';
    ctx.lineJoin = 'round';
    ctx.beginPath();
    if (from.x === to.x && from.y === to.y) {
      ctx.arc(from.x, from.y, this.brush / 2, 0, Math.PI * 2);
      ctx.fill();
    } else {
      ctx.moveTo(from.x, from.y);
      ctx.lineTo(to.x, to.y);
      ctx.stroke();
    }
    this.changed();
  }

  /** Coalesces updates to one per animation frame. */
  changed() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.onChange();
    });
  }
}
