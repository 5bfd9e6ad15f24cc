// The form that describes one task (for a device, a selection or a whole query) and its JSON.
import { api } from "./api.js";
import { el } from "./ui.js";

export const TASKS = {
  reboot: { label: "Reboot", fields: [] },
  factoryReset: { label: "Factory reset", fields: [] },
  getParameterValues: { label: "Read parameters", fields: [["parameter_names", "Names or subtrees (comma-separated)", "Device.DeviceInfo."]] },
  setParameterValues: { label: "Set a parameter", fields: [["name", "Parameter name", ""], ["value", "Value", ""], ["type", "Type (optional)", ""]] },
  download: { label: "Push a file (firmware)", fields: [["file_name", "File", ""]] },
  scheduleInform: { label: "Schedule an Inform", fields: [["delay_seconds", "Delay in seconds", "5"]] },
};

export function taskBody(name, values) {
  switch (name) {
    case "getParameterValues": return { name, parameter_names: values.parameter_names.split(",").map((s) => s.trim()).filter(Boolean) };
    case "setParameterValues": {
      const entry = { name: values.name, value: values.value };
      if (values.type) entry.type = values.type;
      return { name, parameter_values: [entry] };
    }
    case "download": return { name, file_name: values.file_name };
    case "scheduleInform": return { name, delay_seconds: Number(values.delay_seconds) };
    default: return { name };
  }
}

// A task chooser; ``taskSpec()`` on the returned node gives the task's JSON.
export function taskChooser() {
  const select = el("select", { name: "task", "aria-label": "task" },
    Object.entries(TASKS).map(([name, t]) => el("option", { value: name }, t.label)));
  const fields = el("span", { class: "toolbar" });
  const inputs = {};
  async function render() {
    fields.replaceChildren();
    for (const key of Object.keys(inputs)) delete inputs[key];
    for (const [key, label, placeholder] of TASKS[select.value].fields) {
      let input;
      if (key === "file_name") {
        input = el("select", { name: key, "aria-label": label });
        try {
          const files = (await api.get("/files", { kind: "file", limit: 200 })).files;
          for (const f of files) input.append(el("option", { value: f.name }, `${f.name} (${f.file_type}${f.version ? ", " + f.version : ""})`));
        } catch { /* shown when the job is created */ }
      } else {
        input = el("input", { name: key, placeholder, "aria-label": label, value: key === "delay_seconds" ? placeholder : "" });
      }
      inputs[key] = input;
      fields.append(el("label", {}, label + " ", input));
    }
  }
  select.addEventListener("change", render);
  render();
  const node = el("span", { class: "toolbar" }, select, fields);
  node.taskSpec = () => taskBody(select.value, Object.fromEntries(Object.entries(inputs).map(([k, i]) => [k, i.value])));
  return node;
}
