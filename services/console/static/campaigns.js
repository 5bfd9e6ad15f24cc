// Campaigns: list with state and devices per state, create (JSON), and a campaign's detail with
// progress per wave refreshed by polling; start, pause, resume, approve, cancel, retry failed.
import { ApiError, api } from "./api.js";
import { clear, el, every, problemBox, progressBar, statusBadge, table, when } from "./ui.js";

const DEVICE_STATES = ["eligible", "waiting", "in_progress", "upgraded", "failed", "skipped"];
// Which operator action the API takes in which campaign state (docs/campaigns.md, "API").
const ACTIONS = [
  ["start", "Start", ["draft"]],
  ["pause", "Pause", ["running", "scheduled"]],
  ["resume", "Resume", ["paused"]],
  ["approve", "Approve next wave", ["running", "paused", "scheduled"]],
  ["retry-failed", "Retry failed", ["running", "paused", "completed"]],
  ["cancel", "Cancel", ["draft", "scheduled", "running", "paused"]],
];
const EXAMPLE = {
  name: "firmware 3.1.0",
  query: { product_class: "IGD-SIM" },
  firmware: [{ product_class: "IGD-SIM", file_name: "fw-3.1.0.bin" }],
  canary: { size: 1 },
  waves: [{ percent: 50 }, { percent: 100 }],
  gates: { min_success_rate: 0.9, soak_seconds: 0, manual_approval: false },
  limits: { max_in_flight: 10, retries: 0 },
  draft: true,
};

const campaignPath = (id, rest = "") => `/campaigns/${encodeURIComponent(id)}${rest}`;

function countsText(counts) {
  return DEVICE_STATES.filter((s) => counts?.[s]).map((s) => `${s.replace("_", " ")} ${counts[s]}`).join(", ") || "no devices";
}

// A bar in the device states' order (progressBar colours each state by its class).
function statesBar(counts) {
  return progressBar(Object.fromEntries(DEVICE_STATES.map((s) => [s, counts?.[s] || 0])));
}

function percentEnded(counts) {
  const total = DEVICE_STATES.reduce((a, s) => a + (counts?.[s] || 0), 0);
  if (!total) return 0;
  return Math.round((100 * ((counts.upgraded || 0) + (counts.failed || 0) + (counts.skipped || 0))) / total);
}

function actionButtons(session, campaign, message, after) {
  if (!session.canWrite) return null;
  return ACTIONS.filter(([, , states]) => states.includes(campaign.state)).map(([path, label]) =>
    el("button", { class: path === "cancel" ? "danger" : "", dataset: { action: path }, onclick: async () => {
      if (path === "cancel" && !confirm(`Cancel campaign ${campaign.name}?`)) return;
      try {
        const changed = await api.post(campaignPath(campaign.id, "/" + path));
        message.replaceChildren(el("div", { class: "notice" }, `Campaign ${changed.name}: ${changed.state}.`));
        after();
      } catch (error) { message.replaceChildren(problemBox(error)); }
    } }, label));
}

export async function campaignsPage(view, session) {
  const list = el("div", { id: "campaign-list" });
  const message = el("div");
  async function refresh() {
    try {
      const campaigns = (await api.get("/campaigns", { limit: 50 })).campaigns;
      clear(list, table(["Created", "Name", "State", "Devices", "Wave", "Progress", "Devices per state", ""], campaigns.map((c) =>
        el("tr", { dataset: { campaign: c.name, state: c.state } },
          el("td", { title: c.id }, when(c.created_at)),
          el("td", {}, el("a", { href: "#/campaigns/" + encodeURIComponent(c.id) }, c.name)),
          el("td", { class: "campaign-state" }, statusBadge(c.state), c.reason ? el("div", { class: "muted" }, c.reason) : null,
            c.note ? el("div", { class: "muted" }, c.note) : null),
          el("td", {}, c.total),
          el("td", { class: "campaign-wave" }, c.waves.length ? `${c.wave + 1} of ${c.waves.length}${c.wave === 0 ? " (canary)" : ""}` : ""),
          el("td", {}, statesBar(c.counts), el("span", { class: "campaign-percent" }, `${percentEnded(c.counts)} %`)),
          el("td", { class: "mono campaign-counts" }, countsText(c.counts)),
          el("td", {}, actionButtons(session, c, message, refresh))))),
      campaigns.length ? null : el("p", { class: "muted" }, "No campaigns yet."));
    } catch (error) { clear(list, problemBox(error)); }
  }
  view.append(el("h1", {}, "Campaigns"));
  if (session.canWrite) {
    const spec = el("textarea", { name: "campaign", rows: 14, cols: 90, "aria-label": "campaign" }, JSON.stringify(EXAMPLE, null, 1));
    const fieldError = el("div", { class: "field-error", dataset: { field: "campaign" } });
    view.append(el("form", { class: "stack", id: "campaign-form", onsubmit: async (e) => {
      e.preventDefault();
      message.replaceChildren();
      fieldError.textContent = "";
      try {
        let body;
        try { body = JSON.parse(spec.value); } catch (error) {
          throw new ApiError(0, { detail: "the campaign is not valid JSON", errors: [{ location: "body", message: error.message }] });
        }
        const created = await api.post("/campaigns", body);
        message.replaceChildren(el("div", { class: "notice" }, `Campaign ${created.name} created (${created.state}, ${created.total} devices).`));
        refresh();
      } catch (error) {
        message.replaceChildren(problemBox(error));
        for (const item of error.problem?.errors || []) fieldError.textContent += `${item.location}: ${item.message}\n`;
      }
    } }, el("label", {}, "New campaign (JSON: name, query, firmware, eligibility, canary, waves, gates, stop, windows, limits, start_at, draft; docs/campaigns.md)"),
    spec, fieldError, el("div", { class: "toolbar" }, el("button", { type: "submit", class: "primary" }, "Create campaign"))));
  }
  view.append(message, list);
  every(3000, refresh);
  await refresh();
}

