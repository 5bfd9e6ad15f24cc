// Audit trail (admin only): every write through the API and every console sign-in, newest first,
// filtered by principal, action (method), target (path prefix), outcome and time range, paged with
// the API's cursor. The first page refreshes every 5 s, so a write shows here when it lands.
import { api } from "./api.js";
import { clear, el, every, problemBox, table, when } from "./ui.js";

const METHODS = ["", "POST", "PUT", "PATCH", "DELETE"];
const OUTCOMES = ["", "ok", "refused", "failed"];
const PAGE = 50;

function full(value) {
  return value === null || value === undefined ? "" : JSON.stringify(value);
}

// A datetime-local input's value (no zone: the console shows UTC) as an ISO time in UTC.
function utc(value) {
  return value ? new Date(value + "Z").toISOString() : "";
}

export async function auditPage(view, session) {
  if (!session.isAdmin) {
    view.append(el("h1", {}, "Audit trail"), el("p", { class: "muted" }, "Shown to unscoped admins only."));
    return;
  }
  const filters = {
    principal: el("input", { id: "audit-principal", placeholder: "principal", "aria-label": "principal" }),
    method: el("select", { id: "audit-method", "aria-label": "action" }, METHODS.map((m) => el("option", { value: m }, m || "any action"))),
    path_prefix: el("input", { id: "audit-target", placeholder: "target, e.g. /api/v1/users", "aria-label": "target", size: 28 }),
    outcome: el("select", { id: "audit-outcome", "aria-label": "outcome" }, OUTCOMES.map((o) => el("option", { value: o }, o || "any outcome"))),
    since: el("input", { id: "audit-since", type: "datetime-local", step: 1, "aria-label": "since (UTC)" }),
    until: el("input", { id: "audit-until", type: "datetime-local", step: 1, "aria-label": "until (UTC)" }),
  };
  const box = el("div", { id: "audit-list" });
  const pager = el("div", { class: "pager" });
  const details = el("div", { id: "audit-detail" });
  const pages = [null]; // the "before" cursor of each page shown so far; null: the newest
  let index = 0;
  const params = () => ({ principal: filters.principal.value.trim(), method: filters.method.value,
                          path_prefix: filters.path_prefix.value.trim(), outcome: filters.outcome.value,
                          since: utc(filters.since.value), until: utc(filters.until.value), limit: PAGE });

  function show(record) {
    clear(details, el("h2", {}, `${record.method} ${record.path}`),
      el("dl", { class: "kv" },
        ...[["time", when(record.time)], ["service", record.service], ["principal", record.principal || "(refused credentials)"],
            ["role", record.role || ""], ["user", record.user || ""], ["scope", record.scope || ""], ["address", record.address || ""],
            ["status", `${record.status} (${record.outcome})`], ["query", full(record.query)], ["body", full(record.body)],
            ["before", full(record.before)], ["after", full(record.after)]].flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])));
  }

  let latest = 0; // answers to an older request (filters changed since) are dropped
  async function load() {
    const asked = ++latest;
    try {
      const page = await api.get("/audit", { ...params(), before: pages[index] || undefined });
      if (asked !== latest) return;
      clear(box, table(["Time", "Principal", "Action", "Target", "Status", "Address", "Change"], page.records.map((r) =>
        el("tr", { dataset: { id: r.id }, onclick: () => show(r) },
          el("td", {}, when(r.time)), el("td", { class: "mono" }, r.principal || "(refused)"), el("td", {}, r.method),
          el("td", { class: "mono" }, r.path), el("td", {}, el("span", { class: `status ${r.outcome === "ok" ? "succeeded" : "failed"}` },
            `${r.status} ${r.outcome}`)), el("td", { class: "mono" }, r.address || ""),
          el("td", { class: "mono" }, r.before || r.after ? (r.before ? "before" : "") + (r.before && r.after ? " → " : "") + (r.after ? "after" : "") : "")))),
        page.records.length ? null : el("p", { class: "muted" }, "No record matches."));
      pages.length = index + 1;
      if (page.next_before) pages.push(page.next_before);
      clear(pager,
        el("button", { id: "audit-newer", disabled: index === 0, onclick: () => { index -= 1; load(); } }, "Newer"),
        el("span", { class: "muted" }, `page ${index + 1}`),
        el("button", { id: "audit-older", disabled: !page.next_before, onclick: () => { index += 1; load(); } }, "Older"));
    } catch (error) { if (asked === latest) clear(box, problemBox(error)); }
  }

  view.append(el("h1", {}, "Audit trail"),
    el("div", { class: "toolbar", id: "audit-filters" }, filters.principal, filters.method, filters.path_prefix, filters.outcome,
      el("span", { class: "muted" }, "from"), filters.since, el("span", { class: "muted" }, "to"), filters.until,
      el("span", { class: "muted" }, "newest first; the first page refreshes every 5 s")),
    box, pager, details);
  // Back to the newest page when a filter changes (a blur that changed nothing keeps the page).
  let shown = JSON.stringify(params());
  for (const input of Object.values(filters)) {
    input.addEventListener("change", () => {
      const wanted = JSON.stringify(params());
      if (wanted === shown) return;
      shown = wanted;
      pages.length = 1;
      index = 0;
      load();
    });
  }
  every(5000, () => { if (index === 0) load(); });
  await load();
}
