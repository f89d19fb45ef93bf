// One finished take of a song: waveform, player, facts, downloads, stems, and the edits that
// start a new song from it (extend, repaint, cover) or refill the form (reuse).

import { ApiError, api, fileReady, plainError, servedTasks, songEvents } from "./api.js";
import { Waveform } from "./waveform.js";
import { el, formatSeconds, slug } from "./dom.js";

const FORMAT_ORDER = ["m4a", "mp3", "flac", "wav"];
const STEMS_POLL_MS = 1000;
const PREPARING_NOTE_MS = 800;

// HLS where the browser plays it natively; the m4a otherwise (no player library is loaded).
export function playbackSource(variation, probe = document.createElement("audio")) {
  if (variation.hls && probe.canPlayType("application/vnd.apple.mpegurl")) {
    return { kind: "hls", url: variation.hls };
  }
  const format = FORMAT_ORDER.find((name) => variation.audio[name]);
  return { kind: format || "none", url: format ? variation.audio[format] : "" };
}

// A download chip asks for its file first (fileReady): a format made on its first request may
// take longer than the server waits, and the chip then says so and retries instead of handing the
// browser a 503. Once the file exists, the click goes through as a plain download.
async function downloadWhenReady(event, link, format, note) {
  if (link.dataset.ready === "yes") return;
  event.preventDefault();
  if (link.getAttribute("aria-busy") === "true") return;
  link.setAttribute("aria-busy", "true");
  note.textContent = "";
  // The server holds a first request while it encodes (up to its wait): say so if that shows.
  const slow = setTimeout(() => {
    note.textContent = `Preparing the ${format.toUpperCase()} file for its first download…`;
  }, PREPARING_NOTE_MS);
  try {
    await fileReady(link.href, {
      onWaiting: (seconds) => {
        clearTimeout(slow);
        note.textContent = `Encoding the ${format.toUpperCase()} file for its first download; trying again in ${seconds} s…`;
      },
    });
    link.dataset.ready = "yes";
    note.textContent = "";
    link.click();
  } catch (error) {
    note.textContent = plainError(error);
  } finally {
    clearTimeout(slow);
    link.removeAttribute("aria-busy");
  }
}

