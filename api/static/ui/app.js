// The textq page: submit jobs, follow them, read their results. Routes live in the hash:
// #/ lists jobs, #/jobs/<id> shows one.
import * as api from "./api.js";
import { histogramChart, labelChart, labelClass } from "./charts.js";

const ACTIVE = new Set(["queued", "running"]);
const POLL_MS = 1000;
const LIST_POLL_MS = 2000;
const RESULTS_PAGE = 20;

const main = document.getElementById("main");
const alertBox = document.getElementById("alert");
let stopView = () => {};

// --- small helpers -------------------------------------------------------------------------

function element(name, attributes = {}, ...children) {
  const node = document.createElement(name);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function showError(error) {
  let message = error.message;
  if (error instanceof api.ApiError && error.status === 401) {
    message = savedKeyMessage();
    openKeyPanel(message);
  }
  alertBox.textContent = message;
  alertBox.hidden = false;
}

function clearError() {
  alertBox.hidden = true;
  alertBox.textContent = "";
}

function savedKeyMessage() {
  return api.savedKey()
    ? "The server refused this API key: it is unknown, revoked or expired."
    : "This server needs an API key.";
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function seconds(from, to) {
  const s = Math.max(0, (new Date(to) - new Date(from)) / 1000);
  if (s < 60) return `${s.toFixed(1)} s`;
  const whole = Math.round(s);
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${whole % 60} s`;
  return `${Math.floor(whole / 3600)} h ${Math.floor((whole % 3600) / 60)} min`;
}

function rate(perSecond) {
  return perSecond >= 10 ? perSecond.toFixed(0) : perSecond.toPrecision(2);
}

/** Run `step` now and every `ms` until it returns false or the view changes. */
function every(ms, step) {
  let timer;
  let stopped = false;
  const tick = async () => {
    let again = true;
    try {
      again = (await step()) !== false;
    } catch (error) {
      showError(error);
    }
    if (again && !stopped) timer = setTimeout(tick, document.hidden ? ms * 5 : ms);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function describeInput(job) {
  const input = job.input || {};
  if (input.kind === "file") return input.filename ? `file ${input.filename}` : "file";
  if (input.kind === "document") return "document";
  return job.progress.total === 1 ? "1 text" : `${job.progress.total.toLocaleString()} texts`;
}

function progressLine(job) {
  const p = job.progress;
  const finished = p.done + p.errored;
  let line = `${finished.toLocaleString()} of ${p.total.toLocaleString()} done`;
  if (p.errored) line += ` (${p.errored.toLocaleString()} failed)`;
  if (p.chunks.total) line += ` · ${p.chunks.done} of ${p.chunks.total} chunks`;
  if (job.queue && ACTIVE.has(job.status)) {
    if (job.queue.workers === 0) line += ` · waiting: no worker runs ${job.queue.model} yet`;
    if (job.queue.items_per_s) line += ` · ${rate(job.queue.items_per_s)} items/s`;
    if (job.queue.estimated_finish_at) {
      line += ` · about ${seconds(new Date(), job.queue.estimated_finish_at)} left`;
    }
  }
  return line;
}

function fraction(job) {
  const p = job.progress;
  const total = p.total + p.chunks.total;
  return total ? (p.done + p.errored + p.chunks.done) / total : 0;
}

// --- the API key panel -----------------------------------------------------------------------

const keyPanel = document.getElementById("key-panel");
const keyToggle = document.getElementById("key-toggle");

function openKeyPanel(message) {
  keyPanel.hidden = false;
  keyToggle.setAttribute("aria-expanded", "true");
  if (message) document.getElementById("key-why").textContent = message;
  document.getElementById("key-input").focus();
}

keyToggle.addEventListener("click", () => {
  if (keyPanel.hidden) openKeyPanel();
  else {
    keyPanel.hidden = true;
    keyToggle.setAttribute("aria-expanded", "false");
  }
});

document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = document.getElementById("key-input").value.trim();
  if (!key) return;
  api.saveKey(key, document.getElementById("key-remember").checked);
  document.getElementById("key-input").value = "";
  keyPanel.hidden = true;
  keyToggle.setAttribute("aria-expanded", "false");
  clearError();
  route();
});

document.getElementById("key-forget").addEventListener("click", () => {
  api.forgetKey();
  openKeyPanel("The key is forgotten. Enter one to go on.");
});

// --- the jobs page ---------------------------------------------------------------------------

function showHome() {
  main.replaceChildren(document.getElementById("home-view").content.cloneNode(true));
  const form = main.querySelector("#submit-form");
  const syncFields = () => {
    const task = form.task.value;
    const source = form.source.value;
    for (const part of form.querySelectorAll("[data-task]")) {
      part.hidden = part.dataset.task !== task;
    }
    for (const part of form.querySelectorAll("[data-source]")) {
      part.hidden = !part.dataset.source.split(" ").includes(source);
    }
    form.file.accept = source === "table" ? ".csv,.jsonl,.ndjson,.gz,text/csv" : ".txt,text/plain";
  };
  form.addEventListener("change", syncFields);
  syncFields();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit(form);
  });

  const list = main.querySelector("#jobs");
  const filter = main.querySelector("#status-filter");
  const more = main.querySelector("#jobs-more");
  let limit = 20;
  const refresh = async () => {
    const query = new URLSearchParams({ limit: String(limit) });
    if (filter.value) query.set("status", filter.value);
    const page = await api.getJson(`v1/jobs?${query}`);
    renderJobs(list, page.items);
    main.querySelector("#jobs-empty").hidden = page.items.length > 0;
    more.hidden = !page.next_cursor;
    return true;
  };
  filter.addEventListener("change", refresh);
  more.addEventListener("click", () => {
    limit += 20;
    refresh();
  });
  return every(LIST_POLL_MS, refresh);
}

function renderJobs(list, jobs) {
  list.replaceChildren(
    ...jobs.map((job) => {
      const bar = element("progress", {
        max: "1",
        value: String(fraction(job)),
        "aria-label": `Progress of job ${job.id.slice(0, 8)}`,
      });
      return element(
        "li",
        { class: "job", "data-status": job.status, "data-job-id": job.id },
        element(
          "a",
          { href: `#/jobs/${job.id}` },
          element("span", { class: "task", text: job.task }),
          " ",
          element("span", { class: "muted", text: `${describeInput(job)} · ${when(job.created_at)}` }),
        ),
        element("span", { class: `status ${job.status}`, text: job.status }),
        bar,
        element("span", { class: "muted small", text: progressLine(job) }),
      );
    }),
  );
}

