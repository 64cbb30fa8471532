// A job's findings on its page: the extremes, the insights, and its results page by page.
import * as api from "./api.js";
import { labelClass } from "./charts.js";
import { element } from "./dom.js";
import { chunksLine, negativeText } from "./format.js";

const RESULTS_PAGE = 20;
const TEXT_SHOWN = 280; // characters of a text in the results table; the cell's title has all

export function renderExtremes(list, items) {
  list.replaceChildren(
    ...items.map((item) =>
      element(
        "li",
        {},
        element(
          "p",
          { class: "meta" },
          element("span", { class: `pill ${labelClass(item.label)}`, text: item.label }),
          ` ${item.score.toFixed(3)} · index ${item.index}`,
          item.custom_id ? element("span", { text: ` · id ${item.custom_id}` }) : "",
        ),
        element("blockquote", { text: item.text }),
      ),
    ),
  );
}

export function renderInsights(find, insights) {
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
        element("p", { text: negativeText(entry, insights.status) }),
      ),
    ),
  );
}

/**
 * The results section of a job, queued, running or finished. `fill()` adds the rows finished
 * since it last ran (in input order, as the API pages them) until the table holds `limit`
 * rows; the page calls it whenever the job's events say something finished. "Show more"
 * raises the limit a page at a time.
 */
export function resultsView(find, id, task, showError) {
  const section = find("#results");
  const more = find("#results-more");
  section.hidden = false;
  // Sentiment rows are short: a table reads best. Summaries are prose, one article each.
  const rows = task === "sentiment" ? sentimentTable(find("#results-list")) : null;
  let cursor = null;
  let shown = 0;
  let limit = RESULTS_PAGE;
  let ended = false;
  let again = false;
  let loading = null;
  const load = async () => {
    while (shown < limit && !ended) {
      const asked = limit - shown;
      const query = new URLSearchParams({ limit: String(asked) });
      if (task === "summarize") query.set("include_chunks", "true");
      else query.set("include_text", "true");
      if (cursor) query.set("cursor", cursor);
      const page = await api.getJson(`v1/jobs/${id}/results?${query}`);
      if (rows) rows.append(...page.items.map(sentimentRow));
      else find("#results-list").append(...page.items.map(summaryEntry));
      shown += page.items.length;
      ended = page.next_cursor === null;
      cursor = page.next_cursor ?? cursor;
      // A running job's page stops at the first text not finished: the rest comes later.
      if (page.partial && page.items.length < asked) break;
    }
    more.hidden = ended || shown < limit;
  };
  // One load at a time; a call during one runs once more after it, to see what it missed.
  const fill = async () => {
    if (loading) {
      again = true;
      return loading;
    }
    loading = (async () => {
      do {
        again = false;
        await load();
      } while (again);
    })().finally(() => {
      loading = null;
    });
    return loading;
  };
  more.addEventListener("click", () => {
    limit += RESULTS_PAGE;
    fill().catch(showError);
  });
  return { fill };
}

function sentimentTable(container) {
  const table = element("table", { class: "results" });
  table.createCaption().textContent = "Each text's label, in input order";
  const head = table.createTHead().insertRow();
  // "Index" as in the API's results and its row errors: one numbering, from 0.
  for (const heading of ["Index", "Id", "Text", "Label", "Score", "Category"]) {
    head.append(element("th", { scope: "col", text: heading }));
  }
  container.replaceChildren(element("div", { class: "scroll" }, table));
  return table.createTBody();
}

function sentimentRow(item) {
  const row = element("tr", { "data-index": String(item.index) });
  const text = item.text ?? "";
  const shown = text.length > TEXT_SHOWN ? `${text.slice(0, TEXT_SHOWN)}…` : text;
  row.append(
    element("td", { text: String(item.index) }),
    element("td", { text: item.custom_id ?? "" }),
    element("td", shown === text ? { class: "text", text } : { class: "text", text: shown, title: text }),
  );
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
  const name = item.custom_id ? `Index ${item.index} · id ${item.custom_id}` : `Index ${item.index}`;
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
      element("summary", { text: chunksLine(item) }),
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
