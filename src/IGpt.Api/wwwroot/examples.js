// The model's example images: thumbnails of a few test-split images shipped with its package (GET
// /v1/models/{model}/examples), each loading into the image box in one click.
import { getExamples } from './api.js';

/** "4-dress" -> "Dress": examples are named <n>-<class>, with the class as a slug; other names are shown as they are. */
export function exampleLabel(m, name) {
  const slug = (text) => text.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
  const rest = name.replace(/^\d+-/, '');
  return m.classes.find((c) => slug(c) === rest) || rest.replace(/[-_]+/g, ' ');
}

export class ExamplePicker {
  #fetched = new Map(); // model id -> its examples, fetched once

  /** @param onPick (model, example, button) => void: a thumbnail was clicked. */
  constructor(area, list, onPick) {
    this.area = area;
    this.list = list;
    this.onPick = onPick;
  }

  /** Lists model m's examples; isCurrent(m) says whether m is still the chosen model once they have arrived. */
  async show(m, isCurrent) {
    this.list.replaceChildren();
    this.area.hidden = true;
    let examples = this.#fetched.get(m.id);
    if (!examples) {
      try {
        examples = await getExamples(m.id);
      } catch {
        return; // examples are a shortcut: without them the page still takes drawings and files
      }
      this.#fetched.set(m.id, examples);
    }
    if (!isCurrent(m) || !examples.length) return; // another model was picked meanwhile, or this one has none
    this.list.replaceChildren(...examples.map((example) => this.#button(m, example)));
    this.area.hidden = false;
  }

  /** Shows which example is the image (none once the user draws, uploads or clears). */
  mark(button) {
    for (const b of this.list.querySelectorAll('.example')) b.setAttribute('aria-pressed', String(b === button));
  }

  #button(m, example) {
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
    button.addEventListener('click', () => this.onPick(m, example, button));
    return button;
  }
}
