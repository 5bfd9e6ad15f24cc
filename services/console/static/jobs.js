// Jobs: the same task over an inventory query, with progress per status; start and cancel.
import { api } from "./api.js";
import { clear, el, every, percentDone, problemBox, progressBar, statusBadge, table, when } from "./ui.js";
import { taskChooser } from "./jobform.js";
import { toQuery } from "./querytext.js";

export async function jobsPage(view, session) {
  const list = el("div", { id: "job-list" });
  const message = el("div");
  let highlight = sessionStorage.getItem("acs.job");
  async function refresh() {
    try {
      const jobs = (await api.get("/jobs", { limit: 50 })).jobs;
      clear(list, table(["Created", "Query", "Task", "Status", "Devices", "Progress", "Counts", ""], jobs.map((job) => {
        const done = percentDone(job.counts);
        return el("tr", { dataset: { job: job.id, status: job.status }, class: job.id === highlight ? "highlight" : "" },
          el("td", { title: job.id }, when(job.created_at)),
          el("td", { class: "mono" }, typeof job.query === "string" ? job.query : JSON.stringify(job.query)),
          el("td", {}, job.task.name),
          el("td", {}, statusBadge(job.status), job.reason ? el("div", { class: "muted" }, job.reason) : null),
          el("td", {}, job.device_count),
          el("td", {}, progressBar(job.counts), el("span", { class: "job-percent" }, `${done} %`)),
          el("td", { class: "mono" }, Object.entries(job.counts).filter(([, n]) => n).map(([s, n]) => `${s} ${n}`).join(", ")),
          el("td", {}, el("a", { href: "#/tasks", onclick: () => sessionStorage.setItem("acs.taskjob", job.id) }, "tasks"),
            session.canWrite && ["resolving", "running"].includes(job.status) ? el("button", { class: "danger", onclick: async () => {
              try { await api.post(`/jobs/${job.id}/cancel`); refresh(); } catch (error) { message.replaceChildren(problemBox(error)); }
            } }, "Cancel") : null));
      })), jobs.length ? null : el("p", { class: "muted" }, "No jobs yet."));
    } catch (error) { clear(list, problemBox(error)); }
  }
  view.append(el("h1", {}, "Jobs"));
  if (session.canWrite) {
    const query = el("input", { class: "grow", placeholder: "devices: search shorthand or JSON query (as on Devices)", "aria-label": "job query" });
    const chooser = taskChooser();
    view.append(el("form", { class: "toolbar", id: "job-form", onsubmit: async (e) => {
      e.preventDefault();
      message.replaceChildren();
      try {
        const job = await api.post("/jobs", { query: toQuery(query.value) || "{}", task: chooser.taskSpec(), connection_request: true });
        sessionStorage.setItem("acs.job", job.id);
        highlight = job.id;
        message.replaceChildren(el("div", { class: "notice" }, `Job ${job.id} started.`));
        refresh();
      } catch (error) { message.replaceChildren(problemBox(error)); }
    } }, query, chooser, el("button", { type: "submit", class: "primary" }, "Start job")));
  }
  view.append(message, list);
  every(2000, refresh);
  await refresh();
}
