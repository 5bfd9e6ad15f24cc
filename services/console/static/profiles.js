// Profiles: list with compliance, create/edit (JSON of the desired state), enable/disable, preview,
// versions with rollback; the API's errors per field.
import { ApiError, api } from "./api.js";
import { clear, el, problemBox, table, when } from "./ui.js";

const COMPLIANCE = ["compliant", "pending", "drifted", "failing"];
const EXAMPLE = {
  selector: { product_class: "IGD-SIM" },
  parameters: [{ name: "ManagementServer.PeriodicInformInterval", value: 7200 }],
  attributes: [], actions: [], firmware: null,
};
// The fields the JSON editor holds; the others have their own inputs.
const STATE_FIELDS = ["selector", "parameters", "attributes", "actions", "firmware"];

const profilePath = (id, rest = "") => `/profiles/${encodeURIComponent(id)}${rest}`;

function counts(compliance) {
  return COMPLIANCE.map((k) => `${k} ${(compliance || {})[k] || 0}`).join(", ");
}

export async function profilesPage(view, session) {
  const list = el("div", { id: "profile-list" });
  const message = el("div");
  const details = el("div", { id: "profile-details" });
  const form = el("form", { class: "stack", id: "profile-form", hidden: !session.isAdmin });
  const inputs = {
    name: el("input", { name: "name", "aria-label": "profile name" }),
    description: el("input", { name: "description", "aria-label": "description" }),
    priority: el("input", { name: "priority", type: "number", value: "100", "aria-label": "priority" }),
    enabled: el("input", { name: "enabled", type: "checkbox", checked: true, "aria-label": "enabled" }),
    mode: el("select", { name: "mode", "aria-label": "mode" }, ["enforce", "report"].map((m) => el("option", { value: m }, m))),
    state: el("textarea", { name: "state", rows: 10, cols: 80, "aria-label": "desired state" }, JSON.stringify(EXAMPLE, null, 1)),
  };
  // A field error of body.selector, body.parameters... goes beside the JSON editor.
  const errorsAt = Object.fromEntries(Object.keys(inputs).map((k) => [k, el("div", { class: "field-error", dataset: { field: k } })]));
  let editing = null;

  function fill(profile) {
    inputs.name.value = profile.name;
    inputs.description.value = profile.description || "";
    inputs.priority.value = profile.priority;
    inputs.enabled.checked = profile.enabled;
    inputs.mode.value = profile.mode;
    inputs.state.value = JSON.stringify(Object.fromEntries(STATE_FIELDS.map((k) => [k, profile[k] ?? null])), null, 1);
  }

  function body() {
    let state;
    try { state = JSON.parse(inputs.state.value || "{}"); } catch (e) {
      throw new ApiError(0, { detail: "the desired state is not valid JSON", errors: [{ location: "body.state", message: e.message }] });
    }
    if (!state || typeof state !== "object" || Array.isArray(state)) {
      throw new ApiError(0, { detail: "the desired state must be a JSON object", errors: [{ location: "body.state", message: "not an object" }] });
    }
    return { ...state, name: inputs.name.value.trim(), description: inputs.description.value,
             priority: Number(inputs.priority.value), enabled: inputs.enabled.checked, mode: inputs.mode.value };
  }

  function showErrors(error) {
    for (const box of Object.values(errorsAt)) box.textContent = "";
    message.replaceChildren(problemBox(error));
    for (const e of error.problem?.errors || []) {
      const field = (e.location || "").split(".")[1];
      const at = errorsAt[field] || (STATE_FIELDS.includes(field) ? errorsAt.state : null);
      if (at) at.textContent += `${e.location}: ${e.message}\n`;
    }
  }

  async function act(fn) {
    try { await fn(); } catch (error) { message.replaceChildren(problemBox(error)); }
  }

  async function save(event) {
    event.preventDefault();
    message.replaceChildren();
    for (const box of Object.values(errorsAt)) box.textContent = "";
    try {
      const wanted = body();
      const saved = editing ? await api.put(profilePath(editing.id), wanted) : await api.post("/profiles", wanted);
      editing = null;
      message.replaceChildren(el("div", { class: "notice" }, `Profile ${saved.name} saved (version ${saved.version}).`));
      refresh();
    } catch (error) { showErrors(error); }
  }

  async function preview(p) {
    const result = await api.post(profilePath(p.id, "/preview"), {}, { sample: 5 });
    clear(details, el("div", { id: "profile-preview", dataset: { profile: p.name } },
      el("h2", {}, `Preview of ${p.name} (version ${result.version}, ${result.mode})`),
      el("div", { class: "cards" }, ["matched", "would_change", "unchanged", "unresolved"].map((k) =>
        el("div", { class: "card", dataset: { count: k } }, el("div", { class: "n" }, result[k]), el("div", { class: "l" }, k.replace("_", " "))))),
      result.truncated ? el("p", { class: "muted" }, "Only the first devices of the selection were looked at.") : null,
      Object.keys(result.changes).length ? table(["Parameter", "Devices it would change"], Object.entries(result.changes).map(([name, n]) =>
        el("tr", {}, el("td", { class: "mono" }, name), el("td", {}, n)))) : el("p", { class: "muted" }, "No parameter would change."),
      el("h2", {}, "Sample RPCs"),
      result.sample.length ? table(["Device", "RPCs"], result.sample.map((s) => el("tr", {},
        el("td", { class: "mono" }, el("a", { href: "#/devices/" + encodeURIComponent(s.device_id) }, s.device_id)),
        el("td", { class: "mono sample-rpcs" }, s.rpcs.map((rpc) => el("div", {}, el("strong", {}, rpc.method), " ",
          JSON.stringify(Object.fromEntries(Object.entries(rpc).filter(([k]) => k !== "method"))))))))) : el("p", { class: "muted" }, "No sample.")));
  }

  async function versions(p) {
    const found = (await api.get(profilePath(p.id, "/versions"))).versions;
    clear(details, el("div", { id: "profile-versions", dataset: { profile: p.name } },
      el("h2", {}, `Versions of ${p.name}`),
      table(["Version", "Change", "By", "At", ""], found.map((v) => el("tr", { dataset: { version: v.version } },
        el("td", {}, v.version), el("td", {}, v.change || ""), el("td", {}, v.changed_by || ""), el("td", {}, when(v.changed_at)),
        el("td", {}, session.isAdmin && v.version !== p.version ? el("button", { onclick: () => act(async () => {
          if (!confirm(`Roll ${p.name} back to version ${v.version}?`)) return;
          const saved = await api.post(profilePath(p.id, "/rollback"), { version: v.version });
          message.replaceChildren(el("div", { class: "notice" }, `Profile ${saved.name} rolled back to version ${v.version} (now version ${saved.version}).`));
          await refresh();
          await versions(saved);
        }) }, "Roll back") : null))))));
  }

  async function refresh() {
    try {
      const profiles = (await api.get("/profiles")).profiles;
      // The list has no compliance counts: each profile's own answer has them.
      const compliance = await Promise.all(profiles.map((p) => api.get(profilePath(p.id, "/compliance")).then((c) => c.counts, () => null)));
      clear(list, table(["Name", "Priority", "Enabled", "Mode", "Version", "Compliance", "Updated", ""], profiles.map((p, i) => el("tr", { dataset: { profile: p.name } },
        el("td", { class: "mono", title: p.description || "" }, p.name), el("td", {}, p.priority), el("td", {}, p.enabled ? "yes" : "no"),
        el("td", {}, p.mode), el("td", {}, p.version), el("td", { class: "mono compliance" }, compliance[i] ? counts(compliance[i]) : "?"),
        el("td", {}, `${when(p.updated_at)} ${p.updated_by || ""}`),
        el("td", {},
          el("button", { onclick: () => act(() => preview(p)) }, "Preview"),
          el("button", { onclick: () => act(() => versions(p)) }, "Versions"),
          session.isAdmin ? [
            el("button", { onclick: () => { editing = p; fill(p); form.scrollIntoView(); } }, "Edit"),
            el("button", { onclick: () => act(async () => { await api.post(profilePath(p.id, p.enabled ? "/disable" : "/enable")); await refresh(); }) },
              p.enabled ? "Disable" : "Enable"),
            el("button", { class: "danger", onclick: () => act(async () => {
              if (!confirm(`Delete profile ${p.name}?`)) return;
              await api.del(profilePath(p.id));
              clear(details);
              await refresh();
            }) }, "Delete")] : null)))), profiles.length ? null : el("p", { class: "muted" }, "No profiles."));
    } catch (error) { clear(list, problemBox(error)); }
  }

  form.addEventListener("submit", save);
  form.append(el("h2", {}, "Create or edit a profile"),
    ...["name", "description", "priority"].flatMap((k) => [el("label", {}, k), inputs[k], errorsAt[k]]),
    el("label", {}, el("span", {}, "enabled "), inputs.enabled), errorsAt.enabled,
    el("label", {}, "mode (enforce: converge and correct drift; report: only report)"), inputs.mode, errorsAt.mode,
    el("label", {}, "desired state (JSON: selector, parameters, attributes, actions, firmware; docs/provisioning.md)"), inputs.state, errorsAt.state,
    el("div", { class: "toolbar" }, el("button", { type: "submit", class: "primary" }, "Save profile"),
      el("button", { type: "button", onclick: () => { editing = null; form.reset(); inputs.state.value = JSON.stringify(EXAMPLE, null, 1); } }, "New")));
  view.append(el("h1", {}, "Profiles"), list, message, details, form);
  await refresh();
}
