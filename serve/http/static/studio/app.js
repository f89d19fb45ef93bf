// The studio: views behind the hash (#/create, #/song/ID, #/library, #/verify), and the key
// dialog that opens when the server asks for an API key.

import * as API from "./api.js";
import { CreateView } from "./create.js";
import { LibraryView } from "./library.js";
import { SongView } from "./song.js";
import { VerifyView } from "./verify.js";

const VIEWS = ["create", "song", "library", "verify"];
const TITLES = { create: "Make a song", song: "Song", library: "Your songs", verify: "Check a file" };
const $ = (id) => document.getElementById(id);

function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

const create = new CreateView({ navigate });
const song = new SongView({
  navigate,
  onReuse: (source) => {
    create.fill(source);
    navigate("#/create");
  },
});
const library = new LibraryView();
const verify = new VerifyView();

let firstRoute = true;

function route() {
  const match = location.hash.match(/^#\/([a-z]+)(?:\/([\w-]+))?$/);
  let view = match && VIEWS.includes(match[1]) ? match[1] : "create";
  const argument = match?.[2];
  if (view === "song" && !argument) view = "library";
  for (const name of VIEWS) $(`view-${name}`).hidden = name !== view;
  document.querySelectorAll("[data-nav]").forEach((link) => {
    if (link.dataset.nav === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  });
  document.title = `${TITLES[view]} · songserve studio`;
  if (view !== "song") song.close();
  if (view === "create") create.loadOptions();
  if (view === "song") song.show(argument);
  if (view === "library") library.show();
  if (!firstRoute) $(`view-${view}`).querySelector("h1").focus();
  firstRoute = false;
}

// -- the API key ---------------------------------------------------------------------------------

const dialog = $("key-dialog");
let answer = null; // resolves the prompt that opened the dialog

function showKeyDialog(reason) {
  $("key-input").value = "";
  $("key-error").textContent = reason || "";
  $("key-error").hidden = !reason;
  $("key-forget").hidden = !API.storedKey();
  $("key-button").hidden = false;
  if (!dialog.open) dialog.showModal();
  $("key-input").focus();
}

// What the API module calls when the server wants a key: true once the user gave one.
function askForKey(reason) {
  showKeyDialog(reason);
  return new Promise((resolve) => {
    answer = resolve;
  });
}

function settle(given) {
  const resolve = answer;
  answer = null;
  if (dialog.open) dialog.close();
  resolve?.(given);
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("key-input").value.trim();
  if (!key) {
    $("key-error").textContent = "Paste the key first.";
    $("key-error").hidden = false;
    return;
  }
  const asked = answer !== null;
  API.storeKey(key);
  settle(true);
  if (!asked) reloadWithKey(); // opened from the header: show this key's songs
});
$("key-forget").addEventListener("click", () => {
  API.storeKey("");
  settle(false);
  reloadWithKey();
});
dialog.addEventListener("cancel", () => settle(false));
$("key-button").addEventListener("click", () => showKeyDialog(""));

function reloadWithKey() {
  create.loadOptions(true);
  route();
}

API.onKeyNeeded(askForKey);
$("key-button").hidden = !API.storedKey();

window.addEventListener("hashchange", route);
route();
