// Files: upload with a progress bar, metadata, delete, download records.
import { api, upload } from "./api.js";
import { clear, el, problemBox, table, when } from "./ui.js";

const TYPES = ["1 Firmware Upgrade Image", "2 Web Content", "3 Vendor Configuration File", "4 Tone File", "5 Ringer File"];

export async function filesPage(view, session) {
  // The catalogue is shared by every scope: only an unscoped operator uploads and deletes.
  const canWrite = session.canWrite && !session.scoped;
  const list = el("div", { id: "file-list" });
  const message = el("div");
  const records = el("div");
  async function refresh() {
    try {
      const files = (await api.get("/files", { limit: 200 })).files;
      clear(list, table(["Name", "Type", "Version", "OUI", "Product class", "Size", "SHA-256", "Uploaded", ""], files.map((f) => el("tr", { dataset: { file: f.name } },
        el("td", { class: "mono" }, f.name), el("td", {}, f.file_type), el("td", {}, f.version || ""), el("td", {}, f.oui || ""),
        el("td", {}, f.product_class || ""), el("td", {}, f.size.toLocaleString("en")), el("td", { class: "mono", title: f.sha256 }, (f.sha256 || "").slice(0, 12)),
        el("td", {}, `${when(f.uploaded_at)} by ${f.uploaded_by || "?"}`),
        el("td", {}, el("button", { onclick: () => showDownloads(f.name) }, "Downloads"),
          canWrite ? el("button", { class: "danger", onclick: async () => {
            if (!confirm(`Delete ${f.name}?`)) return;
            try { await api.del(`/files/${encodeURIComponent(f.name)}`); refresh(); } catch (error) { message.replaceChildren(problemBox(error)); }
          } }, "Delete") : null)))), files.length ? null : el("p", { class: "muted" }, "No files."));
    } catch (error) { clear(list, problemBox(error)); }
  }
  async function showDownloads(name) {
    try {
      const page = await api.get(`/files/${encodeURIComponent(name)}/downloads`);
      const rows = (page.downloads || []).map((d) => el("tr", {}, el("td", {}, when(d.time)), el("td", { class: "mono" }, d.device_id || ""),
        el("td", {}, d.outcome || ""), el("td", {}, String(d.bytes_sent ?? ""))));
      clear(records, el("h2", {}, `Downloads of ${name}`), rows.length ? table(["When", "Device", "Outcome", "Bytes"], rows) : el("p", { class: "muted" }, "None yet."));
    } catch (error) { clear(records, problemBox(error)); }
  }
  view.append(el("h1", {}, "Files"));
  if (canWrite) {
    const file = el("input", { type: "file", id: "file-input", "aria-label": "file" });
    const name = el("input", { placeholder: "name (default: the file's)", "aria-label": "file name" });
    const type = el("select", { "aria-label": "file type", id: "file-type" }, TYPES.map((t) => el("option", { value: t }, t)));
    const version = el("input", { placeholder: "version", "aria-label": "version", id: "file-version", size: 10 });
    const oui = el("input", { placeholder: "OUI", "aria-label": "oui", size: 8 });
    const productClass = el("input", { placeholder: "product class", "aria-label": "product class", size: 12 });
    const bar = el("progress", { max: 1, value: 0, id: "upload-progress", hidden: true });
    const percent = el("span", { id: "upload-percent" });
    view.append(el("form", { class: "toolbar", id: "upload-form", onsubmit: async (e) => {
      e.preventDefault();
      message.replaceChildren();
      const chosen = file.files[0];
      if (!chosen) return;
      bar.hidden = false;
      try {
        await upload(`/files/${encodeURIComponent(name.value.trim() || chosen.name)}`, chosen,
          { file_type: type.value, version: version.value.trim(), oui: oui.value.trim(), product_class: productClass.value.trim() },
          (fraction) => { bar.value = fraction; percent.textContent = `${Math.round(fraction * 100)} %`; });
        bar.value = 1;
        percent.textContent = "100 % uploaded";
        refresh();
      } catch (error) { message.replaceChildren(problemBox(error)); }
    } }, file, name, type, version, oui, productClass, el("button", { type: "submit", class: "primary" }, "Upload"), bar, percent));
  }
  view.append(message, list, records);
  await refresh();
}
