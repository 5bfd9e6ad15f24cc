// A live list of tasks (polled): status, outcome, faults, retry and cancel.
import { api } from "./api.js";
import { ENDED, clear, el, every, problemBox, statusBadge, table, when } from "./ui.js";

export function faultText(task) {
  const fault = (task.faults || [])[task.faults.length - 1];
  if (!fault) return task.status === "failed" || task.status === "expired" ? task.reason || "" : "";
  const parts = [`${fault.code ?? ""} ${fault.string || ""}`.trim()];
  for (const p of fault.parameter_faults || []) {
    parts.push(`${p.parameter_name || p.name || ""}: ${p.fault_code ?? p.code ?? ""} ${p.fault_string || p.string || ""}`.trim());
  }
  return parts.join("; ");
}

function argsText(task) {
  const a = task.args || {};
  if (a.parameter_values) return a.parameter_values.map((p) => Array.isArray(p) ? `${p[0]}=${p[1]}` : `${p.name}=${p.value}`).join(", ");
  if (a.parameter_names) return a.parameter_names.join(", ");
  if (a.object_name) return a.object_name;
  if (a.parameter_path !== undefined) return a.parameter_path || "(all)";
  if (a.file_name) return a.file_name + (a.version ? ` (${a.version})` : "");
  return "";
}

// Renders the tasks ``fetchPage()`` returns into ``node`` and refreshes them every 2 s.
export function liveTasks(node, session, fetchPage, { showDevice = true, onTasks } = {}) {
  const message = el("div");
  const body = el("div");
  node.append(message, body);
  async function refresh() {
    let page;
    try {
      page = await fetchPage();
    } catch (error) {
      clear(body, problemBox(error));
      return;
    }
    if (onTasks) onTasks(page.tasks);
    const headers = ["Created", ...(showDevice ? ["Device"] : []), "Task", "Arguments", "Status", "Origin", "Attempts", "Outcome / fault", ""];
    clear(body, table(headers, page.tasks.map((task) => el("tr", { dataset: { task: task.id, status: task.status } },
      el("td", { title: task.id }, when(task.created_at)),
      showDevice ? el("td", { class: "mono" }, el("a", { href: "#/devices/" + encodeURIComponent(task.device_id) }, task.device_id)) : null,
      el("td", {}, task.name),
      el("td", { class: "mono args" }, argsText(task)),
      el("td", { class: "task-status" }, statusBadge(task.status)),
      el("td", { title: task.origin }, task.origin.length > 16 ? task.origin.slice(0, 14) + "…" : task.origin),
      el("td", {}, `${task.attempts}/${task.max_attempts}`),
      el("td", { class: "fault" }, faultText(task) || (task.status === "succeeded" ? resultText(task) : task.reason || "")),
      el("td", {}, session.canWrite ? actionsFor(task) : null))), { class: "tasks" }),
      page.tasks.length ? null : el("p", { class: "muted" }, "No tasks."));
  }
  function actionsFor(task) {
    const act = (verb) => async () => {
      message.replaceChildren();
      try { await api.post(`/tasks/${encodeURIComponent(task.id)}/${verb}`); await refresh(); } catch (error) { message.replaceChildren(problemBox(error)); }
    };
    if (!ENDED.has(task.status)) return el("button", { class: "danger", onclick: act("cancel") }, "Cancel");
    if (task.status !== "succeeded") return el("button", { onclick: act("retry") }, "Retry");
    return null;
  }
  every(2000, refresh);
  return refresh();
}

function resultText(task) {
  const r = task.result || {};
  if (r.parameters) return `${r.parameters.length} value(s) read`;
  if (r.instance_number !== undefined) return `instance ${r.instance_number}`;
  if (r.transfer) return `transfer done (fault ${r.transfer.fault_code})`;
  if (r.status !== undefined) return `status ${r.status}`;
  return "";
}
