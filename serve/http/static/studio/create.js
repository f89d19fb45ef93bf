// The create form: description mode (an idea) or custom mode (lyrics with section tags, drafted
// by POST /v1/lyrics on request), a style with tag suggestions from POST /v1/tags/normalize, and
// the options: length, takes, model (GET /v1/pools), LoRA (GET /v1/loras), seed.

import { api, plainError } from "./api.js";
import { el } from "./dom.js";

const SUGGEST_DELAY_MS = 350;
// The form control to bring the user to when the API names a field.
const FIELD_INPUTS = {
  prompt: "idea",
  lyrics: "lyrics",
  style: "style",
  title: "title",
  duration_s: "duration",
  variations: "variations",
  model: "model",
  lora: "lora",
  seed: "seed",
  instrumental: "instrumental",
};

export class CreateView {
  constructor({ navigate }) {
    this.navigate = navigate;
    this.$ = (id) => document.getElementById(id);
    this.form = this.$("create-form");
    this.optionsLoaded = false;
    this.suggestTimer = 0;
    this.suggestSeq = 0;

    this.form.addEventListener("change", (event) => {
      if (event.target.name === "mode") this.showMode();
    });
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.form.querySelectorAll("[data-section]").forEach((button) =>
      button.addEventListener("click", () => this.insertSection(button.dataset.section)),
    );
    this.$("write-lyrics").addEventListener("click", () => this.writeLyrics());
    this.$("style").addEventListener("input", () => this.suggestSoon());
    this.$("instrumental").addEventListener("change", () => this.suggestSoon());
    this.$("lora").addEventListener("change", () => {
      this.$("lora-scale").disabled = !this.$("lora").value;
    });
    this.showMode();
  }

  get mode() {
    return this.form.querySelector('input[name="mode"]:checked').value;
  }

  setMode(mode) {
    this.form.querySelector(`input[name="mode"][value="${mode}"]`).checked = true;
    this.showMode();
  }

  showMode() {
    const mode = this.mode;
    this.form.querySelectorAll("[data-mode]").forEach((block) => {
      block.hidden = block.dataset.mode !== mode;
    });
  }

  // The model and LoRA pickers, from the server (once; again after a key is given).
  async loadOptions(force = false) {
    if (this.optionsLoaded && !force) return;
    this.optionsLoaded = true;
    const [pools, loras] = await Promise.allSettled([api("/v1/pools"), api("/v1/loras")]);
    if (pools.status === "fulfilled") {
      const select = this.$("model");
      const chosen = select.value;
      const seen = new Map();
      for (const pool of pools.value.pools) {
        const known = seen.get(pool.model);
        if (!known || (!known.placeable && pool.placeable)) seen.set(pool.model, pool);
      }
      select.replaceChildren(el("option", { value: "auto" }, "Automatic"));
      for (const [model, pool] of seen) {
        const label = pool.placeable ? model : `${model} (unavailable: ${pool.reason || "not placed"})`;
        select.append(el("option", { value: model, disabled: !pool.placeable }, label));
      }
      if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
    } else {
      this.optionsLoaded = false;
    }
    if (loras.status === "fulfilled") {
      const select = this.$("lora");
      const chosen = select.value;
      select.replaceChildren(el("option", { value: "" }, "None"));
      for (const lora of loras.value.loras) {
        select.append(el("option", { value: lora.id }, `${lora.id} (${lora.model})`));
      }
      if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
      this.$("lora-scale").disabled = !select.value;
    } else {
      this.optionsLoaded = false;
    }
  }

  insertSection(tag) {
    const area = this.$("lyrics");
    const { selectionStart: start, selectionEnd: end, value } = area;
    const before = value.slice(0, start);
    const lead = before === "" || before.endsWith("\n\n") ? "" : before.endsWith("\n") ? "\n" : "\n\n";
    const text = `${lead}[${tag}]\n`;
    area.setRangeText(text, start, end, "end");
    area.focus();
  }

  async writeLyrics() {
    const status = this.$("lyrics-status");
    const about = this.$("lyrics-about").value.trim() || this.$("title").value.trim();
    if (!about) {
      status.textContent = "Say what the song is about first.";
      this.$("lyrics-about").focus();
      return;
    }
    const button = this.$("write-lyrics");
    button.disabled = true;
    status.textContent = "Writing lyrics…";
    const body = { prompt: about, duration_s: this.duration() };
    const style = this.$("style").value.trim();
    if (style) body.style = style;
    try {
      const written = await api("/v1/lyrics", { method: "POST", json: body });
      this.$("lyrics").value = written.lyrics;
      const by = written.source.model ? `${written.source.engine} (${written.source.model})` : written.source.engine;
      status.textContent = `Lyrics written by ${by}: edit them as you like.`;
    } catch (error) {
      status.textContent = plainError(error);
    } finally {
      button.disabled = false;
    }
  }

  suggestSoon() {
    clearTimeout(this.suggestTimer);
    this.suggestTimer = setTimeout(() => this.suggest(), SUGGEST_DELAY_MS);
  }

