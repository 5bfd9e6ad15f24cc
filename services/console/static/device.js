// One device: summary, actions, the parameter tree (lazy, searchable, inline edit), its tasks
// (live), its faults.
import { api, devicePath } from "./api.js";
import { ENDED, ago, clear, el, every, problemBox, statusBadge, table, when } from "./ui.js";
import { faultText, liveTasks } from "./tasklist.js";

const INSTANCE = /\.\d+\.$/;

function parentOf(name) {
  const trimmed = name.endsWith(".") ? name.slice(0, -1) : name;
  const cut = trimmed.lastIndexOf(".");
  return cut < 0 ? "" : trimmed.slice(0, cut + 1);
}

function buildTree(parameters) {
  const children = new Map();
  const add = (parent, child) => {
    if (!children.has(parent)) children.set(parent, new Set());
    children.get(parent).add(child);
  };
  for (const name of Object.keys(parameters)) {
    let parent = parentOf(name);
    add(parent, name);
    // Intermediate objects the record does not list still get a node.
    while (parent) {
      const up = parentOf(parent);
      const known = children.get(up);
      if (known && known.has(parent)) break;
      add(up, parent);
      parent = up;
    }
  }
  const sorted = new Map();
  const natural = (a, b) => a.localeCompare(b, undefined, { numeric: true });
  for (const [parent, set] of children) sorted.set(parent, [...set].sort(natural));
  return sorted;
}

function leaf(name) {
  const trimmed = name.endsWith(".") ? name.slice(0, -1) : name;
  return trimmed.slice(trimmed.lastIndexOf(".") + 1) + (name.endsWith(".") ? "." : "");
}

