// Small DOM and formatting helpers shared by the views.

// el("a", {href: "#"}, ["text", node]): an element with attributes and children. Text is always
// set as text, never parsed as HTML, so nothing from the API can inject markup.
export function el(tag, attributes = {}, children = []) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of Array.isArray(children) ? children : [children]) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function formatSeconds(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  const whole = Math.round(seconds);
  if (whole < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, "0")}`;
}

export function formatDate(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime())
    ? iso
    : date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function slug(text) {
  const cleaned = String(text)
    .toLowerCase()
    .normalize("NFKD")
    .replace(/[^\p{Letter}\p{Number}]+/gu, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 40)
    .replace(/-+$/g, "");
  return cleaned || "song";
}

// What to call a song in lists and headings.
export function songName(song) {
  const request = song.request || {};
  if (request.title) return request.title;
  if (request.prompt) return request.prompt;
  const firstLine = (request.lyrics || song.lyrics || "")
    .split("\n")
    .map((line) => line.trim())
    .find((line) => line && !/^\[.*\]$/.test(line));
  if (firstLine) return firstLine;
  if (request.style) return request.style;
  return "Untitled song";
}

export const TASK_NAMES = { extend: "Extension", repaint: "Repaint", cover: "Cover" };