export function renderClip(song, variation, { onReuse, onEdited }) {
  const number = variation.index + 1;
  const name = song.request.title || song.request.prompt || song.request.style || "song";
  const headingId = `clip-${song.id}-${variation.index}`;
  const card = el("article", { class: "clip", "data-variation": variation.index, "aria-labelledby": headingId });
  card.append(el("h2", { id: headingId }, `Take ${number}`));

  if (variation.status !== "succeeded") {
    const why = variation.error?.message ? `: ${variation.error.message}` : ".";
    card.append(el("p", { class: "error" }, `This take ${variation.status === "canceled" ? "was canceled" : "failed"}${why}`));
    return card;
  }

  const canvas = el("canvas", { class: "waveform", role: "img", "aria-label": `Waveform of take ${number}` });
  const audio = el("audio", { controls: "", preload: "metadata", "aria-label": `Play take ${number}` });
  const source = playbackSource(variation);
  audio.dataset.source = source.kind;
  audio.src = source.url;
  audio.addEventListener("error", () => {
    // A browser that claimed HLS but could not play it gets the m4a instead.
    if (audio.dataset.source === "hls" && variation.audio.m4a) {
      audio.dataset.source = "m4a";
      audio.src = variation.audio.m4a;
    }
  });
  card.append(canvas, audio);
  const waveform = new Waveform(canvas, audio);
  if (variation.peaks) {
    api(variation.peaks)
      .then((peaks) => waveform.setPeaks(peaks))
      .catch(() => canvas.setAttribute("aria-label", `The waveform of take ${number} could not be loaded`));
  }

  const model = [variation.model, variation.model_version].filter(Boolean).join(" ");
  card.append(
    el("dl", { class: "facts" }, [
      fact("Length", formatSeconds(variation.duration_s)),
      fact("Loudness", variation.loudness_lufs == null ? "—" : `${variation.loudness_lufs.toFixed(1)} LUFS`),
      fact("Model", model || "—"),
      fact("Seed", variation.seed ?? "—"),
    ]),
  );

  const downloads = el("div", { class: "downloads", role: "group", "aria-label": `Download take ${number}` }, [
    el("span", { class: "muted" }, "Download"),
  ]);
  const downloadNote = el("p", { class: "muted download-note", role: "status", "aria-live": "polite" });
  for (const format of FORMAT_ORDER) {
    const url = variation.audio[format];
    if (!url) continue;
    const link = el("a", {
      class: "chip",
      href: url,
      download: `${slug(name)}-take${number}.${format}`,
      "data-format": format,
      "aria-label": `Download take ${number} as ${format.toUpperCase()}`,
    }, format.toUpperCase());
    link.addEventListener("click", (event) => downloadWhenReady(event, link, format, downloadNote));
    downloads.append(link);
  }
  card.append(downloads, downloadNote);

  const stemsBox = el("div", { class: "stems", hidden: "" });
  const editBox = el("div", { class: "edit", hidden: "" });
  const stemsButton = el("button", { type: "button" }, "Stems");
  const reuseButton = el("button", { type: "button" }, "Reuse");
  stemsButton.addEventListener("click", () => makeStems(song, variation, stemsBox, stemsButton));
  reuseButton.addEventListener("click", () => onReuse(song, variation));
  const actions = el("div", { class: "actions", role: "group", "aria-label": `More for take ${number}` }, [
    stemsButton,
    reuseButton,
  ]);
  for (const task of ["extend", "repaint", "cover"]) {
    const button = el("button", { type: "button", "aria-expanded": "false", "data-task": task }, capitalize(task));
    button.addEventListener("click", () => {
      const open = button.getAttribute("aria-expanded") === "true";
      actions.querySelectorAll("[data-task]").forEach((b) => b.setAttribute("aria-expanded", "false"));
      if (open) {
        editBox.hidden = true;
        return;
      }
      button.setAttribute("aria-expanded", "true");
      showEditForm(editBox, song, variation, task, onEdited);
    });
    actions.append(button);
  }
  // Only the edits some pool of this server can make (a sketch-only server cannot cover).
  servedTasks().then((tasks) => {
    actions.querySelectorAll("[data-task]").forEach((b) => (b.hidden = !tasks.has(b.dataset.task)));
  });
  card.append(actions, stemsBox, editBox);
  return card;
}

function fact(term, value) {
  return el("div", {}, [el("dt", {}, term), el("dd", {}, String(value))]);
}

function capitalize(word) {
  return word[0].toUpperCase() + word.slice(1);
}

const STEMS_ACTIVE = new Set(["queued", "running"]);

// A stems job's progress and outcome are events on its song's stream, which the server keeps open
// while a stems job of the song is under way. The stream replays the song's whole log first, so
// events of an earlier stems job of this take come too: an ended one sends us to the record, which
// says whether the job we asked for ended. Without a stream (refused, or cut) the record is read
// every second instead.
async function followStems(songId, index, path, show) {
  const done = new AbortController(); // the stream is let go once this job's outcome is read
  try {
    for await (const { event, data } of songEvents(songId, { signal: done.signal })) {
      if (data.variation !== index) continue;
      if (event === "stems_progress") {
        show("running", data.progress);
      } else if (event === "stems" && !STEMS_ACTIVE.has(data.status)) {
        const stems = await api(path);
        if (!STEMS_ACTIVE.has(stems.status)) return stems;
      } else if (event === "stems") {
        show(data.status, 0);
      }
    }
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
  } finally {
    done.abort();
  }
  return pollStems(path, show);
}

async function pollStems(path, show) {
  let stems = await api(path);
  while (STEMS_ACTIVE.has(stems.status)) {
    show(stems.status, stems.progress);
    await new Promise((resolve) => setTimeout(resolve, STEMS_POLL_MS));
    stems = await api(path);
  }
  return stems;
}

