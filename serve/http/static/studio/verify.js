// Drop a file, see its content credentials (C2PA) and watermark result (POST /v1/verify).

import { api, plainError } from "./api.js";
import { el, formatDate } from "./dom.js";

export class VerifyView {
  constructor() {
    this.$ = (id) => document.getElementById(id);
    const zone = this.$("dropzone");
    const input = this.$("verify-file");
    input.addEventListener("change", () => {
      if (input.files.length) this.check(input.files[0]);
    });
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      const file = event.dataTransfer?.files?.[0];
      if (file) this.check(file);
    });
  }

  async check(file) {
    const report = this.$("verify-report");
    report.replaceChildren(el("p", { class: "muted" }, `Checking ${file.name}…`));
    const form = new FormData();
    form.append("file", file, file.name);
    try {
      const result = await api("/v1/verify", { method: "POST", form });
      report.replaceChildren(renderReport(file.name, result));
    } catch (error) {
      report.replaceChildren(el("p", { class: "error", role: "alert" }, plainError(error)));
    } finally {
      this.$("verify-file").value = "";
    }
  }
}

function renderReport(name, result) {
  const c2pa = result.c2pa;
  const manifest = c2pa.manifest || {};
  let verdict;
  let tone;
  if (!c2pa.present) {
    verdict = "No content credentials: this file carries no C2PA manifest.";
    tone = "warn";
  } else if (!c2pa.valid) {
    verdict = "Content credentials are present but do NOT validate: the file was altered after signing.";
    tone = "bad";
  } else if (c2pa.trusted) {
    verdict = "Valid content credentials from a trusted signer.";
    tone = "good";
  } else {
    verdict = "Valid content credentials: the file is as it was signed. The signer is not on a trusted list (a self-hosted certificate).";
    tone = "good";
  }
  const generation = manifest.generation || {};
  const facts = [
    ["File", `${name} (${result.format})`],
    ["C2PA manifest", c2pa.present ? "present" : "absent"],
    ["Valid", c2pa.present ? (c2pa.valid ? "yes" : "no") : "—"],
    ["Trusted signer", c2pa.present ? (c2pa.trusted ? "yes" : "no") : "—"],
  ];
  if (manifest.signer?.common_name) facts.push(["Signed by", manifest.signer.common_name]);
  if (manifest.title) facts.push(["Title", manifest.title]);
  if (generation.model_id) {
    facts.push(["Made by", [generation.model_id, generation.model_version].filter(Boolean).join(" ")]);
  }
  if (generation.seed !== undefined && generation.seed !== null) facts.push(["Seed", generation.seed]);
  if (generation.created) facts.push(["Created", formatDate(generation.created)]);
  for (const action of manifest.actions || []) facts.push(["Action", action.action]);
  facts.push(["Watermark", watermarkText(result.watermark)]);

  const card = el("section", { class: `report report-${tone}`, "aria-label": `Report for ${name}`, "data-valid": String(Boolean(c2pa.valid)) }, [
    el("h2", {}, verdict),
    el("dl", { class: "facts" }, facts.map(([term, value]) => el("div", {}, [el("dt", {}, term), el("dd", {}, String(value))]))),
  ]);
  for (const problem of c2pa.errors || []) {
    card.append(el("p", { class: "error" }, problem.explanation || problem.code || JSON.stringify(problem)));
  }
  if (c2pa.manifest) {
    card.append(el("details", {}, [el("summary", {}, "The whole manifest"), el("pre", {}, JSON.stringify(c2pa.manifest, null, 2))]));
  }
  return card;
}

function watermarkText(watermark) {
  if (watermark === "not configured") return "not checked (this server has no watermark detector configured)";
  const score = `score ${watermark.score.toFixed(2)}`;
  return watermark.detected ? `detected (${score})` : `not detected (${score})`;
}
