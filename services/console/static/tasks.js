// Tasks: filters by status, name, origin, job and device; retry, cancel; live.
import { api } from "./api.js";
import { el, stopTimers } from "./ui.js";
import { liveTasks } from "./tasklist.js";

const STATUSES = ["", "pending", "in_progress", "pending_completion", "succeeded", "failed", "cancelled", "expired"];
const NAMES = ["", "getParameterValues", "setParameterValues", "getParameterNames", "addObject", "deleteObject", "reboot",
  "factoryReset", "download", "upload", "scheduleInform", "getRPCMethods", "getParameterAttributes", "setParameterAttributes"];

export async function tasksPage(view, session) {
  const filters = { status: el("select", { "aria-label": "status" }, STATUSES.map((s) => el("option", { value: s }, s || "any status"))),
                    name: el("select", { "aria-label": "name" }, NAMES.map((s) => el("option", { value: s }, s || "any task"))),
                    origin: el("input", { placeholder: "origin (api, job:…, policy:…)", "aria-label": "origin" }),
                    job_id: el("input", { placeholder: "job id", "aria-label": "job id" }),
                    device_id: el("input", { placeholder: "device id", "aria-label": "device id", size: 30 }) };
  const box = el("div", { id: "task-list" });
  // From a job's "tasks" link.
  filters.job_id.value = sessionStorage.getItem("acs.taskjob") || "";
  sessionStorage.removeItem("acs.taskjob");
  const values = () => Object.fromEntries(Object.entries(filters).map(([k, i]) => [k, i.value.trim()]));
  let origin = "";
  let limit = 100;
  const more = el("button", { id: "more-tasks", hidden: true, onclick: () => { limit = Math.min(500, limit + 100); more.hidden = true; } },
    "Show 100 more");
  const fetchPage = async () => {
    const { origin: wanted, ...params } = values();
    origin = wanted;
    const page = await api.get("/tasks", { ...params, limit });
    more.hidden = !page.next_cursor || limit >= 500;
    // The API filters by origin through the job id; other origins are filtered here, on the page shown.
    if (origin) page.tasks = page.tasks.filter((t) => t.origin === origin || t.origin.startsWith(origin));
    return page;
  };
  view.append(el("h1", {}, "Tasks"),
    el("div", { class: "toolbar" }, Object.values(filters), el("span", { class: "muted" }, "newest first, updated every 2 s")), box, more);
  for (const input of Object.values(filters)) {
    input.addEventListener("change", () => {
      stopTimers();
      box.replaceChildren();
      limit = 100;
      liveTasks(box, session, fetchPage);
    });
  }
  await liveTasks(box, session, fetchPage);
}