async function makeStems(song, variation, box, button) {
  button.disabled = true;
  box.hidden = false;
  box.replaceChildren();
  const label = el("span", { class: "muted" }, "Separating stems…");
  const bar = el("progress", { max: "100", value: "0", "aria-label": `Stems of take ${variation.index + 1}` });
  box.append(el("div", { class: "bar-row", role: "status", "aria-live": "polite" }, [label, bar]));
  const show = (status, progress) => {
    bar.value = Math.round(progress * 100);
    label.textContent = status === "queued" ? "Stems: waiting to start…" : `Stems: ${bar.value}%`;
  };
  const path = `/v1/songs/${song.id}/variations/${variation.index}/stems`;
  try {
    let stems = await api(path, { method: "POST" });
    if (STEMS_ACTIVE.has(stems.status)) {
      show(stems.status, stems.progress);
      stems = await followStems(song.id, variation.index, path, show);
    }
    if (stems.status !== "succeeded") {
      throw new Error(stems.error?.message || "the stems could not be made");
    }
    box.replaceChildren(el("h3", {}, "Stems"));
    const list = el("ul", { class: "stem-list" });
    for (const stem of stems.stems) {
      const links = FORMAT_ORDER.filter((f) => stem.audio[f]).map((format) =>
        el("a", {
          class: "chip",
          href: stem.audio[format],
          download: `${stem.name}-take${variation.index + 1}.${format}`,
          "aria-label": `Download the ${stem.name} stem as ${format.toUpperCase()}`,
        }, format.toUpperCase()),
      );
      list.append(el("li", {}, [el("b", {}, stem.name), ...links]));
    }
    box.append(list);
  } catch (error) {
    box.replaceChildren(el("p", { class: "error", role: "alert" }, plainError(error)));
    button.disabled = false;
  }
}

function showEditForm(box, song, variation, task, onEdited) {
  const duration = variation.duration_s || song.request.duration_s || 30;
  const id = (name) => `edit-${variation.index}-${name}`;
  const field = (name, label, input) => {
    input.id = id(name);
    return el("div", { class: "field" }, [el("label", { for: input.id }, label), input]);
  };
  const style = el("input", { value: song.request.style || song.tags?.caption || "", maxlength: "1000" });
  const fields = [];
  let describe = "";
  if (task === "extend") {
    describe = "Continue this take with new music after its end.";
    fields.push(field("extend", "Seconds to add", el("input", { type: "number", min: "1", max: "595", value: "30" })));
  } else if (task === "repaint") {
    describe = "Make a span of this take anew; outside it the audio stays as it is.";
    const end = Math.min(duration, 10);
    fields.push(
      field("start", "From (seconds)", el("input", { type: "number", min: "0", max: String(duration), step: "0.5", value: "0" })),
      field("end", "To (seconds)", el("input", { type: "number", min: "0.5", max: String(duration), step: "0.5", value: String(end) })),
      field("lyrics", "New lyrics for the span (optional)", el("textarea", { rows: "3", maxlength: "5000" })),
    );
  } else {
    describe = "Render the whole take again in another style.";
    fields.push(field("strength", "How much of its structure to keep (0–1)", el("input", { type: "number", min: "0", max: "1", step: "0.05", value: "0.6" })));
  }
  fields.push(field("style", "Style", style));
  const error = el("p", { class: "error", role: "alert", hidden: "" });
  const submit = el("button", { type: "submit", class: "primary" }, `${capitalize(task)} take ${variation.index + 1}`);
  const form = el("form", { class: "edit-form", "data-task": task }, [
    el("p", { class: "muted" }, describe),
    el("div", { class: "grid" }, fields),
    error,
    submit,
  ]);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = (name) => form.querySelector(`#${id(name)}`)?.value.trim();
    const body = {
      task,
      source: { song: song.id, variation: variation.index },
      variations: 1,
      model: "auto",
    };
    if (value("style")) body.style = value("style");
    if (task === "extend") body.extend_s = Number(value("extend"));
    if (task === "repaint") {
      body.window = { start_s: Number(value("start")), end_s: Number(value("end")) };
      if (value("lyrics")) body.lyrics = value("lyrics");
    }
    if (task === "cover") body.cover_strength = Number(value("strength"));
    if (!body.style && !body.lyrics) body.style = song.tags?.caption || "same style";
    submit.disabled = true;
    error.hidden = true;
    try {
      const accepted = await api("/v1/songs", { method: "POST", json: body });
      onEdited(accepted.id);
    } catch (failure) {
      error.textContent = plainError(failure);
      error.hidden = false;
      submit.disabled = false;
    }
  });
  box.replaceChildren(form);
  box.hidden = false;
  form.querySelector("input, textarea")?.focus();
}
