// One song: its progress from the event stream (stage, a bar per take with its steps, the place
// in line), then each take as it finishes.

import { ApiError, api, plainError, songEvents } from "./api.js";
import { renderClip } from "./clip.js";
import { TASK_NAMES, el, songName } from "./dom.js";

const STAGES = {
  queued: "Waiting to start…",
  lyrics: "Writing the lyrics…",
  tags: "Choosing the sound…",
  generating: "Making the music…",
  postprocessing: "Mastering…",
  done: "Your song is ready.",
  failed: "This song could not be made.",
  canceled: "This song was canceled.",
};
const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
const POLL_MS = 2000;
// Share of a take's bar for rendering; mastering fills the rest.
const RENDER_SHARE = 85;

export class SongView {
  constructor({ onReuse, navigate }) {
    this.onReuse = onReuse;
    this.navigate = navigate;
    this.controller = null;
    this.song = null;
    this.$ = (id) => document.getElementById(id);
    this.$("cancel-song").addEventListener("click", () => this.cancel());
  }

  close() {
    this.controller?.abort();
    this.controller = null;
  }

  async show(songId) {
    this.close();
    const controller = new AbortController();
    this.controller = controller;
    this.song = null;
    this.$("song-title").textContent = "Loading…";
    this.$("song-style").textContent = "";
    this.$("clips").replaceChildren();
    this.$("variation-progress").replaceChildren();
    this.$("song-error").hidden = true;
    this.$("song-queue").hidden = true;
    this.$("song-lyrics").hidden = true;
    this.$("progress-panel").hidden = true;
    this.$("variation-progress").hidden = false;
    let song;
    try {
      song = await api(`/v1/songs/${encodeURIComponent(songId)}`, { signal: controller.signal });
    } catch (error) {
      if (error.name === "AbortError") return;
      this.$("song-title").textContent = "Song not found";
      this.showError(plainError(error));
      return;
    }
    this.render(song);
    // A song watched live keeps its bars to the end; one opened finished does not need them.
    this.$("variation-progress").hidden = TERMINAL.has(song.status);
    if (!TERMINAL.has(song.status)) this.follow(song.id, controller.signal);
  }

  render(song) {
    this.song = song;
    const request = song.request;
    const task = TASK_NAMES[request.task];
    this.$("song-title").textContent = task ? this.editTitle(song, task) : songName(song);
    const style = song.tags?.caption || request.style || "";
    this.$("song-style").textContent = style;
    if (song.lyrics) {
      this.$("song-lyrics").hidden = false;
      this.$("song-lyrics").querySelector("pre").textContent = song.lyrics;
    }
    const count = Math.max(request.variations || 1, song.variations.length);
    const bars = this.$("variation-progress");
    if (bars.children.length !== count) {
      bars.replaceChildren();
      for (let index = 0; index < count; index++) bars.append(progressRow(index));
    }
    for (const variation of song.variations) {
      if (variation.status === "succeeded") this.setBar(variation.index, 100, "ready");
      if (variation.status === "succeeded" || variation.status === "failed") this.showClip(variation);
    }
    this.setStage(TERMINAL.has(song.status) ? stageOfStatus(song.status) : song.stage || "queued");
    this.$("progress-panel").hidden = false;
    this.$("cancel-song").hidden = TERMINAL.has(song.status);
    if (song.queue) this.showQueue(song.queue);
    if (song.error) this.showError(`This song could not be made: ${song.error.message}`);
  }

  // "Extension of “Night Drive”, take 1": the source song is read once to name it.
  editTitle(song, task) {
    const source = song.request.source || {};
    if (!source.song) return `${task} of an upload`;
    const take = source.variation == null ? "" : `, take ${source.variation + 1}`;
    if (this.parent?.id === source.song && this.parent.name) {
      return `${task} of “${this.parent.name}”${take}`;
    }
    if (this.parent?.id !== source.song) {
      this.parent = { id: source.song, name: null };
      api(`/v1/songs/${encodeURIComponent(source.song)}`)
        .then((parent) => {
          if (this.parent?.id !== source.song) return;
          this.parent.name = songName(parent);
          if (this.song?.id === song.id) this.$("song-title").textContent = this.editTitle(song, task);
        })
        .catch(() => {}); // deleted since: "a song" it stays
    }
    return `${task} of a song${take}`;
  }

