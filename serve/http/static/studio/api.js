// The public HTTP API v1, as the studio calls it: JSON in and out, the key the user gave kept in
// this browser and sent as `Authorization: Bearer`, errors turned into sentences, and a song's
// Server-Sent Events read with fetch (EventSource cannot send the key header).

const KEY_STORAGE = "songserve.apiKey";

export class ApiError extends Error {
  constructor(status, code, message, field = null, retryAfterS = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
    this.retryAfterS = retryAfterS;
  }
}

export function storedKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return ""; // storage disabled: the key lives only as long as the page
  }
}

export function storeKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    /* storage disabled */
  }
  sessionKey = key;
}

let sessionKey = storedKey();
let keyPrompt = null; // set by the app: async (reason) => true once a key was given
let pendingPrompt = null;

export function onKeyNeeded(prompt) {
  keyPrompt = prompt;
}

function authHeaders(extra = {}) {
  const headers = new Headers(extra);
  if (sessionKey) headers.set("Authorization", `Bearer ${sessionKey}`);
  return headers;
}

// A 401 that names the Bearer scheme means "send a key"; a 401 without it means this server
// has no keys and serves only its own machine, which no key can fix.
function asksForKey(response) {
  return response.status === 401 && /bearer/i.test(response.headers.get("WWW-Authenticate") || "");
}

async function askForKey(reason) {
  if (!keyPrompt) return false;
  pendingPrompt ??= keyPrompt(reason).finally(() => {
    pendingPrompt = null;
  });
  return pendingPrompt;
}

async function errorOf(response) {
  let detail = {};
  try {
    detail = (await response.json()).error || {};
  } catch {
    /* not our error shape (a proxy's page) */
  }
  const retry = Number(response.headers.get("Retry-After")) || null;
  return new ApiError(
    response.status,
    detail.code || `http_${response.status}`,
    detail.message || response.statusText || "the server gave no reason",
    detail.field || null,
    retry,
  );
}

// fetch with the key; asks the user for one (and retries) when the server wants a key.
export async function send(path, { method = "GET", json, form, headers, signal } = {}) {
  for (let attempt = 0; ; attempt++) {
    const init = { method, headers: authHeaders(headers), signal };
    if (json !== undefined) {
      init.headers.set("Content-Type", "application/json");
      init.body = JSON.stringify(json);
    } else if (form !== undefined) {
      init.body = form;
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, "network", "the server cannot be reached");
    }
    if (asksForKey(response) && attempt < 3) {
      const reason = sessionKey ? "That key was not accepted. Check it, or ask for a new one." : "";
      if (await askForKey(reason)) continue;
    }
    if (!response.ok) throw await errorOf(response);
    return response;
  }
}

export async function api(path, options = {}) {
  const response = await send(path, options);
  return response.status === 204 ? null : response.json();
}

// The tasks some decoder pool serves (GET /v1/pools), asked once per page: the edits to offer.
let servedTasksOnce = null;
export function servedTasks() {
  servedTasksOnce ??= api("/v1/pools")
    .then(({ pools }) => new Set(pools.flatMap((pool) => pool.tasks || [])))
    .catch(() => {
      servedTasksOnce = null; // ask again next time; meanwhile offer every edit
      return new Set(["extend", "repaint", "cover"]);
    });
  return servedTasksOnce;
}

const FIELD_NAMES = {
  prompt: "the song idea",
  lyrics: "the lyrics",
  style: "the style",
  title: "the title",
  duration_s: "the length",
  variations: "the number of takes",
  model: "the model",
  lora: "the LoRA",
  seed: "the seed",
  task: "this edit",
  source: "the source",
  extend_s: "the extension",
  window: "the window",
  cover_strength: "the cover strength",
  file: "the file",
};