export async function campaignPage(view, session, id) {
  const header = el("div", { id: "campaign-summary" });
  const waves = el("div", { id: "campaign-waves" });
  const devices = el("div", { id: "campaign-devices" });
  const message = el("div");
  const filter = el("select", { "aria-label": "device state", onchange: () => loadDevices() },
    el("option", { value: "" }, "every state"), DEVICE_STATES.filter((s) => s !== "eligible").map((s) => el("option", { value: s }, s)));
  const campaign = await api.get(campaignPath(id));

  async function loadDevices() {
    try {
      const found = (await api.get(campaignPath(id, "/devices"), { state: filter.value, limit: 50 })).devices;
      clear(devices, table(["Device", "Wave", "State", "Attempt", "From", "Target", "Reason or fault", "Ended"], found.map((d) =>
        el("tr", { dataset: { state: d.state } },
          el("td", { class: "mono" }, el("a", { href: "#/devices/" + encodeURIComponent(d.device_id) }, d.device_id)),
          el("td", {}, d.wave === 0 ? "canary" : d.wave), el("td", {}, statusBadge(d.state)), el("td", {}, d.attempt),
          el("td", {}, d.from_version || ""), el("td", {}, d.target_version || ""),
          el("td", {}, d.reason, d.fault ? el("div", { class: "mono" }, `${d.fault.code ?? ""} ${d.fault.string ?? d.fault.message ?? ""}`) : null),
          el("td", {}, when(d.ended_at))))), found.length ? null : el("p", { class: "muted" }, "No device in this state (waves are filled as they start)."));
    } catch (error) { clear(devices, problemBox(error)); }
  }

  async function refresh() {
    try {
      const progress = await api.get(campaignPath(id, "/progress"));
      Object.assign(campaign, { state: progress.state, reason: progress.reason, note: progress.note });
      clear(header, el("dl", { class: "kv" },
        el("dt", {}, "state"), el("dd", { class: "campaign-state" }, statusBadge(progress.state)),
        progress.reason ? [el("dt", {}, "reason"), el("dd", {}, progress.reason)] : null,
        progress.note ? [el("dt", {}, "note"), el("dd", {}, progress.note)] : null,
        el("dt", {}, "query"), el("dd", {}, typeof campaign.query === "string" ? campaign.query : JSON.stringify(campaign.query)),
        el("dt", {}, "firmware"), el("dd", {}, campaign.firmware.map((f) => `${f.product_class}: ${f.file_name} (${f.version || ""})`).join(", ")),
        el("dt", {}, "devices"), el("dd", {}, `${progress.total} selected, ${progress.downloads_in_flight} downloading`),
        el("dt", {}, "created"), el("dd", {}, `${when(campaign.created_at)} ${campaign.created_by || ""}`)),
        el("div", { class: "toolbar" }, statesBar(progress.counts), el("span", { class: "campaign-percent" }, `${percentEnded(progress.counts)} %`),
          el("span", { class: "mono" }, countsText(progress.counts))),
        el("div", { class: "toolbar" }, actionButtons(session, campaign, message, refresh)));
      clear(waves, table(["Wave", "Target", "Taken", "Progress", "Devices per state", "Approved", "Started", "Completed"], progress.waves.map((w) =>
        el("tr", { dataset: { wave: w.number }, class: w.number === progress.wave ? "highlight" : "" },
          el("td", {}, w.number === 0 ? "canary" : w.number), el("td", {}, w.target ?? "the rest"), el("td", {}, w.taken),
          el("td", {}, statesBar(w.counts)), el("td", { class: "mono" }, countsText(w.counts)),
          el("td", {}, w.approved ? "yes" : ""), el("td", {}, when(w.started_at)), el("td", {}, when(w.completed_at))))));
    } catch (error) { clear(header, problemBox(error)); }
  }

  view.append(el("h1", {}, "Campaign ", campaign.name, el("span", { class: "stamp" }, campaign.id)),
    el("p", {}, el("a", { href: "#/campaigns" }, "All campaigns")), message, header,
    el("h2", {}, "Waves"), waves, el("h2", {}, "Devices"), el("div", { class: "toolbar" }, filter), devices);
  every(2000, refresh);
  every(5000, loadDevices);
  await Promise.all([refresh(), loadDevices()]);
}
