// Devices: search (the inventory query language, with a shorthand), sort, cursor paging, chosen
// columns, multi-select to tag or to start a job.
import { api } from "./api.js";
import { ago, clear, el, problemBox, table, when } from "./ui.js";
import { HELP, toQuery } from "./querytext.js";
import { taskChooser } from "./jobform.js";

const ALL_COLUMNS = {
  serial_number: "Serial", oui: "OUI", product_class: "Product class", manufacturer: "Manufacturer",
  software_version: "Software", last_inform: "Last inform", tags: "Tags", remote_address: "Address",
  first_seen: "First seen", silent_since: "Silent since",
};
const DEFAULT_COLUMNS = ["serial_number", "oui", "product_class", "software_version", "last_inform", "tags"];
const SORTABLE = new Set(["serial_number", "software_version", "last_inform", "first_seen"]);
const PAGE = 50;

function savedColumns() {
  try { return JSON.parse(localStorage.getItem("acs.columns")) || DEFAULT_COLUMNS; } catch { return DEFAULT_COLUMNS; }
}

export async function devicesPage(view, session) {
  const state = { text: sessionStorage.getItem("acs.search") || "", sort: "", cursors: [null], page: 0,
                  columns: savedColumns(), selected: new Set(), total: null };
  const search = el("input", { class: "grow", id: "device-search", type: "search", value: state.text,
    placeholder: "serial, field:value, Parameter.Name:value, or a JSON query", "aria-label": "search devices" });
  const helpBox = el("div", { class: "help", hidden: true },
    el("div", {}, "Search shorthand (conditions separated by spaces must all hold):"),
    table(["you type", "finds"], HELP.map(([q, what]) => el("tr", {}, el("td", {}, el("code", {}, q)), el("td", {}, what)))),
    el("div", { class: "muted" }, "Unindexed parameters scan the fleet: combine them with an indexed field (serial, OUI, product class, software, tags, last inform)."));
  const results = el("div", { id: "device-results" });
  const columnsBox = el("div", { class: "columns", hidden: true });
  const actions = el("div", { class: "toolbar", id: "selection-actions" });
  const message = el("div");

  function renderColumns() {
    columnsBox.replaceChildren(el("span", { class: "muted" }, "Columns: "),
      ...Object.entries(ALL_COLUMNS).map(([key, label]) => el("label", {},
        el("input", { type: "checkbox", checked: state.columns.includes(key), onchange: (e) => {
          state.columns = e.target.checked ? [...state.columns, key] : state.columns.filter((c) => c !== key);
          localStorage.setItem("acs.columns", JSON.stringify(state.columns));
          load();
        } }), " ", label)),
      ...state.columns.filter((c) => !(c in ALL_COLUMNS)).map((c) => el("label", {}, el("input", { type: "checkbox", checked: true,
        onchange: () => { state.columns = state.columns.filter((x) => x !== c); localStorage.setItem("acs.columns", JSON.stringify(state.columns)); load(); } }), " ", c)),
      el("input", { placeholder: "add a parameter column", "aria-label": "parameter column", onkeydown: (e) => {
        if (e.key === "Enter" && e.target.value.trim()) {
          state.columns = [...state.columns, e.target.value.trim()];
          localStorage.setItem("acs.columns", JSON.stringify(state.columns));
          renderColumns();
          load();
        }
      } }));
  }

  function cell(device, column) {
    if (column === "serial_number") {
      return el("td", { class: "mono" }, el("a", { href: "#/devices/" + encodeURIComponent(device.id) }, device.serial_number || device.id));
    }
    if (column === "last_inform") {
      return el("td", { title: when(device.last_inform) }, ago(device.last_inform), device.silent_since ? el("span", { class: "status silent" }, " silent") : "");
    }
    if (column === "tags") return el("td", {}, (device.tags || []).join(", "));
    if (column in ALL_COLUMNS) {
      const value = device[column];
      return el("td", { class: "mono" }, column.endsWith("_seen") || column === "silent_since" ? when(value) : value ?? "");
    }
    const parameter = (device.parameters || {})[column];
    return el("td", { class: "mono" }, parameter ? String(parameter.value ?? "") : "");
  }

  async function load() {
    message.replaceChildren();
    const q = toQuery(state.text);
    const fields = ["id", ...state.columns.filter((c) => c !== "id"), "silent_since"].join(",");
    const started = performance.now();
    let page;
    // The count is a request of its own, beside the page: the page shows as soon as it is read.
    const counting = state.page === 0 && state.total === null ? api.get("/devices/count", { q }).catch(() => null) : null;
    try {
      page = await api.get("/devices", { q, fields, sort: state.sort, limit: PAGE, cursor: state.cursors[state.page] });
    } catch (error) {
      clear(results, problemBox(error));
      return;
    }
    state.cursors[state.page + 1] = page.next_cursor;
    const headers = [el("th", {}, el("input", { type: "checkbox", "aria-label": "select all", onchange: (e) => {
      for (const d of page.devices) e.target.checked ? state.selected.add(d.id) : state.selected.delete(d.id);
      load();
    } }))];
    for (const column of state.columns) {
      const label = ALL_COLUMNS[column] || column;
      if (SORTABLE.has(column)) {
        const mark = state.sort === column ? " ▲" : state.sort === "-" + column ? " ▼" : "";
        headers.push(el("th", { class: "sortable", onclick: () => {
          state.sort = state.sort === column ? "-" + column : column;
          state.cursors = [null]; state.page = 0;
          load();
        } }, label + mark));
      } else headers.push(el("th", {}, label));
    }
    const rows = page.devices.map((device) => el("tr", { dataset: { id: device.id } },
      el("td", {}, el("input", { type: "checkbox", "aria-label": "select " + device.id, checked: state.selected.has(device.id),
        onchange: (e) => { e.target.checked ? state.selected.add(device.id) : state.selected.delete(device.id); renderActions(); } })),
      state.columns.map((c) => cell(device, c))));
    const first = state.page * PAGE + (page.devices.length ? 1 : 0);
    clear(results,
      table(headers, rows, { id: "device-table" }),
      el("div", { class: "pager" },
        el("button", { disabled: state.page === 0, onclick: () => { state.page -= 1; load(); } }, "‹ Previous"),
        el("span", { id: "page-range" }, `${first}–${state.page * PAGE + page.devices.length}`),
        el("span", { id: "match-count" }, state.total !== null ? ` of ${state.total}` : ""),
        el("button", { id: "next-page", disabled: !page.next_cursor, onclick: () => { state.page += 1; load(); } }, "Next ›"),
        el("span", { class: "muted" }, `${Math.round(performance.now() - started)} ms`)));
    renderActions();
    if (counting) {
      const counted = await counting;
      if (counted) {
        state.total = counted.count;
        const node = results.querySelector("#match-count");
        if (node) node.textContent = ` of ${counted.count}`;
      }
    }
  }

  // Made once, so that a tag or a task typed in survives the selection changing.
  const tagInput = el("input", { placeholder: "tag", "aria-label": "tag", size: 12 });
  const chooser = taskChooser();
  const selectedText = el("span", { class: "muted" });
  const tagButton = el("button", { onclick: async () => {
    const n = state.selected.size;
    const tag = tagInput.value.trim();
    try {
      for (const id of state.selected) await api.post(`/devices/${encodeURIComponent(id)}/tags/${encodeURIComponent(tag)}`);
      await load();
      message.replaceChildren(el("div", { class: "notice" }, `Tagged ${n} device(s) ${tag}.`));
    } catch (error) { message.replaceChildren(problemBox(error)); }
  } }, "Add tag");
  const jobButton = el("button", { id: "start-job", onclick: async () => {
    message.replaceChildren();
    const n = state.selected.size;
    const query = n ? { id: { $in: [...state.selected] } } : (toQuery(state.text) || "{}");
    try {
      const job = await api.post("/jobs", { query, task: chooser.taskSpec(), connection_request: true });
      sessionStorage.setItem("acs.job", job.id);
      location.hash = "#/jobs";
    } catch (error) { message.replaceChildren(problemBox(error)); }
  } });
  if (session.canWrite) actions.append(selectedText, tagInput, tagButton, el("span", { class: "muted" }, " | job:"), chooser, jobButton);

  function renderActions() {
    const n = state.selected.size;
    selectedText.textContent = n ? `${n} selected:` : "Select devices, or use the whole search:";
    tagButton.disabled = !n;
    jobButton.textContent = n ? `Start job on ${n} selected` : "Start job on every match";
  }

  view.append(
    el("h1", {}, "Devices"),
    el("form", { class: "toolbar", onsubmit: (e) => {
      e.preventDefault();
      state.text = search.value;
      sessionStorage.setItem("acs.search", state.text);
      state.cursors = [null]; state.page = 0; state.total = null; state.selected.clear();
      load();
    } }, search, el("button", { type: "submit", class: "primary" }, "Search"),
      el("button", { type: "button", onclick: () => { helpBox.hidden = !helpBox.hidden; } }, "Help"),
      el("button", { type: "button", onclick: () => { columnsBox.hidden = !columnsBox.hidden; } }, "Columns")),
    helpBox, columnsBox, actions, message, results);
  renderColumns();
  await load();
}
