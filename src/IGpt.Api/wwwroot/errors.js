// Errors next to the controls they concern (an element error-<slot> beside each): a problem's field errors next to
// their fields, everything else next to the button that sent the request, so the user sees what to fix where.
import { ApiProblem } from './api.js';

const $ = (id) => document.getElementById(id);

export function showError(slot, message) {
  const el = $(`error-${slot}`);
  el.textContent = message;
  el.hidden = false;
  const control = $(slot);
  if (control && control.tagName !== 'BUTTON') control.setAttribute('aria-invalid', 'true');
}

export function clearError(slot) {
  const el = $(`error-${slot}`);
  el.textContent = '';
  el.hidden = true;
  $(slot)?.removeAttribute('aria-invalid');
}

/** Clears the errors of the fields (their slots) and of the button. */
export function clearFieldErrors(fieldSlots, button) {
  for (const slot of fieldSlots) clearError(slot);
  clearError(button);
}

/**
 * Field errors next to their fields (those in fieldSlots); the title, detail and any other errors next to the button.
 * askForKey is called when the service wants an API key.
 */
export function showFieldProblem(fieldSlots, button, error, askForKey) {
  if (error instanceof ApiProblem && error.needsKey) askForKey(error);
  if (!(error instanceof ApiProblem)) {
    showError(button, error.name === 'TypeError' ? `Could not reach the service (${error.message}).` : String(error.message || error));
    return;
  }
  const problem = error.problem || {};
  const rest = [];
  const shown = [];
  for (const [key, messages] of Object.entries(problem.errors || {})) {
    const text = [].concat(messages).join(' ');
    if (fieldSlots.has(key)) {
      showError(key, text);
      shown.push(text);
    } else {
      rest.push(`${key}: ${text}`);
    }
  }
  // The title, and the detail unless it only repeats a message already shown at its field.
  const detail = problem.detail && shown.some((text) => text.includes(problem.detail)) ? null : problem.detail;
  const parts = [problem.title, detail, ...rest].filter(Boolean);
  let message = parts.filter((p, i) => parts.indexOf(p) === i).map((p) => p.replace(/[.\s]+$/, '')).join('. ');
  if (shown.length) message += `. See the message${shown.length > 1 ? 's' : ''} next to the field${shown.length > 1 ? 's' : ''}.`;
  else if (message) message += '.';
  showError(button, message || 'The request failed.');
}
