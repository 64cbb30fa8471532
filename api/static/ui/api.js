// The public textq API, called with the user's key. Paths are relative to the page, so the
// page works wherever the server is mounted (…/ui/ → …/v1/…).
const ROOT = new URL("../", document.baseURI);
const KEY_ITEM = "textq.apiKey";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

export function savedKey() {
  return sessionStorage.getItem(KEY_ITEM) || localStorage.getItem(KEY_ITEM) || "";
}

export function saveKey(key, remember) {
  forgetKey();
  (remember ? localStorage : sessionStorage).setItem(KEY_ITEM, key);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_ITEM);
  localStorage.removeItem(KEY_ITEM);
}

async function call(path, { method = "GET", json, form, accept } = {}) {
  const headers = {};
  const key = savedKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (accept) headers.Accept = accept;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form) {
    body = form;
  }
  const response = await fetch(new URL(path, ROOT), { method, headers, body });
  if (!response.ok) {
    let problem = {};
    try {
      problem = await response.json();
    } catch {
      problem = { title: response.statusText };
    }
    throw new ApiError(response.status, problem);
  }
  return response;
}

export async function getJson(path) {
  return (await call(path)).json();
}

export async function submitJob(body) {
  return (await call("v1/jobs", { method: "POST", json: body })).json();
}

export async function submitFile(form) {
  return (await call("v1/batches", { method: "POST", form })).json();
}

export async function cancelJob(id) {
  return (await call(`v1/jobs/${id}/cancel`, { method: "POST" })).json();
}

export async function download(id, format) {
  const response = await call(`v1/jobs/${id}/results?format=${format}`);
  const blob = await response.blob();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = `${id}-results.${format}`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

const RESUME_TRIES = 3;
const RESUME_DELAY_MS = 1000;

/**
 * Follow a job's Server-Sent Events (`v1/jobs/<id>/events`), calling `onEvent(name, data)`
 * for each, until `finished`. EventSource cannot send the API key, so this reads the stream
 * with fetch; a dropped stream is resumed with the last event's id. Rejects when no stream
 * can be had (the caller then polls); resolves at `finished` or when `signal` aborts.
 */
export async function followEvents(id, { onEvent, signal }) {
  let lastId = "";
  let tries = 0;
  while (!signal.aborted) {
    const headers = { Accept: "text/event-stream" };
    const key = savedKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    if (lastId) headers["Last-Event-ID"] = lastId;
    let heard = false;
    let failure = null;
    try {
      const response = await fetch(new URL(`v1/jobs/${id}/events`, ROOT), { headers, signal });
      if (response.status === 204) return; // resumed after `finished`
      if (!response.ok || !response.body) throw new ApiError(response.status, {});
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const fields = {};
          for (const line of buffer.slice(0, end).split("\n")) {
            if (line.startsWith(":")) continue;
            const colon = line.indexOf(":");
            fields[line.slice(0, colon)] = line.slice(colon + 1).replace(/^ /, "");
          }
          buffer = buffer.slice(end + 2);
          if (!fields.event || fields.data === undefined) continue;
          heard = true;
          lastId = fields.id || lastId;
          onEvent(fields.event, JSON.parse(fields.data));
          if (fields.event === "finished") return;
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      failure = error;
    }
    if (heard) tries = 0;
    else if (++tries >= RESUME_TRIES) throw failure || new Error("the event stream ended at once");
    await new Promise((resolve) => setTimeout(resolve, RESUME_DELAY_MS));
  }
}
