// Small DOM helpers shared by the pages.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value; // CSSOM: allowed by the page's CSP (style-src 'self')
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

// The API's problem, as the API words it: its detail and each field error with its location.
export function problemBox(error) {
  const problem = error && error.problem ? error.problem : { detail: String(error && error.message || error) };
  const errors = Array.isArray(problem.errors) ? problem.errors : [];
  return el("div", { class: "problem", role: "alert" },
    el("strong", {}, problem.status ? `${problem.status} ${problem.title || ""}: ` : ""),
    el("span", { class: "detail" }, problem.detail || ""),
    errors.length ? el("ul", {}, errors.map((e) => el("li", {}, el("code", {}, e.location || ""), " ", e.message || ""))) : null);
}

export function statusBadge(status) {
  return el("span", { class: `status ${status}` }, String(status).replace("_", " "));
}

export function when(value) {
  if (!value) return "";
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z").replace(/Z$/, "");
}

export function ago(value) {
  if (!value) return "never";
  const seconds = Math.round((Date.now() - new Date(value).getTime()) / 1000);
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

export function table(headers, rows, attrs = {}) {
  return el("table", attrs, el("thead", {}, el("tr", {}, headers.map((h) => (h instanceof Node ? h : el("th", {}, h))))),
    el("tbody", {}, rows));
}

export function progressBar(counts) {
  const total = Object.values(counts || {}).reduce((a, b) => a + b, 0);
  const bar = el("div", { class: "bar", title: JSON.stringify(counts || {}) });
  if (!total) return bar;
  for (const [status, n] of Object.entries(counts)) {
    if (n) bar.append(el("span", { class: status, style: `width:${(100 * n) / total}%` }));
  }
  return bar;
}

export function percentDone(counts) {
  const total = Object.values(counts || {}).reduce((a, b) => a + b, 0);
  if (!total) return 0;
  const open = (counts.pending || 0) + (counts.in_progress || 0) + (counts.pending_completion || 0);
  return Math.round((100 * (total - open)) / total);
}

// Repeats fn every ms while the page shows the same view; stopped by the router on navigation.
const timers = new Set();
export function every(ms, fn) {
  const id = setInterval(fn, ms);
  timers.add(id);
  return id;
}
export function stopTimers() {
  for (const id of timers) clearInterval(id);
  timers.clear();
}

export const ENDED = new Set(["succeeded", "failed", "cancelled", "expired"]);
