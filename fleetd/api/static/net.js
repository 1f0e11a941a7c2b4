// Talking to fleetd: the token, JSON requests, and the event stream read with fetch.
//
// The stream is read with fetch rather than EventSource so that it can carry the bearer token
// (EventSource cannot set headers). It follows the SSE rules fleetd uses: `id`, `event`, `data`,
// comments, a blank line ends an event; it reconnects with `Last-Event-ID` after a break.

const TOKEN_KEY = "pyfleet.token";

export function takeTokenFromUrl() {
  const match = location.hash.match(/(?:^#|&)token=([^&]+)/);
  if (match) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    const rest = location.hash.replace(/(?:^#|&)token=[^&]+/, "").replace(/^&/, "#");
    history.replaceState(null, "", location.pathname + location.search + (rest === "#" ? "" : rest));
  }
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export function hasToken() {
  return Boolean(sessionStorage.getItem(TOKEN_KEY));
}

function headers(extra = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
  }
}

async function check(response) {
  if (response.ok) return response;
  let message = "";
  try {
    message = (await response.json()).error?.message ?? "";
  } catch {
    /* not fleet's envelope */
  }
  throw new ApiError(response.status, message);
}

export async function getJson(path) {
  const response = await check(await fetch(path, { headers: headers() }));
  return response.json();
}

export async function getText(path) {
  const response = await check(await fetch(path, { headers: headers() }));
  return { type: response.headers.get("content-type") || "", text: await response.text() };
}

export async function send(method, path, body) {
  const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
  if (body) init.body = JSON.stringify(body);
  await check(await fetch(path, init));
}

/** Every item of a paged v1 list. */
export async function listAll(path, key) {
  const items = [];
  let token = "";
  for (let page = 0; page < 10000; page++) {
    const data = await getJson(token ? `${path}?nextPageToken=${encodeURIComponent(token)}` : path);
    items.push(...(data[key] || []));
    token = data.nextPageToken || "";
    if (!token) break;
  }
  return items;
}

/**
 * Follow /fleet/v1/events from `lastId`: `onEvent(kind, data, id)` for each event,
 * `onStatus("live" | "reconnecting" | "error", detail)` as the connection changes.
 * Returns a function that stops it.
 */
export function followEvents(lastId, onEvent, onStatus) {
  let stopped = false;
  let controller = null;
  let delay = 500;

  async function once() {
    controller = new AbortController();
    const extra = lastId ? { "Last-Event-ID": String(lastId) } : {};
    const response = await fetch("/fleet/v1/events", {
      headers: headers(extra),
      signal: controller.signal,
      cache: "no-store",
    });
    await check(response);
    onStatus("live");
    delay = 500;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let fields = { id: null, event: "", data: [] };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).replace(/\r$/, "");
        buffer = buffer.slice(newline + 1);
        if (line === "") {
          if (fields.data.length) {
            if (fields.id !== null) lastId = fields.id;
            let data = {};
            try {
              data = JSON.parse(fields.data.join("\n"));
            } catch {
              data = { text: fields.data.join("\n") };
            }
            onEvent(fields.event || "message", data, fields.id);
          }
          fields = { id: null, event: "", data: [] };
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const name = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (name === "id") fields.id = text;
          else if (name === "event") fields.event = text;
          else if (name === "data") fields.data.push(text);
        }
      }
    }
  }

  (async () => {
    while (!stopped) {
      try {
        await once();
      } catch (error) {
        if (stopped) return;
        if (error instanceof ApiError && error.status < 500) {
          onStatus("error", error.message);
          return;
        }
      }
      if (stopped) return;
      onStatus("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 5000);
    }
  })();

  return () => {
    stopped = true;
    controller?.abort();
  };
}
