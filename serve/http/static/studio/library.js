// The caller's songs, newest first, a page at a time (GET /v1/songs?limit&cursor), searched by
// the server over every song's idea, title, lyrics and style (GET /v1/songs?q=…).

import { api, plainError } from "./api.js";
import { TASK_NAMES, el, formatDate, formatSeconds, songName } from "./dom.js";

const PAGE = 20;
const SEARCH_PAUSE_MS = 250;
const STATUS_TEXT = {
  queued: "Queued",
  running: "Making",
  succeeded: "Ready",
  failed: "Failed",
  canceled: "Canceled",
};

export class LibraryView {
  constructor() {
    this.$ = (id) => document.getElementById(id);
    this.songs = [];
    this.cursor = null;
    this.loading = false;
    this.searchTimer = null;
    this.$("library-search").addEventListener("input", () => {
      clearTimeout(this.searchTimer); // one request once the typing pauses
      this.searchTimer = setTimeout(() => this.show(), SEARCH_PAUSE_MS);
    });
    this.$("library-more").addEventListener("click", () => this.loadPage());
  }

  async show() {
    this.songs = [];
    this.cursor = null;
    this.$("library-list").replaceChildren();
    await this.loadPage();
  }

  async loadPage() {
    if (this.loading) return;
    this.loading = true;
    const status = this.$("library-status");
    status.textContent = "Loading your songs…";
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (this.cursor) query.set("cursor", this.cursor);
    const search = this.$("library-search").value.trim();
    if (search) query.set("q", search);
    try {
      const page = await api(`/v1/songs?${query}`);
      if (search !== this.$("library-search").value.trim()) return; // typed on meanwhile
      this.songs.push(...page.songs);
      this.cursor = page.next_cursor;
      this.render();
    } catch (error) {
      status.textContent = plainError(error);
    } finally {
      this.loading = false;
    }
  }

  render() {
    const searching = Boolean(this.$("library-search").value.trim());
    this.$("library-list").replaceChildren(...this.songs.map(songItem));
    this.$("library-more").hidden = !this.cursor;
    const status = this.$("library-status");
    const more = this.cursor ? " (newest first; more below)" : "";
    if (!this.songs.length && searching) {
      status.textContent = "No song matches. Try fewer words.";
    } else if (!this.songs.length) {
      status.replaceChildren("No songs yet. ", el("a", { href: "#/create" }, "Make your first one."));
    } else {
      const noun = `${this.songs.length} ${searching ? "matching " : ""}song${this.songs.length === 1 ? "" : "s"}`;
      status.textContent = `${noun}${more}.`;
    }
  }
}

function songItem(song) {
  const request = song.request || {};
  const task = TASK_NAMES[request.task];
  const name = task ? `${task}: ${songName(song)}` : songName(song);
  const style = song.tags?.caption || request.style || "";
  const takes = `${request.variations} take${request.variations === 1 ? "" : "s"} × ${formatSeconds(request.duration_s)}`;
  return el("li", { class: "song-item", "data-song": song.id }, [
    el("a", { href: `#/song/${song.id}`, class: "song-link" }, [
      el("span", { class: "song-name" }, name),
      el("span", { class: "muted song-style" }, style),
    ]),
    el("span", { class: `badge badge-${song.status}` }, STATUS_TEXT[song.status] || song.status),
    el("span", { class: "muted song-when" }, [el("time", { datetime: song.created_at }, formatDate(song.created_at)), ` · ${takes}`]),
  ]);
}
