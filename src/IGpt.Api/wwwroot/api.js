// The IGpt HTTP API as the page uses it: JSON and problem+json answers, and server-sent events read from a
// fetch body (EventSource cannot POST).

/** An RFC 9457 problem answered by the API (or made up here when the answer was not one). */
export class ApiProblem extends Error {
  constructor(problem) {
    super(problem.detail || problem.title || 'The request failed.');
    this.problem = problem;
  }

  /** The service wants an API key (none was sent, or not a valid one). */
  get needsKey() {
    return this.problem.status === 401;
  }
}

// The API key, when the service asks for one: kept for this tab only (sessionStorage), sent as a Bearer token.
const keyItem = 'igpt.apiKey';

export function apiKey() {
  try {
    return sessionStorage.getItem(keyItem) || '';
  } catch {
    return ''; // storage blocked: no key is kept
  }
}

export function setApiKey(key) {
  try {
    if (key) sessionStorage.setItem(keyItem, key);
    else sessionStorage.removeItem(keyItem);
  } catch {
    // storage blocked: the key cannot be kept
  }
}

function headers(accept) {
  const key = apiKey();
  return key ? { Accept: accept, Authorization: `Bearer ${key}` } : { Accept: accept };
}

async function problemFrom(response) {
  const type = response.headers.get('Content-Type') || '';
  if (type.includes('json')) {
    try {
      return await response.json();
    } catch {
      // fall through: not JSON after all
    }
  }
  return { status: response.status, title: `${response.status} ${response.statusText || 'Error'}`.trim() };
}

export async function getModels(signal) {
  const response = await fetch('/v1/models', { headers: headers('application/json'), signal });
  if (!response.ok) throw new ApiProblem(await problemFrom(response));
  return (await response.json()).models;
}

/** The model's example images: [{name, width, height, image (base64 PNG)}], empty when its package has none. */
export async function getExamples(model, signal) {
  const response = await fetch(`/v1/models/${encodeURIComponent(model)}/examples`, { headers: headers('application/json'), signal });
  if (!response.ok) throw new ApiProblem(await problemFrom(response));
  return (await response.json()).examples;
}

export async function classify(model, form, signal) {
  const response = await fetch(`/v1/models/${encodeURIComponent(model)}/classifications`, {
    method: 'POST', body: form, headers: headers('application/json'), signal,
  });
  if (!response.ok) throw new ApiProblem(await problemFrom(response));
  return response.json();
}

/** How likely the model finds the image: bits per pixel, the out-of-distribution score and its verdict. */
export async function likelihood(model, form, signal) {
  const response = await fetch(`/v1/models/${encodeURIComponent(model)}/likelihoods`, {
    method: 'POST', body: form, headers: headers('application/json'), signal,
  });
  if (!response.ok) throw new ApiProblem(await problemFrom(response));
  return response.json();
}

/** The surprise map of the image: a PNG Blob at model resolution, each pixel's bits on a dark-to-bright ramp. */
export async function surpriseMap(model, form, signal) {
  const response = await fetch(`/v1/models/${encodeURIComponent(model)}/likelihoods`, {
    method: 'POST', body: form, headers: headers('image/png'), signal,
  });
  if (!response.ok) throw new ApiProblem(await problemFrom(response));
  return response.blob();
}

/**
 * Posts a generation request (completions or samples) as a stream and calls onEvent(name, data) for each
 * server-sent event. Resolves with the `result` data; rejects with an ApiProblem for an error answer or an
 * `error` event, or with the fetch error (AbortError when the signal aborts).
 */
export async function generate(model, kind, form, onEvent, signal) {
  form.set('stream', 'true');
  const response = await fetch(`/v1/models/${encodeURIComponent(model)}/${kind}`, {
    method: 'POST', body: form, headers: headers('text/event-stream'), signal,
  });
  if (!response.ok) throw new ApiProblem(await problemFrom(response));
  if (!(response.headers.get('Content-Type') || '').startsWith('text/event-stream')) {
    throw new ApiProblem({ title: 'The service did not answer with a stream.' });
  }

  let result = null;
  for await (const { event, data } of readEvents(response.body)) {
    const body = data ? JSON.parse(data) : null;
    if (event === 'error') throw new ApiProblem(body);
    if (event === 'result') result = body;
    onEvent(event, body);
  }
  if (!result) throw new ApiProblem({ title: 'The stream ended before the result.' });
  return result;
}

/** The events of a text/event-stream body: {event, data}, with multi-line data joined by \n. */
async function* readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let event = 'message';
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + (buffer.startsWith('\r\n', end) ? 2 : 1));
        if (line === '') {
          if (data.length) yield { event, data: data.join('\n') };
          event = 'message';
          data = [];
          continue;
        }
        if (line.startsWith(':')) continue; // a comment
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? '' : line.slice(colon + 1);
        if (value.startsWith(' ')) value = value.slice(1);
        if (field === 'event') event = value;
        else if (field === 'data') data.push(value);
      }
    }
  } finally {
    reader.releaseLock();
  }
}
