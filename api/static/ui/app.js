// The textq page: submit jobs, follow them, read their results. Routes live in the hash:
// #/ lists jobs, #/jobs/<id> shows one, #/models shows the models.
import * as api from "./api.js";
import { histogramChart, labelChart } from "./charts.js";
import { element } from "./dom.js";
import {
  ACTIVE,
  describeInput,
  fraction,
  modelLine,
  progressLine,
  seconds,
  when,
} from "./format.js";
import { showModels } from "./models.js";
import { renderExtremes, renderInsights, resultsView } from "./results.js";

const POLL_MS = 1000;
const SLOW_POLL_MS = 5000;
const EVENT_REFRESH_MS = 500;
const LIST_POLL_MS = 2000;

const main = document.getElementById("main");
const alertBox = document.getElementById("alert");
let stopView = () => {};

// --- small helpers -------------------------------------------------------------------------

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

// Keys are made on the server, by whoever runs it: say how, so a new user can ask for one.
const HOW_TO_GET_A_KEY =
  "Whoever runs the server makes one there with the command " +
  "“textq keys create --tenant NAME” (it prints the key once); enter it under “API key”.";

function savedKeyMessage() {
  return api.savedKey()
    ? `The server refused this API key: it is unknown, revoked or expired. ${HOW_TO_GET_A_KEY}`
    : `This server needs an API key. ${HOW_TO_GET_A_KEY}`;
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
  let models = [];
  let modelsTask = null;
  const syncFields = () => {
    const task = form.task.value;
    const source = form.source.value;
    if (task !== modelsTask) {
      modelsTask = task;
      offerModels(form, models, task);
    }
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
  // Without the models (no key yet, an old server) jobs get the task's default; the jobs
  // list below says what is wrong, so the picker just stays hidden.
  api
    .getJson("v1/models")
    .then((found) => {
      models = found.models;
      modelsTask = null;
      syncFields();
    })
    .catch(() => {});
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

/** Offer the task's catalogue models in the picker, its default chosen; hide an empty one. */
function offerModels(form, models, task) {
  const mine = models.filter((model) => model.task === task);
  form.model.replaceChildren(
    ...mine.map((model) =>
      element("option", {
        value: model.name,
        text: model.default ? `${model.name} (default)` : model.name,
      }),
    ),
  );
  const chosen = mine.find((model) => model.default) ?? mine[0];
  if (chosen) form.model.value = chosen.name;
  form.querySelector("#model-picker").hidden = mine.length === 0;
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
        job.input?.preview ? element("q", { class: "preview", text: job.input.preview }) : "",
        element("span", { class: "muted small job-id" }, "Job ", element("code", { text: job.id })),
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
  // No model offered: the server picks the task's default.
  const model = form.model.value ? { model: form.model.value } : {};
  if (source === "text") {
    const text = form.text.value;
    if (!text.trim()) throw new Error("Write a text to submit.");
    return api.submitJob({ task, input: { text }, options, ...model });
  }
  const file = form.file.files[0];
  if (!file) throw new Error("Choose a file to upload.");
  if (source === "document") {
    return api.submitJob({ task, input: { document: await file.text() }, options, ...model });
  }
  const data = new FormData();
  data.append("file", file);
  data.append("task", task);
  if (model.model) data.append("model", model.model);
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
    find("#job-facts").textContent = `Job ${job.id} · submitted ${when(job.created_at)}${took}`;
    find("#job-model").textContent = modelLine(job);
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

  let results = null;
  async function refresh() {
    render(await api.getJson(`v1/jobs/${id}`));
    const active = ACTIVE.has(job.status);
    if (job.task === "sentiment" && (!active || Date.now() - highlightsAt > 3000)) {
      highlightsAt = Date.now();
      await refreshHighlights();
    }
    if (job.status !== "expired") {
      results ??= resultsView(find, id, job.task, showError);
      await results.fill();
    }
    return active;
  }

  // The job's events say when something changed: refresh then, at most every EVENT_REFRESH_MS.
  let pending = null;
  let refreshedAt = 0;
  const schedule = () => {
    if (pending !== null) return;
    pending = setTimeout(
      async () => {
        refreshedAt = Date.now();
        try {
          await refresh();
        } catch (error) {
          showError(error);
        } finally {
          pending = null;
        }
      },
      Math.max(0, refreshedAt + EVENT_REFRESH_MS - Date.now()),
    );
  };
  const controller = new AbortController();
  // Slowly as well, for what events do not carry (insights, highlights); fast if no stream.
  let stopPolling = every(SLOW_POLL_MS, refresh);
  api
    .followEvents(id, { onEvent: schedule, signal: controller.signal })
    .then(() => controller.signal.aborted || schedule())
    .catch(() => {
      if (controller.signal.aborted) return;
      stopPolling();
      stopPolling = every(POLL_MS, refresh);
    });
  return () => {
    controller.abort();
    stopPolling();
    clearTimeout(pending);
  };
}

// --- routing ---------------------------------------------------------------------------------

function route({ focus = true } = {}) {
  stopView();
  clearError();
  const match = location.hash.match(/^#\/jobs\/([0-9a-f-]{36})$/i);
  if (match) stopView = showJob(match[1]);
  else if (location.hash === "#/models") stopView = showModels(main, showError);
  else stopView = showHome();
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
