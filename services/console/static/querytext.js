// The search box's shorthand, turned into the inventory query language (JSON, docs/inventory.md).
//   SIM000123                    serial number starting with it
//   serial_number:SIM000123      equal;  name:value*  starts with;  name!=v  name>v  name>=v  name<v  name<=v
//   has:Device.DeviceInfo.  !has:Name       the parameter (or object) exists / does not
//   tags:lab  product_class:"IGD SIM"  Device.DeviceInfo.SoftwareVersion:1.0.0
// Text starting with "{" is taken as the JSON query itself.

const FIELD_NAMES = new Set(["id", "oui", "product_class", "serial_number", "manufacturer", "software_version",
  "tags", "first_seen", "last_inform", "last_boot", "last_bootstrap", "silent_since", "inform_interval",
  "remote_address", "connection_request_url"]);

function tokens(text) {
  const found = [];
  const pattern = /([^\s"]+?)?(:|!=|>=|<=|>|<)?"([^"]*)"|(\S+)/g;
  let match;
  while ((match = pattern.exec(text))) {
    if (match[4] !== undefined) found.push(match[4]);
    else found.push(`${match[1] || ""}${match[2] || ""}\u0000${match[3]}`);
  }
  return found;
}

function typed(name, value) {
  // Parameters are stored typed (numbers, booleans); device fields are text or times.
  if (FIELD_NAMES.has(name)) return name === "inform_interval" && /^\d+$/.test(value) ? Number(value) : value;
  if (/^-?\d+$/.test(value)) return Number(value);
  if (value === "true" || value === "false") return value === "true";
  return value;
}

export function toQuery(text) {
  const trimmed = (text || "").trim();
  if (!trimmed) return "";
  if (trimmed.startsWith("{")) return trimmed;
  const conditions = [];
  for (const raw of tokens(trimmed)) {
    const quoted = raw.includes("\u0000");
    const token = raw.replace("\u0000", "");
    if (token.startsWith("has:") || token.startsWith("!has:")) {
      const negated = token.startsWith("!");
      conditions.push({ [token.slice(negated ? 5 : 4)]: { $exists: !negated } });
      continue;
    }
    const match = token.match(/^([A-Za-z_][\w.{}-]*?)(:|!=|>=|<=|>|<)(.*)$/);
    if (!match) {
      conditions.push({ serial_number: { $prefix: token } });
      continue;
    }
    const [, name, op, rest] = match;
    let value = rest;
    if (op === ":" && !quoted && value.endsWith("*")) {
      conditions.push({ [name]: { $prefix: value.slice(0, -1) } });
      continue;
    }
    value = quoted ? value : typed(name, value);
    const operator = { ":": "$eq", "!=": "$ne", ">": "$gt", ">=": "$gte", "<": "$lt", "<=": "$lte" }[op];
    conditions.push({ [name]: operator === "$eq" ? value : { [operator]: value } });
  }
  return JSON.stringify(conditions.length === 1 ? conditions[0] : { $and: conditions });
}

export const HELP = [
  ["SIM000123", "serial number starting with SIM000123"],
  ["serial_number:SIM000123", "exactly equal (any device field or parameter name)"],
  ["product_class:\"IGD SIM\"", "quotes for values with spaces"],
  ["software_version:2.*", "starts with 2."],
  ["tags:lab", "has the tag lab"],
  ["last_inform>2025-06-01T00:00:00Z", "comparisons: != > >= < <="],
  ["has:Device.DeviceInfo.   !has:Device.ManagementServer.UDPConnectionRequestAddress", "has (or lacks) a parameter or object"],
  ["Device.DeviceInfo.ProvisioningCode:ABC", "any parameter (numbers and true/false are typed)"],
  ["{\"$or\": [{\"oui\": \"00259E\"}, {\"tags\": \"lab\"}]}", "or the JSON query language itself"],
];
