// Two small SVG charts, each with the same numbers as a table for screen readers.
import { share } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";

function svgElement(name, attributes = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

export function labelClass(label) {
  const name = label.toLowerCase();
  if (name.includes("neg")) return "negative";
  if (name.includes("pos")) return "positive";
  return "other";
}

function dataTable(caption, headings, rows) {
  const details = document.createElement("details");
  const summary = document.createElement("summary");
  summary.textContent = "Show as a table";
  const table = document.createElement("table");
  table.createCaption().textContent = caption;
  const head = table.createTHead().insertRow();
  for (const heading of headings) {
    const cell = document.createElement("th");
    cell.scope = "col";
    cell.textContent = heading;
    head.append(cell);
  }
  const body = table.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    for (const value of row) tr.insertCell().textContent = value;
  }
  details.append(summary, table);
  return details;
}

/**
 * Horizontal bars, one per label, with its count and share. The columns are sized from the
 * drawn text, so no label or value is cut off whatever the counts and the screen's width.
 */
export function labelChart(container, counts) {
  const entries = Object.entries(counts).sort((a, b) => a[0].localeCompare(b[0]));
  const total = entries.reduce((sum, [, n]) => sum + n, 0);
  container.replaceChildren();
  if (!total) {
    container.textContent = "No labelled texts yet.";
    return;
  }
  const rowHeight = 34;
  const gap = 8;
  const value = (n) => `${n.toLocaleString()} · ${share(n, total)}`;
  const describe = entries.map(([label, n]) => `${label}: ${n} (${share(n, total)})`).join(", ");
  const svg = svgElement("svg", {
    role: "img",
    "aria-label": `Labels of ${total} texts: ${describe}`,
    class: "chart",
    "data-chart": "labels",
  });
  container.append(svg); // in the page, so that its text can be measured
  const labels = entries.map(([label]) => svgElement("text", { class: "axis" }, label));
  const values = entries.map(([, n]) => svgElement("text", { class: "value" }, value(n)));
  svg.append(...labels, ...values);
  // A hidden chart measures 0: then guess from the characters (12 px digits are ~7 wide).
  const widest = (nodes) =>
    Math.max(...nodes.map((node) => node.getComputedTextLength() || node.textContent.length * 7.5));
  const labelWidth = widest(labels) + gap;
  const valueWidth = widest(values) + gap;
  const width = Math.max(320, labelWidth + valueWidth + 120);
  const barSpace = width - labelWidth - valueWidth;
  const max = Math.max(...entries.map(([, n]) => n));
  svg.setAttribute("viewBox", `0 0 ${width} ${entries.length * rowHeight}`);
  entries.forEach(([label, n], row) => {
    const y = row * rowHeight;
    const length = Math.max((barSpace * n) / max, 2);
    labels[row].setAttribute("x", "0");
    labels[row].setAttribute("y", String(y + 21));
    values[row].setAttribute("x", String(labelWidth + length + gap / 2));
    values[row].setAttribute("y", String(y + 21));
    svg.append(
      svgElement("rect", {
        x: labelWidth,
        y: y + 6,
        width: length,
        height: rowHeight - 12,
        rx: 3,
        class: `bar ${labelClass(label)}`,
        "data-label": label,
        "data-count": n,
      }),
    );
  });
  container.append(
    dataTable(
      "Texts per label",
      ["Label", "Texts", "Share"],
      entries.map(([label, n]) => [label, n.toLocaleString(), share(n, total)]),
    ),
  );
}

/** Vertical bars over [0, 1]: how many texts scored in each bin. */
export function histogramChart(container, highlights) {
  const { histogram, measure, scored } = highlights;
  container.replaceChildren();
  if (!scored) {
    container.textContent = "No scored texts yet.";
    return;
  }
  const width = 320;
  const height = 170;
  const plot = { left: 34, right: 8, top: 8, bottom: 36 };
  const plotWidth = width - plot.left - plot.right;
  const plotHeight = height - plot.top - plot.bottom;
  const max = Math.max(...histogram.map((b) => b.count), 1);
  const step = plotWidth / histogram.length;
  const what = measure === "confidence" ? "confidence of the label" : `probability of ${measure}`;
  const svg = svgElement("svg", {
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": `Histogram of the ${what} over ${scored} texts, ${histogram.length} bins`,
    class: "chart",
    "data-chart": "histogram",
  });
  svg.append(
    svgElement("line", {
      x1: plot.left, y1: plot.top + plotHeight, x2: width - plot.right, y2: plot.top + plotHeight,
      class: "gridline",
    }),
    svgElement("text", { x: plot.left - 4, y: plot.top + 10, class: "axis end" }, String(max)),
    svgElement("text", { x: plot.left - 4, y: plot.top + plotHeight, class: "axis end" }, "0"),
  );
  histogram.forEach((bin, index) => {
    const barHeight = (plotHeight * bin.count) / max;
    const bar = svgElement("rect", {
      x: plot.left + index * step + 1,
      y: plot.top + plotHeight - barHeight,
      width: Math.max(step - 2, 1),
      height: barHeight,
      class: "bar histogram",
      "data-count": bin.count,
    });
    bar.append(svgElement("title", {}, `${bin.start.toFixed(2)}–${bin.end.toFixed(2)}: ${bin.count}`));
    svg.append(bar);
  });
  for (const tick of [0, 0.5, 1]) {
    svg.append(
      svgElement(
        "text",
        { x: plot.left + tick * plotWidth, y: height - 20, class: "axis middle" },
        String(tick),
      ),
    );
  }
  svg.append(
    svgElement("text", { x: plot.left + plotWidth / 2, y: height - 4, class: "axis middle" }, what),
  );
  container.append(
    svg,
    dataTable(
      `Texts by ${what}`,
      ["From", "To", "Texts"],
      histogram.map((b) => [b.start.toFixed(2), b.end.toFixed(2), b.count.toLocaleString()]),
    ),
  );
}