export async function devicePage(view, session, deviceId) {
  const path = devicePath(deviceId);
  let device = await api.get(path);
  const expanded = new Set();
  const pendingEdits = new Map(); // parameter name -> {task, note, status}
  const watching = new Set(); // ids of the tasks this page queued and has not seen end
  const summary = el("div");
  const actions = el("div", { class: "toolbar", id: "device-actions" });
  const message = el("div", { id: "device-message" });
  const treeSearch = el("input", { type: "search", id: "tree-search", placeholder: "filter parameters by name or value",
                                   "aria-label": "filter parameters", class: "grow" });
  const treeBody = el("tbody");
  const treeInfo = el("span", { class: "muted" });
  const tree = buildTreeRef();
  function buildTreeRef() { return { map: buildTree(device.parameters || {}) }; }

  async function reload() {
    try {
      device = await api.get(path);
      tree.map = buildTree(device.parameters || {});
      renderSummary();
      renderTree();
    } catch (error) {
      message.replaceChildren(problemBox(error));
    }
  }

  // The summary follows the device (boots, Informs, a new software version) without the tree.
  const SUMMARY_FIELDS = "oui,product_class,serial_number,manufacturer,software_version,tags,first_seen,last_inform," +
    "last_boot,last_bootstrap,silent_since,inform_interval,connection_request_url,remote_address,reboot_pending";
  async function refreshSummary() {
    try {
      const fresh = await api.get(path, { fields: SUMMARY_FIELDS });
      device = { ...device, ...fresh, parameters: device.parameters };
      renderSummary();
    } catch { /* the next refresh tries again; errors of actions are shown where they happen */ }
  }

  let credentials = null; // what the credentials API says (admin keys only; never the secrets)
  function credentialsText() {
    if (credentials) return `per-device: username ${credentials.username}, realm ${credentials.realm}, set ${when(credentials.updated_at)}`;
    return device.cpe_credentials ? "per-device credentials stored" : "the shared credentials (none stored for this device)";
  }
  if (session.isAdmin) {
    try {
      credentials = (await api.get("/credentials", { device_id: device.id, limit: 1 })).credentials[0] || null;
    } catch { credentials = null; }
  }

  function online() {
    if (device.silent_since) return "silent";
    return "online";
  }

  function renderSummary() {
    const p = device.parameters || {};
    const root = Object.keys(p).find((n) => n.startsWith("InternetGatewayDevice.")) ? "InternetGatewayDevice." : "Device.";
    const value = (n) => (p[root + n] ? String(p[root + n].value ?? "") : "");
    clear(summary, el("div", { class: "grid2" },
      el("dl", { class: "kv", id: "device-summary" },
        el("dt", {}, "Device id"), el("dd", {}, device.id),
        el("dt", {}, "State"), el("dd", {}, statusBadge(online()), device.silent_since ? ` since ${when(device.silent_since)}` : ""),
        el("dt", {}, "Manufacturer"), el("dd", {}, device.manufacturer || ""),
        el("dt", {}, "Model"), el("dd", {}, `${device.product_class || ""} ${value("DeviceInfo.ModelName")}`.trim()),
        el("dt", {}, "Software"), el("dd", { id: "software-version" }, device.software_version || ""),
        el("dt", {}, "Hardware"), el("dd", {}, value("DeviceInfo.HardwareVersion")),
        el("dt", {}, "Data model"), el("dd", {}, root === "Device." ? "TR-181 (Device.)" : "TR-098 (InternetGatewayDevice.)")),
      el("dl", { class: "kv" },
        el("dt", {}, "Last inform"), el("dd", { id: "last-inform" }, `${when(device.last_inform)} (${ago(device.last_inform)})`),
        el("dt", {}, "Last boot"), el("dd", { id: "last-boot" }, when(device.last_boot)),
        el("dt", {}, "First seen"), el("dd", {}, when(device.first_seen)),
        el("dt", {}, "Inform interval"), el("dd", {}, device.inform_interval ? `${device.inform_interval} s` : ""),
        el("dt", {}, "Address"), el("dd", {}, device.remote_address || ""),
        el("dt", {}, "Connection request"), el("dd", {}, device.connection_request_url || ""),
        el("dt", {}, "CPE credentials"), el("dd", { id: "cpe-credentials" }, credentialsText()),
        el("dt", {}, "Tags"), el("dd", { id: "device-tags" }, (device.tags || []).join(", ") || "none"),
        device.reboot_pending ? [el("dt", {}, "Pending reboot"), el("dd", {}, device.reboot_pending.join(", "))] : null)));
  }

  async function queue(body, note) {
    message.replaceChildren();
    try {
      const task = await api.post(`${path}/tasks`, body, { connection_request: "true" });
      watching.add(task.id);
      const outcome = task.connection_request ? ` (connection request: ${task.connection_request.outcome})` : "";
      message.replaceChildren(el("div", { class: "notice" }, `${note}: task ${task.name} queued${outcome}.`));
      return task;
    } catch (error) {
      message.replaceChildren(problemBox(error));
      return null;
    }
  }

  async function renderActions() {
    if (!session.canWrite) return actions.replaceChildren();
    const firmware = el("select", { id: "firmware-file", "aria-label": "firmware file" });
    try {
      const files = (await api.get("/files", { kind: "file", limit: 200 })).files;
      for (const f of files) firmware.append(el("option", { value: f.name }, `${f.name}${f.version ? " (" + f.version + ")" : ""} – ${f.file_type}`));
    } catch { /* the push shows the API's answer */ }
    const tag = el("input", { placeholder: "tag", size: 10, "aria-label": "tag" });
    actions.replaceChildren(
      el("button", { id: "reboot", onclick: () => confirm("Reboot this device?") && queue({ name: "reboot" }, "Reboot") }, "Reboot"),
      el("button", { class: "danger", id: "factory-reset", onclick: () => confirm("Factory reset this device? It loses its configuration.") && queue({ name: "factoryReset" }, "Factory reset") }, "Factory reset"),
      el("button", { id: "connection-request", onclick: async () => {
        message.replaceChildren();
        try {
          const answer = await api.post(`${path}/connection-request`);
          message.replaceChildren(el("div", { class: answer.outcome === "ok" || answer.outcome === "sent" ? "notice" : "problem" },
            `Connection request: ${answer.outcome} (${answer.transport}) ${answer.detail || ""}`));
        } catch (error) { message.replaceChildren(problemBox(error)); }
      } }, "Connection request"),
      el("button", { id: "refresh-all", onclick: () => queue({ name: "getParameterNames", parameter_path: "", read_values: true }, "Refresh") }, "Refresh all"),
      el("span", { class: "muted" }, "| firmware:"), firmware,
      el("button", { id: "push-firmware", onclick: () => firmware.value && queue({ name: "download", file_name: firmware.value }, "Push firmware") }, "Push"),
      el("button", { id: "upload-config", onclick: () => queue({ name: "upload", file_type: "1 Vendor Configuration File" }, "Upload config") }, "Upload config"),
      el("span", { class: "muted" }, "|"), tag,
      el("button", { onclick: async () => {
        try { await api.post(`${path}/tags/${encodeURIComponent(tag.value.trim())}`); await reload(); } catch (error) { message.replaceChildren(problemBox(error)); }
      } }, "Tag"),
      session.isAdmin ? el("button", { class: "danger", onclick: async () => {
        if (!confirm("Forget this device everywhere?")) return;
        try { await api.del(path); location.hash = "#/devices"; } catch (error) { message.replaceChildren(problemBox(error)); }
      } }, "Delete device") : null);
  }

  function valueCell(name, entry) {
    const shown = entry.value === undefined ? "" : String(entry.value);
    const pending = pendingEdits.get(name);
    const cell = el("td", { class: "value" + (entry.writable && session.canWrite ? " editable" : ""),
                            title: session.canWrite ? (entry.writable ? "click to edit" : "read-only: click to try a write anyway") : "" }, shown);
    if (session.canWrite) {
      cell.addEventListener("click", () => {
        if (cell.querySelector("input")) return;
        // The record's writable flag is what the CPE last said; the CPE has the last word (its fault is shown).
        if (!entry.writable && !confirm(`${name} is read-only on this device. Send the write anyway?`)) return;
        const input = el("input", { class: "edit", value: shown, "aria-label": "new value of " + name });
        input.addEventListener("keydown", async (e) => {
          if (e.key === "Escape") return renderTree();
          if (e.key !== "Enter") return;
          const entryBody = { name, value: input.value };
          if (entry.type) entryBody.type = entry.type;
          const task = await queue({ name: "setParameterValues", parameter_values: [entryBody] }, `Set ${name}`);
          if (task) pendingEdits.set(name, { task: task.id, note: "setting…", status: "pending" });
          renderTree();
        });
        cell.replaceChildren(input);
        input.focus();
        input.select();
      });
    }
    const note = pending ? el("div", { class: pending.status === "failed" ? "error param-fault" : "muted param-note" }, pending.note) : null;
    if (note) cell.append(note);
    return cell;
  }

  function objectActions(name, entry) {
    if (!session.canWrite) return el("td");
    const buttons = [el("button", { title: "read this subtree again", onclick: () => queue({ name: "getParameterNames", parameter_path: name, read_values: true }, `Refresh ${name}`) }, "Refresh")];
    const children = tree.map.get(name) || [];
    const isTable = children.some((c) => INSTANCE.test(c)) || (entry.writable && !INSTANCE.test(name));
    if (isTable && entry.writable !== false) buttons.push(el("button", { onclick: () => queue({ name: "addObject", object_name: name }, `Add to ${name}`) }, "Add"));
    if (INSTANCE.test(name) && entry.writable !== false) {
      buttons.push(el("button", { class: "danger", onclick: () => confirm(`Delete ${name}?`) && queue({ name: "deleteObject", object_name: name }, `Delete ${name}`) }, "Delete"));
    }
    return el("td", {}, buttons);
  }

  function row(name, depth) {
    const entry = (device.parameters || {})[name] || {};
    const isObject = name.endsWith(".");
    const open = expanded.has(name);
    const label = el("td", { style: `padding-left:${8 + depth * 14}px`, title: name },
      isObject ? el("span", { class: "toggle" }, open ? "▾" : "▸") : el("span", { class: "toggle" }, ""), depth < 0 ? name : leaf(name));
    if (isObject) {
      label.style.cursor = "pointer";
      label.addEventListener("click", () => { open ? expanded.delete(name) : expanded.add(name); renderTree(); });
    }
    return el("tr", { dataset: { name } }, label,
      isObject ? el("td", { class: "muted" }, `${(tree.map.get(name) || []).length} entries`) : valueCell(name, entry),
      el("td", { class: "muted" }, entry.type || ""),
      el("td", {}, entry.writable === undefined ? "" : entry.writable ? "rw" : "r"),
      el("td", { class: "muted", title: entry.timestamp || "" }, entry.timestamp ? ago(entry.timestamp) : ""),
      isObject ? objectActions(name, entry) : el("td"));
  }

  function renderTree() {
    const rows = [];
    const filter = treeSearch.value.trim().toLowerCase();
    const parameters = device.parameters || {};
    if (filter) {
      const names = Object.keys(parameters).filter((n) => n.toLowerCase().includes(filter) ||
        String(parameters[n].value ?? "").toLowerCase().includes(filter));
      for (const name of names.slice(0, 500)) rows.push(row(name, -1));
      treeInfo.textContent = `${names.length} match(es)` + (names.length > 500 ? ", first 500 shown" : "");
    } else {
      const walk = (parent, depth) => {
        for (const child of tree.map.get(parent) || []) {
          rows.push(row(child, depth));
          if (expanded.has(child)) walk(child, depth + 1);
        }
      };
      walk("", 0);
      treeInfo.textContent = `${Object.keys(parameters).length} parameters`;
    }
    clear(treeBody, rows);
  }
  treeSearch.addEventListener("input", renderTree);

  for (const root of tree.map.get("") || []) expanded.add(root);
  view.append(
    el("p", {}, el("a", { href: "#/devices" }, "Devices"), " / ", el("span", { class: "mono" }, device.id)),
    el("h1", {}, device.serial_number || device.id),
    summary, actions, message,
    el("h2", {}, "Parameters"),
    el("div", { class: "toolbar" }, treeSearch, treeInfo,
      el("button", { onclick: () => { for (const k of tree.map.keys()) if (k) expanded.add(k); renderTree(); } }, "Expand all"),
      el("button", { onclick: () => { expanded.clear(); renderTree(); } }, "Collapse")),
    el("table", { class: "tree", id: "parameter-tree" },
      el("thead", {}, el("tr", {}, ["Name", "Value", "Type", "Access", "Last read", ""].map((h) => el("th", {}, h)))), treeBody));
  renderSummary();
  renderTree();
  await renderActions();
  every(5000, refreshSummary);

  const tasksBox = el("div", { id: "device-tasks" });
  const faultsBox = el("div", { id: "device-faults" });
  const eventsBox = el("div", { id: "device-events" });
  const eventKind = el("select", { "aria-label": "event kind", onchange: () => renderEvents() },
    ["", "value_changed", "booted", "bootstrapped", "informed", "went_silent", "task_succeeded", "task_failed",
     "fault_raised", "firmware_upgraded", "registered"].map((k) => el("option", { value: k }, k || "every kind")));
  view.append(el("h2", {}, "Tasks (live)"), tasksBox, el("h2", {}, "Faults"), faultsBox,
    el("h2", {}, "Events ", eventKind), eventsBox);
  await liveTasks(tasksBox, session, () => api.get(`${path}/tasks`, { limit: 30 }), {
    showDevice: false,
    onTasks: (tasks) => {
      // A task this page queued has ended (or any task changed the device): show the record as it is now.
      const ended = tasks.filter((t) => ENDED.has(t.status) && watching.has(t.id));
      if (!ended.length) return;
      for (const task of ended) {
        watching.delete(task.id);
        for (const [name, edit] of pendingEdits) {
          if (edit.task === task.id) {
            pendingEdits.set(name, { ...edit, status: task.status, note: task.status === "succeeded" ? "set" : `fault: ${faultText(task)}` });
          }
        }
      }
      reload().then(renderFaults);
    },
  });
  async function renderFaults() {
    try {
      const failed = (await api.get(`${path}/tasks`, { status: "failed", limit: 20 })).tasks;
      clear(faultsBox, failed.length ? table(["When", "Task", "Fault"], failed.map((t) => el("tr", {},
        el("td", {}, when((t.faults || []).at(-1)?.at || t.updated_at)), el("td", {}, t.name), el("td", { class: "mono" }, faultText(t)))))
        : el("p", { class: "muted" }, "No faults."));
    } catch (error) { clear(faultsBox, problemBox(error)); }
  }
  await renderFaults();

  function eventText(event) {
    if (event.changes && event.changes.length) {
      const shown = (v) => (v === null || v === undefined ? "∅" : v === "" ? '""' : v);
      return event.changes.map((c) => `${c.name}: ${shown(c.old)} → ${shown(c.new)}`).join("; ");
    }
    const d = event.details || {};
    if (event.kind === "informed") return (d.events || []).join(", ");
    if (event.kind.startsWith("task_")) return `${d.name || ""} ${d.reason || ""}`.trim();
    if (event.kind === "fault_raised") return `${d.code ?? ""} ${d.string || ""} ${d.method || ""}`.trim();
    if (event.kind === "firmware_upgraded") return `${d.from || d.from_version || ""} → ${d.to || d.to_version || ""}`;
    return Object.keys(d).length ? JSON.stringify(d) : "";
  }
  async function renderEvents() {
    try {
      const page = await api.get(`${path}/events`, { limit: 50, kind: eventKind.value });
      clear(eventsBox, page.events.length ? table(["Time", "Kind", "What"], page.events.map((e) => el("tr", { dataset: { kind: e.kind } },
        el("td", {}, when(e.time)), el("td", {}, e.kind.replace("_", " ")), el("td", { class: "mono" }, eventText(e)))), { class: "events" })
        : el("p", { class: "muted" }, "No events."));
    } catch (error) { clear(eventsBox, problemBox(error)); }
  }
  every(5000, renderEvents);
  await renderEvents();
}
