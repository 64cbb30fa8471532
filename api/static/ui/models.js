// The Models view (#/models): each catalogue model, the workers serving it, its drift and,
// where it takes part in one, its shadow comparison. The wording is in pure functions, so it
// can be checked alone in a browser.
import * as api from "./api.js";
import { element } from "./dom.js";

// Above this PSI the traffic no longer looks like the reference (the alert's threshold too).
export const PSI_HIGH = 0.2;

/** Return what a drift feature's PSI cell says, and whether it is above PSI_HIGH. */
export function psiText(feature) {
  if (feature.psi === null || feature.psi === undefined) {
    return { text: `no PSI: ${feature.reason}`, high: false };
  }
  const high = feature.psi > PSI_HIGH;
  const text = feature.psi.toFixed(3);
  return { text: high ? `⚠ ${text} (above ${PSI_HIGH})` : text, high };
}

/** Return a model's role in words: default or not, and its part in a shadow comparison. */
export function roleText(model, models) {
  const parts = [model.default ? "default" : "not the default"];
  if (model.shadow) {
    const percent = Math.round(100 * model.shadow_fraction);
    parts.push(`shadowed by ${model.shadow} on ${percent}% of its texts`);
  }
  const shadowed = models.find((other) => other.default && other.shadow === model.name);
  if (shadowed) parts.push(`candidate shadowing ${shadowed.name}`);
  return parts.join(" · ");
}

/** Return a worker serving a model in words: name, device, dtype, loaded or not. */
export function workerText(worker) {
  const state = worker.error
    ? `failed to load: ${worker.error}`
    : worker.loaded
      ? `loaded${worker.revision ? ` at revision ${worker.revision}` : ""}`
      : "not loaded yet (loads on first work)";
  return `${worker.name} · ${worker.device} · ${worker.dtype} · ${state}`;
}

/** Return a shadow report's headline figures as [name, value] pairs, for its task. */
export function shadowFigures(report) {
  const figures = [
    ["Compared", `${report.default} (default) with ${report.candidate} (candidate)`],
    ["Window", `last ${report.window_h} h`],
    [
      "Items compared",
      `${report.items_compared.toLocaleString()}${report.limited ? " (the newest)" : ""}`,
    ],
  ];
  const number = (value, digits) => (value === null ? "none yet" : value.toFixed(digits));
  if (report.task === "sentiment") {
    const agreement = report.label_agreement;
    const percent = agreement === null ? "none yet" : `${(100 * agreement).toFixed(1)}%`;
    figures.push(["Label agreement", percent]);
    figures.push(["Mean |Δscore|", number(report.mean_abs_delta_score, 4)]);
  } else {
    figures.push(["Mean ROUGE-L F", number(report.mean_rouge_l_f, 3)]);
    figures.push(["Mean length ratio", number(report.mean_length_ratio, 2)]);
  }
  return figures;
}

function takesPartInShadow(model, models) {
  return Boolean(model.shadow) || models.some((o) => o.default && o.shadow === model.name);
}

function driftTable(drift) {
  const table = element("table", { class: "drift" });
  table.createCaption().textContent = "Drift: the last 24 hours against the reference window";
  const head = table.createTHead().insertRow();
  for (const heading of ["Feature", "PSI", "Reference items", "Last 24 h items"]) {
    head.append(element("th", { scope: "col", text: heading }));
  }
  const body = table.createTBody();
  for (const feature of drift.features) {
    const row = body.insertRow();
    row.dataset.feature = feature.feature;
    row.append(element("th", { scope: "row", text: feature.feature }));
    const psi = psiText(feature);
    row.append(element("td", { class: psi.high ? "psi high" : "psi", text: psi.text }));
    row.insertCell().textContent = feature.reference_items.toLocaleString();
    row.insertCell().textContent = feature.current_items.toLocaleString();
  }
  return table;
}

function shadowList(report) {
  return element(
    "dl",
    { class: "figures" },
    ...shadowFigures(report).flatMap(([name, value]) => [
      element("dt", { text: name }),
      element("dd", { text: value }),
    ]),
  );
}

/** Return the section of one model; its drift and shadow reads fill it as they come. */
function modelSection(model, models, showError) {
  const id = `model-${model.name}`;
  const workers = model.workers.length
    ? element(
        "ul",
        { class: "workers" },
        ...model.workers.map((worker) => element("li", { text: workerText(worker) })),
      )
    : element("p", { class: "muted", text: "No live worker serves it: its jobs wait." });
  const reading = (what) => element("p", { class: "muted", text: `Reading ${what}…` });
  const drift = element("div", { class: "drift-box" }, reading("drift"));
  const section = element(
    "section",
    { class: "panel model", "data-model": model.name, "aria-labelledby": id },
    element("h2", { id, text: model.name }),
    element("p", { class: "facts", text: `${model.task} · ${roleText(model, models)}` }),
    element("p", { class: "muted" }, "Source ", element("code", { text: model.source })),
    element("h3", { text: "Workers" }),
    workers,
    drift,
  );
  // A failed read says why in its own place; the other models and reads carry on.
  const failed = (box, what) => (error) => {
    if (error instanceof api.ApiError && error.status === 401) showError(error);
    box.replaceChildren(element("p", { class: "error", text: `No ${what}: ${error.message}` }));
  };
  api
    .getJson(`v1/models/${encodeURIComponent(model.name)}/drift`)
    .then((found) =>
      drift.replaceChildren(
        // Focusable, so a keyboard can scroll a table wider than a phone.
        element(
          "div",
          {
            class: "scroll",
            tabindex: "0",
            role: "region",
            "aria-label": `Drift of ${model.name}`,
          },
          driftTable(found),
        ),
      ),
    )
    .catch(failed(drift, "drift"));
  if (takesPartInShadow(model, models)) {
    const shadow = element("div", { class: "shadow-box" }, reading("the shadow comparison"));
    section.append(element("h3", { text: "Shadow comparison" }), shadow);
    api
      .getJson(`v1/models/${encodeURIComponent(model.name)}/shadow`)
      .then((report) => shadow.replaceChildren(shadowList(report)))
      .catch(failed(shadow, "shadow comparison"));
  }
  return section;
}

/** Fill `main` with the Models view; return the function that stops it. */
export function showModels(main, showError) {
  main.replaceChildren(document.getElementById("models-view").content.cloneNode(true));
  const list = main.querySelector("#models");
  const load = async () => {
    try {
      const { models } = await api.getJson("v1/models");
      list.replaceChildren(...models.map((model) => modelSection(model, models, showError)));
      main.querySelector("#models-empty").hidden = models.length > 0;
    } catch (error) {
      showError(error);
    }
  };
  main.querySelector("#models-refresh").addEventListener("click", load);
  load();
  return () => {};
}
