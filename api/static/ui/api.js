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
