// The console's shell: sign-in, sign-out, the hash router and the navigation bar.
import { request, setSession } from "./api.js";
import { clear, el, problemBox, stopTimers } from "./ui.js";
import { overviewPage } from "./overview.js";
import { devicesPage } from "./devices.js";
import { devicePage } from "./device.js";
import { tasksPage } from "./tasks.js";
import { jobsPage } from "./jobs.js";
import { filesPage } from "./files.js";
import { policiesPage } from "./policies.js";
import { profilesPage } from "./profiles.js";
import { campaignsPage, campaignPage } from "./campaigns.js";
import { adminPage } from "./admin.js";
import { usersPage } from "./users.js";
import { auditPage } from "./audit.js";

const session = { principal: "", role: "", canWrite: false, isAdmin: false, scoped: false };

const ROUTES = [
  [/^#\/overview$/, overviewPage],
  [/^#\/devices$/, devicesPage],
  [/^#\/devices\/(.+)$/, devicePage],
  [/^#\/tasks$/, tasksPage],
  [/^#\/jobs$/, jobsPage],
  [/^#\/files$/, filesPage],
  [/^#\/policies$/, policiesPage],
  [/^#\/profiles$/, profilesPage],
  [/^#\/campaigns$/, campaignsPage],
  [/^#\/campaigns\/(.+)$/, campaignPage],
  [/^#\/admin$/, adminPage],
  [/^#\/users$/, usersPage],
  [/^#\/audit$/, auditPage],
];

function showSignIn(message) {
  setSession("");
  Object.assign(session, { principal: "", role: "", canWrite: false, isAdmin: false, scoped: false });
  stopTimers();
  document.getElementById("bar").hidden = true;
  clear(document.getElementById("view"));
  document.getElementById("signin").hidden = false;
  document.getElementById("signin-error").textContent = message || "";
  document.getElementById("username").focus();
}

function signedIn(data) {
  setSession(data.csrf_token, () => showSignIn("Your session ended; sign in again."));
  Object.assign(session, { principal: data.principal, role: data.role, canWrite: data.role !== "read-only",
                           isAdmin: data.role === "admin" && !data.scope, scoped: Boolean(data.scope) });
  document.body.dataset.role = data.role;
  document.getElementById("signin").hidden = true;
  document.getElementById("bar").hidden = false;
  document.getElementById("who").textContent = `${data.principal} (${data.role}${data.scope ? ", scope " + data.scope : ""})`;
  for (const link of document.querySelectorAll("#nav a[data-role=admin]")) link.hidden = !session.isAdmin;
  if (!location.hash || location.hash === "#" || location.hash === "#/") location.hash = "#/overview";
  else route();
}

async function route() {
  if (!session.role) return;
  stopTimers();
  const hash = location.hash || "#/overview";
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", hash.startsWith(link.getAttribute("href")));
  }
  const view = document.getElementById("view");
  for (const [pattern, page] of ROUTES) {
    const match = hash.match(pattern);
    if (match) {
      clear(view);
      try {
        await page(view, session, ...match.slice(1).map(decodeURIComponent));
      } catch (error) {
        view.append(problemBox(error));
      }
      return;
    }
  }
  clear(view, el("p", {}, "No such page. ", el("a", { href: "#/overview" }, "Overview")));
}

async function start() {
  document.getElementById("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const fields = ["username", "password", "totp-code", "api-key"].map((id) => document.getElementById(id));
    const [username, password, code, key] = fields.map((input) => input.value.trim());
    // An API key when one is given; else the account's name, password and (if any) one-time code.
    const body = key ? { api_key: key } : { username, password: fields[1].value, ...(code ? { totp_code: code } : {}) };
    try {
      const data = await request("POST", "/console/api/session", { body });
      for (const input of fields) input.value = "";
      signedIn(data);
    } catch (error) {
      document.getElementById("signin-error").textContent = error.problem?.detail || error.message;
    }
  });
  document.getElementById("signout").addEventListener("click", async () => {
    try {
      await request("DELETE", "/console/api/session");
    } finally {
      document.body.dataset.role = "";
      history.replaceState(null, "", "/");
      showSignIn("Signed out.");
    }
  });
  window.addEventListener("hashchange", route);
  try {
    signedIn(await request("GET", "/console/api/session"));
  } catch {
    showSignIn("");
  }
}

start();
