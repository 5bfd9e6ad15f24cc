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
import { adminPage } from "./admin.js";

const session = { principal: "", role: "", canWrite: false, isAdmin: false };

const ROUTES = [
  [/^#\/overview$/, overviewPage],
  [/^#\/devices$/, devicesPage],
  [/^#\/devices\/(.+)$/, devicePage],
  [/^#\/tasks$/, tasksPage],
  [/^#\/jobs$/, jobsPage],
  [/^#\/files$/, filesPage],
  [/^#\/policies$/, policiesPage],
  [/^#\/admin$/, adminPage],
];

function showSignIn(message) {
  setSession("");
  Object.assign(session, { principal: "", role: "", canWrite: false, isAdmin: false });
  stopTimers();
  document.getElementById("bar").hidden = true;
  clear(document.getElementById("view"));
  document.getElementById("signin").hidden = false;
  document.getElementById("signin-error").textContent = message || "";
  document.getElementById("api-key").focus();
}

function signedIn(data) {
  setSession(data.csrf_token, () => showSignIn("Your session ended; sign in again."));
  Object.assign(session, { principal: data.principal, role: data.role, canWrite: data.role !== "read-only",
                           isAdmin: data.role === "admin" });
  document.body.dataset.role = data.role;
  document.getElementById("signin").hidden = true;
  document.getElementById("bar").hidden = false;
  document.getElementById("who").textContent = `${data.principal} (${data.role})`;
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
    const input = document.getElementById("api-key");
    try {
      const data = await request("POST", "/console/api/session", { body: { api_key: input.value.trim() } });
      input.value = "";
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
