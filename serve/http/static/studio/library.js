// The caller's songs, newest first, a page at a time (GET /v1/songs?limit&cursor), searchable by
// idea, lyrics or style. The API has no search parameter: the search runs over the songs loaded
// so far, and "Load older songs" widens it.

import { api, plainError } from "./api.js";
import { TASK_NAMES, el, formatDate, formatSeconds, songName } from "./dom.js";

const PAGE = 20;
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
    this.$("library-search").addEventListener("input", () => this.render());
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
    try {
      const page = await api(`/v1/songs?${query}`);
      this.songs.push(...page.songs);
      this.cursor = page.next_cursor;
      this.render();
    } catch (error) {
      status.textContent = plainError(error);
    } finally {
      this.loading = false;
    }
  }

  matches(song, words) {
    const request = song.request || {};
    const haystack = [request.prompt, request.title, request.style, request.lyrics, song.tags?.caption]
      .filter(Boolean)
      .join(" ")
      .toLowerCase();
    return words.every((word) => haystack.includes(word));
  }

  render() {
    const words = this.$("library-search").value.toLowerCase().split(/\s+/).filter(Boolean);
    const shown = this.songs.filter((song) => this.matches(song, words));
    this.$("library-list").replaceChildren(...shown.map(songItem));
    this.$("library-more").hidden = !this.cursor;
    const status = this.$("library-status");
    if (!this.songs.length) {
      status.replaceChildren("No songs yet. ", el("a", { href: "#/create" }, "Make your first one."));
    } else if (words.length) {
      const older = this.cursor ? " Load older songs to search further back." : "";
      status.textContent = `${shown.length} of ${this.songs.length} songs match.${older}`;
    } else {
      status.textContent = `${this.songs.length} song${this.songs.length === 1 ? "" : "s"}${this.cursor ? " (newest first; more below)" : ""}.`;
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
