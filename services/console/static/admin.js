// Admin: API keys. Creating one shows its secret once; revoke.
import { api } from "./api.js";
import { clear, el, problemBox, table, when } from "./ui.js";

export async function adminPage(view, session) {
  const list = el("div", { id: "key-list" });
  const message = el("div");
  async function refresh() {
    try {
      const keys = (await api.get("/apikeys")).apikeys;
      clear(list, table(["Name", "Role", "Created", "Last used", ""], keys.map((k) => el("tr", { dataset: { key: k.name } },
        el("td", { class: "mono" }, k.name), el("td", {}, k.role), el("td", {}, when(k.created_at)), el("td", {}, k.last_used_at ? when(k.last_used_at) : "never"),
        el("td", {}, el("button", { class: "danger", onclick: async () => {
          if (!confirm(`Revoke ${k.name}? Its sessions end too.`)) return;
          try { await api.del(`/apikeys/${encodeURIComponent(k.name)}`); refresh(); } catch (error) { message.replaceChildren(problemBox(error)); }
        } }, "Revoke"))))), keys.length ? null : el("p", { class: "muted" }, "No stored keys (the bootstrap key is not listed)."));
    } catch (error) { clear(list, problemBox(error)); }
  }
  const name = el("input", { placeholder: "name", "aria-label": "key name", id: "key-name" });
  const role = el("select", { "aria-label": "role", id: "key-role" }, ["read-only", "operator", "admin"].map((r) => el("option", { value: r }, r)));
  view.append(el("h1", {}, "API keys"),
    el("form", { class: "toolbar", id: "key-form", onsubmit: async (e) => {
      e.preventDefault();
      message.replaceChildren();
      try {
        const created = await api.post("/apikeys", { name: name.value.trim(), role: role.value });
        message.replaceChildren(el("div", { class: "notice" }, `Key ${created.name} (${created.role}) created. Copy it now, it is not shown again: `,
          el("span", { class: "secret", id: "new-key" }, created.key)));
        name.value = "";
        refresh();
      } catch (error) { message.replaceChildren(problemBox(error)); }
    } }, name, role, el("button", { type: "submit", class: "primary" }, "Create key")),
    message, list);
  await refresh();
}