async function submit(form) {
  clearError();
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const job = await submitFrom(form);
    location.hash = `#/jobs/${job.id}`;
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
  }
}

function optionsFrom(form) {
  const options = {};
  if (form.task.value === "sentiment") {
    const categories = form.categories.value
      .split(",")
      .map((c) => c.trim())
      .filter(Boolean);
    if (categories.length) options.categories = categories;
    if (form.insights.checked) options.insights = true;
  } else if (form.max_length.value) {
    options.max_length = Number(form.max_length.value);
  }
  return options;
}

async function submitFrom(form) {
  const task = form.task.value;
  const options = optionsFrom(form);
  const source = form.source.value;
  if (source === "text") {
    const text = form.text.value;
    if (!text.trim()) throw new Error("Write a text to submit.");
    return api.submitJob({ task, input: { text }, options });
  }
  const file = form.file.files[0];
  if (!file) throw new Error("Choose a file to upload.");
  if (source === "document") {
    return api.submitJob({ task, input: { document: await file.text() }, options });
  }
  const data = new FormData();
  data.append("file", file);
  data.append("task", task);
  if (form.text_column.value.trim()) data.append("text_column", form.text_column.value.trim());
  if (form.id_column.value.trim()) data.append("id_column", form.id_column.value.trim());
  data.append("options", JSON.stringify(options));
  return api.submitFile(data);
}

// --- one job ---------------------------------------------------------------------------------

