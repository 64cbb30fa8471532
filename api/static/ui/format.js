// What the page says about a job, in words: pure functions of the API's answers, so the
// same wording holds wherever a job is shown (the list, its page) and can be tested alone.

export const ACTIVE = new Set(["queued", "running"]);

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

/** Return the time from `from` to `to` in words: "14.5 s", "1 min 48 s", "2 h 5 min". */
export function seconds(from, to) {
  const s = Math.max(0, (new Date(to) - new Date(from)) / 1000);
  if (s < 60) return `${s.toFixed(1)} s`;
  const whole = Math.round(s);
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${whole % 60} s`;
  return `${Math.floor(whole / 3600)} h ${Math.floor((whole % 3600) / 60)} min`;
}

export function rate(perSecond) {
  return perSecond >= 10 ? perSecond.toFixed(0) : perSecond.toPrecision(2);
}

/** Return the model a job runs on: its catalogue name, source and exact revision. */
export function modelLine(job) {
  const model = job.model_name ? `${job.model_name} (${job.model})` : job.model;
  const revision = job.model_revision
    ? `revision ${job.model_revision}`
    : "revision recorded when a worker starts it";
  return `Model ${model} · ${revision}`;
}

export function describeInput(job) {
  const input = job.input || {};
  if (input.kind === "file") return input.filename ? `file ${input.filename}` : "file";
  if (input.kind === "document") return "document";
  return job.progress.total === 1 ? "1 text" : `${job.progress.total.toLocaleString()} texts`;
}

/** Return the parts of long texts, as `progress.chunks` counts them, in words. */
function partsLine(job) {
  const { done, total } = job.progress.chunks;
  // A summary's count includes the parts that summed up its chunks' summaries.
  const what = job.task === "summarize" ? "parts (chunks, then summaries of their summaries)" : "chunks";
  return `${done.toLocaleString()} of ${total.toLocaleString()} ${what}`;
}

/**
 * Return a job's progress in one line: texts done, chunks, and while it waits or runs, its
 * pace and time left — only when known: no worker, or no pace yet, is said in words.
 */
export function progressLine(job, now = new Date()) {
  const p = job.progress;
  const finished = p.done + p.errored;
  let line = `${finished.toLocaleString()} of ${p.total.toLocaleString()} done`;
  if (p.errored) line += ` (${p.errored.toLocaleString()} failed)`;
  if (p.chunks.total) line += ` · ${partsLine(job)}`;
  const queue = job.queue;
  if (queue && ACTIVE.has(job.status)) {
    if (queue.workers === 0) {
      line += ` · waiting: no worker runs ${queue.model_name || queue.model} yet`;
    }
    else if (!queue.items_per_s) line += " · no pace known yet";
    else {
      line += ` · ${rate(queue.items_per_s)} items/s`;
      if (queue.estimated_finish_at) {
        line += ` · about ${seconds(now, queue.estimated_finish_at)} left`;
      }
    }
  }
  return line;
}

export function fraction(job) {
  const p = job.progress;
  const total = p.total + p.chunks.total;
  return total ? (p.done + p.errored + p.chunks.done) / total : 0;
}

/** Return what to say of one category's negative feedback in a job's insights. */
export function negativeText(entry, insightsStatus) {
  if (entry.summary) return entry.summary;
  if (entry.error) return `No summary: ${entry.error}`;
  if (!entry.count) return "No negative feedback in this category.";
  return insightsStatus === "done" ? "No summary." : "Summary pending…";
}

/** Return the line over a summary's chunk summaries: how many, and what summed them up. */
export function chunksLine(item) {
  const chunks = item.chunks.length;
  let line = `Summaries of its ${chunks.toLocaleString()} chunk${chunks === 1 ? "" : "s"}`;
  if (item.reduce_parts) {
    const parts = item.reduce_parts;
    line += `, summed up in ${parts.toLocaleString()} more part${parts === 1 ? "" : "s"}`;
    line += ` (${(chunks + parts).toLocaleString()} parts in all)`;
  }
  return line;
}

/** Return a share of a total as a whole percentage; a share under 1% is not "0%". */
export function share(count, total) {
  const percent = (100 * count) / total;
  return percent > 0 && percent < 1 ? "<1%" : `${Math.round(percent)}%`;
}
