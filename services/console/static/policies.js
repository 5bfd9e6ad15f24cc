// Policies: list, create, edit (replace), enable/disable, delete; the API's errors per field.
import { ApiError, api } from "./api.js";
import { clear, el, problemBox, table, when } from "./ui.js";

const EVENTS = ["any", "registered", "bootstrap", "boot", "periodic", "scheduled", "value_change", "kicked",
  "connection_request", "transfer_complete"];

// What the orchestrator added when it resolved a task (a download's file facts): not part of a spec.
const RESOLVED = { download: ["file_size", "url", "version"] };

function specOf({ name, args }) {
  const spec = { name, ...(args || {}) };
  for (const key of RESOLVED[name] || []) delete spec[key];
  return spec;
}

// A match without its empty criteria (the API lists every criterion, most of them empty).
function compact(match) {
  return Object.fromEntries(Object.entries(match || {}).filter(([, v]) =>
    v !== null && v !== undefined && !(Array.isArray(v) && !v.length) && !(typeof v === "object" && !Array.isArray(v) && !Object.keys(v).length)));
}

function summaryOf(policy) {
  return policy.tasks.map((t) => t.name).join(", ");
}

export async function policiesPage(view, session) {
  const list = el("div", { id: "policy-list" });
  const message = el("div");
  const form = el("form", { class: "stack", id: "policy-form", hidden: !session.isAdmin });
  const inputs = {
    name: el("input", { name: "name", "aria-label": "policy name" }),
    description: el("input", { name: "description", "aria-label": "description" }),
    priority: el("input", { name: "priority", type: "number", value: "100", "aria-label": "priority" }),
    enabled: el("input", { name: "enabled", type: "checkbox", checked: true, "aria-label": "enabled" }),
    events: el("span", { class: "events" }, EVENTS.map((e) => el("label", {}, el("input", { type: "checkbox", value: e, checked: e === "bootstrap" }), " ", e, " "))),
    match: el("textarea", { name: "match", rows: 3, cols: 80, "aria-label": "match" }, '{"product_class": "IGD-SIM"}'),
    tasks: el("textarea", { name: "tasks", rows: 5, cols: 80, "aria-label": "tasks" },
      '[{"name": "setParameterValues", "parameter_values": [["InternetGatewayDevice.DeviceInfo.ProvisioningCode", "POLICY"]]}]'),
  };
  const errorsAt = Object.fromEntries(Object.keys(inputs).map((k) => [k, el("div", { class: "field-error", dataset: { field: k } })]));
  let replacing = null;

  function fill(policy) {
    inputs.name.value = policy.name;
    inputs.description.value = policy.description || "";
    inputs.priority.value = policy.priority;
    inputs.enabled.checked = policy.enabled;
    for (const box of inputs.events.querySelectorAll("input")) box.checked = policy.events.includes(box.value);
    inputs.match.value = JSON.stringify(compact(policy.match));
    inputs.tasks.value = JSON.stringify(policy.tasks.map(specOf), null, 1);
  }

  function body() {
    const parse = (field) => {
      try { return JSON.parse(inputs[field].value || (field === "match" ? "{}" : "[]")); } catch (e) {
        throw new ApiError(0, { detail: `${field} is not valid JSON`, errors: [{ location: `body.${field}`, message: e.message }] });
      }
    };
    return { name: inputs.name.value.trim(), description: inputs.description.value, priority: Number(inputs.priority.value),
             enabled: inputs.enabled.checked, events: [...inputs.events.querySelectorAll("input:checked")].map((b) => b.value),
             match: parse("match"), tasks: parse("tasks") };
  }

  function showErrors(error) {
    for (const box of Object.values(errorsAt)) box.textContent = "";
    message.replaceChildren(problemBox(error));
    for (const e of error.problem?.errors || []) {
      const field = (e.location || "").split(".")[1];
      if (errorsAt[field]) errorsAt[field].textContent += `${e.location}: ${e.message}\n`;
    }
  }

  async function save(event) {
    event.preventDefault();
    message.replaceChildren();
    for (const box of Object.values(errorsAt)) box.textContent = "";
    let wanted;
    try {
      wanted = body();
      if (replacing && replacing.name === wanted.name) {
        // The API has no update: the old policy is deleted, the new one created, the old one restored if refused.
        await api.del(`/policies/${encodeURIComponent(replacing.id)}`);
        try {
          await api.post("/policies", wanted);
        } catch (error) {
          const { id, created_at, created_by, ...old } = replacing;
          old.tasks = old.tasks.map(specOf);
          await api.post("/policies", old).catch(() => {});
          throw error;
        }
      } else {
        await api.post("/policies", wanted);
      }
      replacing = null;
      message.replaceChildren(el("div", { class: "notice" }, `Policy ${wanted.name} saved.`));
      refresh();
    } catch (error) { showErrors(error); }
  }

  async function refresh() {
    try {
      const policies = (await api.get("/policies")).policies;
      clear(list, table(["Name", "Enabled", "Priority", "Events", "Match", "Tasks", "Created", ""], policies.map((p) => el("tr", { dataset: { policy: p.name } },
        el("td", { class: "mono" }, p.name), el("td", {}, p.enabled ? "yes" : "no"), el("td", {}, p.priority), el("td", {}, p.events.join(", ")),
        el("td", { class: "mono" }, JSON.stringify(compact(p.match))), el("td", {}, summaryOf(p)), el("td", {}, `${when(p.created_at)} ${p.created_by || ""}`),
        el("td", {}, session.isAdmin ? [
          el("button", { onclick: () => { replacing = p; fill(p); form.scrollIntoView(); } }, "Edit"),
          el("button", { onclick: async () => { replacing = p; fill({ ...p, enabled: !p.enabled }); form.requestSubmit(); } }, p.enabled ? "Disable" : "Enable"),
          el("button", { class: "danger", onclick: async () => {
            if (!confirm(`Delete policy ${p.name}?`)) return;
            try { await api.del(`/policies/${encodeURIComponent(p.id)}`); refresh(); } catch (error) { message.replaceChildren(problemBox(error)); }
          } }, "Delete")] : null)))), policies.length ? null : el("p", { class: "muted" }, "No policies."));
    } catch (error) { clear(list, problemBox(error)); }
  }

  form.addEventListener("submit", save);
  form.append(el("h2", {}, "Create or edit a policy"),
    ...["name", "description", "priority"].flatMap((k) => [el("label", {}, k), inputs[k], errorsAt[k]]),
    el("label", {}, el("span", {}, "enabled "), inputs.enabled), errorsAt.enabled,
    el("label", {}, "events"), inputs.events, errorsAt.events,
    el("label", {}, "match (JSON: oui, product_class, manufacturer, software_version, tags, query)"), inputs.match, errorsAt.match,
    el("label", {}, "tasks (JSON list, as for a device)"), inputs.tasks, errorsAt.tasks,
    el("div", { class: "toolbar" }, el("button", { type: "submit", class: "primary" }, "Save policy"),
      el("button", { type: "button", onclick: () => { replacing = null; form.reset(); } }, "New")));
  view.append(el("h1", {}, "Policies"), list, message, form);
  await refresh();
}