function showJob(id) {
  main.replaceChildren(document.getElementById("job-view").content.cloneNode(true));
  const find = (selector) => main.querySelector(selector);
  let job;
  let finishedShown = false;
  let highlightsAt = 0;

  find("#job-cancel").addEventListener("click", async () => {
    try {
      render(await api.cancelJob(id));
    } catch (error) {
      showError(error);
    }
  });
  for (const format of ["jsonl", "csv"]) {
    find(`#download-${format}`).addEventListener("click", () =>
      api.download(id, format).catch(showError),
    );
  }

  function render(current) {
    job = current;
    const active = ACTIVE.has(job.status);
    find("#job-title").textContent =
      `${job.task === "sentiment" ? "Sentiment" : "Summary"} of ${describeInput(job)}`;
    const badge = find("#job-status");
    badge.textContent = job.status;
    badge.className = `status ${job.status}`;
    const took = job.finished_at ? ` · took ${seconds(job.created_at, job.finished_at)}` : "";
    find("#job-facts").textContent =
      `Job ${job.id} · ${job.model} · submitted ${when(job.created_at)}${took}`;
    find("#job-progress").value = fraction(job);
    find("#job-progress-text").textContent = progressLine(job);
    find("#job-cancel").hidden = !active;
    const readable = !active && job.status !== "expired";
    find("#download-jsonl").disabled = !readable;
    find("#download-csv").disabled = !readable;
    if (job.task === "sentiment") {
      find("#sentiment").hidden = false;
      find("#extremes").hidden = false;
      labelChart(find("#labels-chart"), job.labels || {});
    }
    renderInsights(find, job.insights);
  }

  async function refreshHighlights() {
    const highlights = await api.getJson(`v1/jobs/${id}/highlights?bins=10&top=5`);
    histogramChart(find("#histogram-chart"), highlights);
    renderExtremes(find("#most-negative"), highlights.most_negative);
    renderExtremes(find("#most-positive"), highlights.most_positive);
  }

  return every(POLL_MS, async () => {
    render(await api.getJson(`v1/jobs/${id}`));
    const active = ACTIVE.has(job.status);
    if (job.task === "sentiment" && (!active || Date.now() - highlightsAt > 3000)) {
      highlightsAt = Date.now();
      await refreshHighlights();
    }
    if (!active && !finishedShown && job.status !== "expired") {
      finishedShown = true;
      await showResults(find, id, job.task);
    }
    return active;
  });
}

function renderExtremes(list, items) {
  list.replaceChildren(
    ...items.map((item) =>
      element(
        "li",
        {},
        element(
          "p",
          { class: "meta" },
          element("span", { class: `pill ${labelClass(item.label)}`, text: item.label }),
          ` ${item.score.toFixed(3)} · row ${item.index}`,
          item.custom_id ? element("span", { text: ` · id ${item.custom_id}` }) : "",
        ),
        element("blockquote", { text: item.text }),
      ),
    ),
  );
}

function renderInsights(find, insights) {
  const section = find("#insights");
  section.hidden = !insights;
  if (!insights) return;
  const stage = {
    counting: "Counting labels per category while the texts run…",
    summarizing: "Summarizing the negative feedback of each category…",
    done: "",
  };
  find("#insights-status").textContent = stage[insights.status] ?? insights.status;
  const labels = [...new Set(Object.values(insights.counts || {}).flatMap(Object.keys))].sort();
  const table = find("#insights-counts");
  table.replaceChildren();
  table.createCaption().textContent = "Texts per category and label";
  const head = table.createTHead().insertRow();
  for (const heading of ["Category", ...labels, "Total"]) {
    head.append(element("th", { scope: "col", text: heading }));
  }
  const body = table.createTBody();
  for (const category of insights.categories || Object.keys(insights.counts || {})) {
    const counts = (insights.counts || {})[category] || {};
    const row = body.insertRow();
    row.append(element("th", { scope: "row", text: category }));
    let total = 0;
    for (const label of labels) {
      total += counts[label] || 0;
      row.insertCell().textContent = (counts[label] || 0).toLocaleString();
    }
    row.insertCell().textContent = total.toLocaleString();
  }
  const negative = find("#insights-negative");
  negative.replaceChildren(
    ...Object.entries(insights.negative || {}).map(([category, entry]) =>
      element(
        "article",
        { class: "insight" },
        element("h3", { text: `${category}: ${entry.count.toLocaleString()} negative` }),
        element("p", {
          text: entry.summary ?? (entry.error ? `No summary: ${entry.error}` : "Summary pending…"),
        }),
      ),
    ),
  );
}

