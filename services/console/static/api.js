// The console's only way to the ACS: the public /api/v1 on this origin, with the session cookie.
// Every write carries the session's CSRF token; every error is the API's problem, as it words it.

let csrfToken = "";
let onSignedOut = () => {};

export function setSession(token, signedOut) {
  csrfToken = token || "";
  if (signedOut) onSignedOut = signedOut;
}

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

async function parse(response) {
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) return response.json();
  return response.text();
}

export async function request(method, url, { body, raw, headers = {}, signal } = {}) {
  const options = { method, headers: { Accept: "application/json", ...headers }, credentials: "same-origin", signal };
  if (method !== "GET" && method !== "HEAD") options.headers["X-CSRF-Token"] = csrfToken;
  if (raw !== undefined) options.body = raw;
  else if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(url, options);
  const data = await parse(response);
  if (!response.ok) {
    const problem = typeof data === "object" && data ? data : { status: response.status, detail: String(data || response.statusText) };
    if (response.status === 401 && !url.startsWith("/console/api/session")) onSignedOut();
    throw new ApiError(response.status, problem);
  }
  return data;
}

export const api = {
  get: (path, params) => request("GET", "/api/v1" + path + query(params)),
  post: (path, body, params) => request("POST", "/api/v1" + path + query(params), { body: body ?? {} }),
  put: (path, body, params) => request("PUT", "/api/v1" + path + query(params), { body }),
  patch: (path, body, params) => request("PATCH", "/api/v1" + path + query(params), { body }),
  del: (path, params) => request("DELETE", "/api/v1" + path + query(params)),
};

export function query(params) {
  if (!params) return "";
  const entries = Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== "");
  return entries.length ? "?" + new URLSearchParams(entries).toString() : "";
}

// A device id is percent-encoded already; in a path it is encoded once more.
export const devicePath = (id) => "/devices/" + encodeURIComponent(id);

// Uploads with progress need XMLHttpRequest (fetch has no upload progress).
export function upload(path, file, params, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", "/api/v1" + path + query(params));
    xhr.setRequestHeader("X-CSRF-Token", csrfToken);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onload = () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch { data = { detail: xhr.responseText }; }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(new ApiError(xhr.status, data || {}));
    };
    xhr.onerror = () => reject(new ApiError(0, { detail: "the upload was interrupted" }));
    xhr.send(file);
  });
}
