// Users (admin only): the operator accounts, create, lock/unlock, enable/disable, reset a password,
// and each user's console sessions (list, revoke one or all). The API refuses anyone else anyway.
import { api } from "./api.js";
import { clear, el, problemBox, table, when } from "./ui.js";

const ROLES = ["read-only", "operator", "admin"];

function stateOf(user) {
  if (user.disabled) return el("span", { class: "status cancelled" }, "disabled");
  if (user.locked) return el("span", { class: "status failed" }, `locked (${user.failures} failures)`);
  return el("span", { class: "status succeeded" }, "active");
}

export async function usersPage(view, session) {
  if (!session.isAdmin) {
    view.append(el("h1", {}, "Users"), el("p", { class: "muted" }, "Shown to unscoped admins only."));
    return;
  }
  const list = el("div", { id: "user-list" });
  const sessionsBox = el("div", { id: "user-sessions" });
  const message = el("div", { id: "user-message" });
  const say = (text) => message.replaceChildren(el("div", { class: "notice" }, text));
  const fail = (error) => message.replaceChildren(problemBox(error));

  async function change(name, body, done) {
    message.replaceChildren();
    try { await api.patch(`/users/${encodeURIComponent(name)}`, body); say(done); await refresh(); } catch (error) { fail(error); }
  }

  async function showSessions(name) {
    try {
      const found = (await api.get("/sessions", { username: name })).sessions;
      const revoke = async (ids) => {
        try {
          for (const id of ids) await api.del(`/sessions/${encodeURIComponent(id)}`);
          say(`Ended ${ids.length} session(s) of ${name}.`);
          await showSessions(name);
        } catch (error) { fail(error); }
      };
      clear(sessionsBox, el("h2", {}, `Console sessions of ${name}`),
        found.length ? el("div", { class: "toolbar" }, el("button", { class: "danger", id: "revoke-all-sessions",
          onclick: () => revoke(found.map((s) => s.id)) }, `End all ${found.length}`)) : null,
        table(["Session", "Via", "Role", "Address", "Opened", "Expires", ""], found.map((s) => el("tr", { dataset: { session: s.id } },
          el("td", { class: "mono" }, s.id), el("td", {}, s.via), el("td", {}, s.role), el("td", { class: "mono" }, s.address || ""),
          el("td", {}, when(s.created_at)), el("td", {}, when(s.expires_at)),
          el("td", {}, el("button", { class: "danger", onclick: () => revoke([s.id]) }, "End"))))),
        found.length ? null : el("p", { class: "muted" }, "No open session."));
    } catch (error) { clear(sessionsBox, problemBox(error)); }
  }

  async function refresh() {
    try {
      const users = (await api.get("/users")).users;
      clear(list, table(["User", "Role", "Scope", "State", "2nd factor", "Last sign-in", "Password changed", "Created by", ""],
        users.map((u) => el("tr", { dataset: { user: u.username } },
          el("td", { class: "mono" }, u.username), el("td", {}, u.role), el("td", { class: "mono" }, u.scope || "everything"),
          el("td", {}, stateOf(u)), el("td", {}, u.totp ? "TOTP" : "none"), el("td", {}, u.last_sign_in_at ? when(u.last_sign_in_at) : "never"),
          el("td", {}, when(u.password_changed_at)), el("td", {}, u.created_by || ""),
          el("td", {},
            u.locked ? el("button", { onclick: () => change(u.username, { locked: false }, `Unlocked ${u.username}.`) }, "Unlock")
              : el("button", { onclick: () => change(u.username, { locked: true }, `Locked ${u.username}.`) }, "Lock"),
            " ",
            u.disabled ? el("button", { onclick: () => change(u.username, { disabled: false }, `Enabled ${u.username}.`) }, "Enable")
              : el("button", { class: "danger", onclick: () => {
                if (confirm(`Disable ${u.username}? Its sessions end and its keys stop.`)) change(u.username, { disabled: true }, `Disabled ${u.username}.`);
              } }, "Disable"),
            " ",
            el("button", { onclick: () => { resetName.value = u.username; resetPassword.focus(); } }, "Reset password"),
            " ",
            el("button", { onclick: () => showSessions(u.username) }, "Sessions"))))),
        users.length ? null : el("p", { class: "muted" }, "No accounts yet."));
    } catch (error) { clear(list, problemBox(error)); }
  }

  const name = el("input", { id: "user-name", placeholder: "username", "aria-label": "username", autocomplete: "off" });
  const password = el("input", { id: "user-password", type: "password", placeholder: "password (12+ characters)",
                                 "aria-label": "password", autocomplete: "new-password" });
  const role = el("select", { id: "user-role", "aria-label": "role" }, ROLES.map((r) => el("option", { value: r }, r)));
  const scope = el("input", { id: "user-scope", placeholder: 'scope, e.g. {"tags": "partner-a"} (empty: everything)',
                              "aria-label": "scope", size: 40 });
  const resetName = el("input", { id: "reset-name", placeholder: "username", "aria-label": "user to reset", autocomplete: "off" });
  const resetPassword = el("input", { id: "reset-password", type: "password", placeholder: "new password",
                                      "aria-label": "new password", autocomplete: "new-password" });
  view.append(el("h1", {}, "Users"),
    el("form", { class: "toolbar", id: "user-form", onsubmit: async (e) => {
      e.preventDefault();
      message.replaceChildren();
      let parsed;
      try { parsed = scope.value.trim() ? JSON.parse(scope.value) : undefined; } catch { fail(new Error("the scope is not JSON")); return; }
      try {
        const created = await api.post("/users", { username: name.value.trim(), password: password.value, role: role.value,
                                                   ...(parsed ? { scope: parsed } : {}) });
        say(`User ${created.username} (${created.role}) created.`);
        name.value = ""; password.value = ""; scope.value = "";
        await refresh();
      } catch (error) { fail(error); }
    } }, name, password, role, scope, el("button", { type: "submit", class: "primary" }, "Create user")),
    el("form", { class: "toolbar", id: "reset-form", onsubmit: async (e) => {
      e.preventDefault();
      message.replaceChildren();
      try {
        await api.post(`/users/${encodeURIComponent(resetName.value.trim())}/password`, { new_password: resetPassword.value });
        say(`Password of ${resetName.value.trim()} set; its other sessions ended.`);
        resetPassword.value = "";
        await refresh();
      } catch (error) { fail(error); }
    } }, el("span", { class: "muted" }, "Reset a password:"), resetName, resetPassword, el("button", { type: "submit" }, "Set password")),
    message, list, sessionsBox);
  await refresh();
}