  async suggest() {
    const box = this.$("style-suggestions");
    const text = this.$("style").value.trim();
    const seq = ++this.suggestSeq;
    if (!text) {
      box.replaceChildren();
      return;
    }
    let tags;
    try {
      tags = await api("/v1/tags/normalize", {
        method: "POST",
        json: { text, instrumental: this.$("instrumental").checked },
      });
    } catch {
      return; // suggestions are a nicety: the style is sent as typed either way
    }
    if (seq !== this.suggestSeq) return; // the user typed on
    const have = text.toLowerCase();
    const candidates = [
      tags.genre,
      tags.subgenre,
      ...tags.moods,
      ...tags.instruments,
      tags.vocal && tags.vocal !== "none" && tags.vocal !== "instrumental" ? `${tags.vocal} vocals` : null,
      `${tags.bpm} bpm`,
      tags.key,
    ].filter((tag) => tag && !have.includes(String(tag).toLowerCase()));
    box.replaceChildren(
      ...[...new Set(candidates)].map((tag) => {
        const chip = el("button", { type: "button", class: "chip suggestion", "aria-label": `Add ${tag} to the style` }, `+ ${tag}`);
        chip.addEventListener("click", () => this.addStyleTag(tag, chip));
        return chip;
      }),
    );
  }

  addStyleTag(tag, chip) {
    const input = this.$("style");
    const value = input.value.trim().replace(/,\s*$/, "");
    input.value = value ? `${value}, ${tag}` : tag;
    const next = chip.nextElementSibling || chip.previousElementSibling;
    chip.remove();
    (next || input).focus();
  }

  duration() {
    const value = Number(this.$("duration").value);
    return Number.isFinite(value) && value > 0 ? value : 30;
  }

  body() {
    const value = (id) => this.$(id).value.trim();
    const body = {
      duration_s: this.duration(),
      variations: Number(this.$("variations").value),
      model: this.$("model").value || "auto",
    };
    if (this.mode === "description") {
      if (value("idea")) body.prompt = value("idea");
      body.instrumental = this.$("instrumental").checked;
    } else {
      if (value("lyrics")) body.lyrics = value("lyrics");
      if (value("title")) body.title = value("title");
    }
    if (value("style")) body.style = value("style");
    if (this.$("lora").value) {
      body.lora = { id: this.$("lora").value, scale: Number(this.$("lora-scale").value) };
    }
    if (value("seed") !== "") body.seed = Number(value("seed"));
    return body;
  }

  async submit() {
    const error = this.$("create-error");
    error.hidden = true;
    const body = this.body();
    if (!body.prompt && !body.lyrics && !body.style) {
      const first = this.mode === "description" ? "idea" : "lyrics";
      this.showError(
        this.mode === "description"
          ? "Describe the song first: an idea, a style, or both."
          : "Add lyrics or a style first (or draft lyrics with “Write lyrics”).",
        first,
      );
      return;
    }
    const button = this.$("create-submit");
    button.disabled = true;
    button.textContent = "Creating…";
    try {
      const accepted = await api("/v1/songs", { method: "POST", json: body });
      this.navigate(`#/song/${accepted.id}`);
    } catch (failure) {
      this.showError(plainError(failure), FIELD_INPUTS[failure.field]);
    } finally {
      button.disabled = false;
      button.textContent = "Create song";
    }
  }

  showError(text, inputId) {
    const error = this.$("create-error");
    error.textContent = text;
    error.hidden = false;
    if (inputId && this.$(inputId)) {
      const input = this.$(inputId);
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", "create-error");
      input.addEventListener("input", () => input.removeAttribute("aria-invalid"), { once: true });
      input.focus();
    }
  }

  // "Reuse": the form as the song was asked for.
  fill(song) {
    const request = song.request;
    this.setMode(request.lyrics && request.task === "text2music" ? "custom" : "description");
    this.$("idea").value = request.prompt || "";
    this.$("instrumental").checked = Boolean(request.instrumental);
    this.$("lyrics").value = request.lyrics || "";
    this.$("title").value = request.title || "";
    this.$("style").value = request.style || "";
    this.$("duration").value = String(Math.round(request.duration_s || 30));
    this.$("variations").value = String(request.variations || 2);
    const model = this.$("model");
    if (![...model.options].some((o) => o.value === request.model)) {
      model.append(el("option", { value: request.model }, request.model));
    }
    model.value = request.model || "auto";
    const lora = this.$("lora");
    if (request.lora && ![...lora.options].some((o) => o.value === request.lora.id)) {
      lora.append(el("option", { value: request.lora.id }, request.lora.id));
    }
    lora.value = request.lora?.id || "";
    this.$("lora-scale").value = String(request.lora?.scale ?? 1);
    this.$("lora-scale").disabled = !lora.value;
    this.$("seed").value = request.seed ?? "";
    this.$("create-error").hidden = true;
    this.suggestSoon();
  }
}