// What went wrong, in a sentence a newcomer can act on.
export function plainError(error) {
  if (!(error instanceof ApiError)) return `Something went wrong: ${error.message || error}.`;
  const wait = error.retryAfterS ? ` Try again in ${error.retryAfterS} s.` : " Try again shortly.";
  const about = error.field && FIELD_NAMES[error.field] ? ` (${FIELD_NAMES[error.field]})` : "";
  const message = sentence(error.message);
  switch (error.status) {
    case 0:
      return "The server cannot be reached. Is it still running? Check the connection and try again.";
    case 401:
      return `The server refused this browser: ${message}`;
    case 404:
      return "That song or file does not exist, or it belongs to another key.";
    case 413:
      return `That is too large: ${message}`;
    case 415:
      return "That is not an audio file the server can read (m4a, mp3, flac or wav work).";
    case 422:
      if (error.field === "task") return `This server cannot do that edit: ${message}`;
      return `Please check the form${about}: ${message}`;
    case 429:
      return `You have reached a limit: ${message}${wait}`;
    case 503:
      return `The server is busy right now.${wait}`;
    default:
      return message;
  }
}

function sentence(text) {
  const trimmed = String(text || "").trim();
  if (!trimmed) return "";
  const first = trimmed[0].toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(first) ? first : `${first}.`;
}

// A song's events: yields {id, event, data} until the server closes the stream, reconnecting
// after a dropped connection with Last-Event-ID (the server replays what was missed).
export async function* songEvents(songId, { signal } = {}) {
  let lastId = null;
  let retryMs = 2000;
  let finished = false;
  while (!finished && !signal?.aborted) {
    const headers = { Accept: "text/event-stream" };
    if (lastId !== null) headers["Last-Event-ID"] = String(lastId);
    let response;
    try {
      response = await send(`/v1/songs/${encodeURIComponent(songId)}/events`, { headers, signal });
    } catch (error) {
      if (error.name === "AbortError") return;
      if (error instanceof ApiError && error.status !== 0 && error.status !== 503) throw error;
      await sleep(retryMs, signal);
      continue;
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let frame = { id: null, event: "message", data: [] };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) {
          finished = true; // the server closes the stream once the song (and its stems) ended
          break;
        }
        buffer += value;
        let newline;
        while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
          const line = buffer.slice(0, newline);
          buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
          if (line === "") {
            if (frame.data.length) {
              if (frame.id !== null) lastId = frame.id;
              yield { id: frame.id, event: frame.event, data: JSON.parse(frame.data.join("\n")) };
            }
            frame = { id: null, event: "message", data: [] };
            continue;
          }
          if (line.startsWith(":")) continue; // a comment: keep-alive
          const colon = line.indexOf(":");
          const name = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (name === "data") frame.data.push(value);
          else if (name === "event") frame.event = value;
          else if (name === "id") frame.id = Number(value);
          else if (name === "retry" && /^\d+$/.test(value)) retryMs = Number(value);
        }
      }
    } catch (error) {
      if (error.name === "AbortError" || signal?.aborted) return;
      await sleep(retryMs, signal); // the connection dropped: resume after the last id
    } finally {
      reader.releaseLock();
    }
  }
}

// Resolves once a download URL's file exists, so a link to it can download. A format that is not
// encoded while mastering (mp3, flac and wav by default) is made on its first request, and the
// server answers 503 with Retry-After when that outlasts its wait (postprocess.
// lazy_encode_wait_s): a plain link would end in the browser's "server problem". HEAD starts the
// encode as GET does, without the bytes; a redirect (to the object store) means it is stored.
// `onWaiting(seconds)` hears of each wait; an answer that is not 503 rejects with an ApiError,
// and a URL fetch cannot reach (another origin) is left to the browser.
export async function fileReady(url, { onWaiting, signal } = {}) {
  for (;;) {
    let response;
    try {
      response = await fetch(url, { method: "HEAD", redirect: "manual", signal });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      return;
    }
    if (response.ok || response.type === "opaqueredirect") return;
    const retryAfterS = Number(response.headers.get("Retry-After")) || null;
    if (response.status !== 503) {
      const reason = response.statusText || "the server gave no reason";
      throw new ApiError(response.status, `http_${response.status}`, reason, null, retryAfterS);
    }
    onWaiting?.(retryAfterS ?? 2);
    await sleep((retryAfterS ?? 2) * 1000, signal);
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
