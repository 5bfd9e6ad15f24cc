// Overview: fleet figures, tasks by outcome (24 h), software versions per product class, recent faults.
import { api } from "./api.js";
import { clear, el, every, problemBox, table, when } from "./ui.js";
import { faultText } from "./tasklist.js";

function card(id, n, label) {
  return el("div", { class: "card", id }, el("div", { class: "n" }, n.toLocaleString("en")), el("div", { class: "l" }, label));
}

export async function overviewPage(view) {
  const cards = el("div", { class: "cards", id: "overview-cards" });
  const outcomes = el("div", { id: "task-outcomes" });
  const versions = el("div", { id: "versions-chart" });
  const faults = el("div", { id: "recent-faults" });
  const stamp = el("span", { class: "stamp" });
  async function refresh() {
    try {
      const [devices, tasks, failed] = await Promise.all([api.get("/stats/devices"), api.get("/stats/tasks"),
        api.get("/tasks", { status: "failed", limit: 10 })]);
      clear(cards,
        card("devices-total", devices.total, "devices"),
        card("devices-seen", devices.seen, "seen within their interval"),
        card("devices-silent", devices.silent, "silent"),
        card("informs-minute", devices.informs_last_minute, "informs (sessions), last minute"),
        card("informs-5", Math.round(devices.informs_last_5_minutes / 5), "informs per minute, last 5 min"),
        ...Object.entries(tasks.by_status).filter(([s]) => ["succeeded", "failed", "pending"].includes(s))
          .map(([s, n]) => card("tasks-" + s, n, `tasks ${s}, 24 h`)));
      const total = Object.values(tasks.by_status).reduce((a, b) => a + b, 0) || 1;
      clear(outcomes, el("div", { class: "chart" }, Object.entries(tasks.by_status).flatMap(([s, n]) => [
        el("span", {}, s.replace("_", " ")), el("div", { class: "b", style: `width:${(100 * n) / total}%;min-width:${n ? 2 : 0}px` }), el("span", {}, n)])));
      const max = Math.max(1, ...devices.versions.map((v) => v.count));
      clear(versions, devices.versions.length ? el("div", { class: "chart" }, devices.versions.slice(0, 30).flatMap((v) => [
        el("span", { class: "mono" }, `${v.product_class || "?"} · ${v.software_version || "?"}`),
        el("div", { class: "b", style: `width:${(100 * v.count) / max}%` }), el("span", {}, v.count)])) : el("p", { class: "muted" }, "No devices yet."));
      clear(faults, failed.tasks.length ? table(["When", "Device", "Task", "Fault"], failed.tasks.map((t) => el("tr", {},
        el("td", {}, when(t.updated_at)), el("td", { class: "mono" }, el("a", { href: "#/devices/" + encodeURIComponent(t.device_id) }, t.device_id)),
        el("td", {}, t.name), el("td", { class: "mono" }, faultText(t))))) : el("p", { class: "muted" }, "No failed tasks."));
      stamp.textContent = `updated ${when(devices.at)}, every 10 s`;
    } catch (error) { clear(cards, problemBox(error)); }
  }
  view.append(el("h1", {}, "Overview ", stamp), cards,
    el("div", { class: "grid2" },
      el("div", {}, el("h2", {}, "Tasks by outcome, last 24 h"), outcomes, el("h2", {}, "Recent faults"), faults),
      el("div", {}, el("h2", {}, "Software versions per product class"), versions)));
  every(10000, refresh);
  await refresh();
}