async function showResults(find, id, task) {
  const section = find("#results");
  const more = find("#results-more");
  section.hidden = false;
  // Sentiment rows are short: a table reads best. Summaries are prose, one article each.
  const rows = task === "sentiment" ? sentimentTable(find("#results-list")) : null;
  let cursor = null;
  const load = async () => {
    const query = new URLSearchParams({ limit: String(RESULTS_PAGE) });
    if (task === "summarize") query.set("include_chunks", "true");
    if (cursor) query.set("cursor", cursor);
    const page = await api.getJson(`v1/jobs/${id}/results?${query}`);
    if (rows) rows.append(...page.items.map(sentimentRow));
    else find("#results-list").append(...page.items.map(summaryEntry));
    cursor = page.next_cursor;
    more.hidden = !cursor;
  };
  more.addEventListener("click", () => load().catch(showError));
  await load();
}

function sentimentTable(container) {
  const table = element("table", { class: "results" });
  table.createCaption().textContent = "Each text's label, in input order";
  const head = table.createTHead().insertRow();
  for (const heading of ["Row", "Id", "Label", "Score", "Category"]) {
    head.append(element("th", { scope: "col", text: heading }));
  }
  container.replaceChildren(element("div", { class: "scroll" }, table));
  return table.createTBody();
}

function sentimentRow(item) {
  const row = element("tr", { "data-index": String(item.index) });
  row.append(element("td", { text: String(item.index) }), element("td", { text: item.custom_id ?? "" }));
  if (item.error) {
    row.append(element("td", { class: "error", colspan: "3", text: `Failed: ${item.error}` }));
    return row;
  }
  row.append(
    element("td", {}, element("span", { class: `pill ${labelClass(item.label)}`, text: item.label })),
    element("td", { text: item.score.toFixed(3) }),
    element("td", { text: item.category ?? "" }),
  );
  return row;
}

function summaryEntry(item) {
  const name = item.custom_id ? `Text ${item.index} · id ${item.custom_id}` : `Text ${item.index}`;
  const entry = element("article", { class: "result", "data-index": String(item.index) });
  entry.append(element("h3", { text: name }));
  if (item.error) {
    entry.append(element("p", { class: "error", text: `Failed: ${item.error}` }));
    return entry;
  }
  entry.append(element("p", { class: "summary", text: item.summary_text }));
  if (item.chunks?.length) {
    const details = element(
      "details",
      {},
      element("summary", { text: `Summaries of its ${item.chunks.length} chunks` }),
    );
    const chunks = element("ol", { class: "chunks" });
    for (const chunk of item.chunks) {
      chunks.append(
        element(
          "li",
          {},
          element("span", { class: "muted small", text: `characters ${chunk.start}–${chunk.end} · ` }),
          chunk.error ? `failed: ${chunk.error}` : chunk.summary_text || "",
        ),
      );
    }
    details.append(chunks);
    entry.append(details);
  }
  return entry;
}

// --- routing ---------------------------------------------------------------------------------

function route({ focus = true } = {}) {
  stopView();
  clearError();
  const match = location.hash.match(/^#\/jobs\/([0-9a-f-]{36})$/i);
  stopView = match ? showJob(match[1]) : showHome();
  // After a navigation, start reading at the new page's heading, as a page load would.
  if (focus) main.querySelector("h1")?.focus();
}

// The hash holds the route, so the skip link moves focus itself instead of changing it.
document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});

window.addEventListener("hashchange", () => route());
route({ focus: false });