  async follow(songId, signal) {
    while (!signal.aborted) {
      try {
        for await (const { event, data } of songEvents(songId, { signal })) this.apply(event, data);
      } catch (error) {
        if (signal.aborted) return;
        if (!(error instanceof ApiError && error.status === 429)) this.showError(plainError(error));
        await this.poll(songId, signal); // no stream to be had: read the song every few seconds
        return;
      }
      if (signal.aborted) return;
      // The stream ended: the song did (the usual case), or the server closed it early.
      try {
        const song = await api(`/v1/songs/${encodeURIComponent(songId)}`, { signal });
        this.render(song);
        if (TERMINAL.has(song.status)) return;
      } catch (error) {
        if (error.name === "AbortError") return;
        this.showError(plainError(error));
        await this.poll(songId, signal);
        return;
      }
    }
  }

  async poll(songId, signal) {
    while (!signal.aborted) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      try {
        const song = await api(`/v1/songs/${encodeURIComponent(songId)}`, { signal });
        this.render(song);
        if (TERMINAL.has(song.status)) return;
      } catch (error) {
        if (error.name === "AbortError") return;
      }
    }
  }

  apply(event, data) {
    switch (event) {
      case "stage":
        this.setStage(data.stage);
        if (data.stage !== "queued") this.$("song-queue").hidden = true;
        break;
      case "queue":
        this.showQueue(data);
        break;
      case "progress": {
        this.$("song-queue").hidden = true;
        this.setStage(data.stage);
        const fraction = data.steps ? data.step / data.steps : 0;
        if (data.stage === "postprocessing") {
          this.setBar(data.variation, RENDER_SHARE + fraction * (100 - RENDER_SHARE), "mastering");
        } else {
          const text = `step ${data.step} of ${data.steps}`;
          this.setBar(data.variation, fraction * RENDER_SHARE, text);
        }
        break;
      }
      case "variation":
        if (data.status === "succeeded") this.setBar(data.index, 100, "ready");
        else if (data.status === "failed") this.setBar(data.index, null, "failed");
        if (data.status === "succeeded" || data.status === "failed") this.showClip(data);
        break;
      case "done":
        this.setStage("done");
        this.$("cancel-song").hidden = true;
        break;
      case "error":
        this.setStage("failed");
        this.$("cancel-song").hidden = true;
        this.showError(`This song could not be made: ${data.message || data.error?.message || "no reason was given"}`);
        break;
      case "canceled":
        this.setStage("canceled");
        this.$("cancel-song").hidden = true;
        break;
      default:
        break; // stems events: the stems box reads its own state
    }
  }

  setStage(stage) {
    const node = this.$("song-stage");
    node.dataset.stage = stage;
    node.textContent = STAGES[stage] || `${stage}…`;
  }

  showQueue(queue) {
    const node = this.$("song-queue");
    const ahead = queue.position === 0 ? "It starts next" : `${queue.position} song${queue.position === 1 ? "" : "s"} ahead of it`;
    const when = queue.expected_start_s == null ? "" : `, in about ${Math.max(1, Math.round(queue.expected_start_s))} s`;
    node.textContent = `In line: ${ahead}${when}.`;
    node.hidden = false;
  }

  setBar(index, percent, text) {
    const row = this.$("variation-progress").querySelector(`[data-variation="${index}"]`);
    if (!row) return;
    const bar = row.querySelector("progress");
    if (percent === null) bar.removeAttribute("value");
    else bar.value = Math.max(Number(bar.value) || 0, Math.round(percent));
    row.querySelector(".bar-text").textContent = text;
    row.dataset.state = text;
  }

  showClip(variation) {
    const clips = this.$("clips");
    const card = renderClip(this.song, variation, {
      onReuse: (song) => this.onReuse(song),
      onEdited: (id) => this.navigate(`#/song/${id}`),
    });
    const existing = clips.querySelector(`.clip[data-variation="${variation.index}"]`);
    if (existing) {
      if (existing.dataset.status === variation.status) return;
      existing.replaceWith(card);
    } else {
      const after = [...clips.children].find((c) => Number(c.dataset.variation) > variation.index);
      clips.insertBefore(card, after || null);
    }
    card.dataset.status = variation.status;
  }

  showError(text) {
    const node = this.$("song-error");
    node.textContent = text;
    node.hidden = false;
  }

  async cancel() {
    if (!this.song) return;
    try {
      this.render(await api(`/v1/songs/${this.song.id}/cancel`, { method: "POST" }));
    } catch (error) {
      this.showError(plainError(error));
    }
  }
}

function stageOfStatus(status) {
  return status === "succeeded" ? "done" : status;
}

function progressRow(index) {
  const id = `take-bar-${index}`;
  return el("div", { class: "bar-row", "data-variation": index }, [
    el("label", { for: id }, `Take ${index + 1}`),
    el("progress", { id, max: "100", value: "0" }),
    el("span", { class: "bar-text muted" }, "waiting"),
  ]);
}
