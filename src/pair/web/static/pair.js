// PAIR portal helpers (vanilla JS, no build step).
"use strict";
window.PAIR = window.PAIR || {};
PAIR.csrf = function () {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
};
// Confirm destructive actions: <form data-confirm="Really delete?">
document.addEventListener("submit", function (ev) {
  const source = ev.submitter && ev.submitter.hasAttribute("data-confirm") ? ev.submitter : ev.target;
  const msg = source.getAttribute && source.getAttribute("data-confirm");
  if (msg && !window.confirm(msg)) ev.preventDefault();
});
// Clickable table rows keep links as the real targets (keyboard users tab to the link).
document.addEventListener("click", function (ev) {
  const row = ev.target.closest && ev.target.closest("tr[data-href]");
  if (row && !ev.target.closest("a,button,input,select,label")) window.location = row.dataset.href;
});
// "Go back" links: <a href="/" data-history-back> (no javascript: URLs under the CSP).
document.addEventListener("click", function (ev) {
  const link = ev.target.closest && ev.target.closest("a[data-history-back]");
  if (link && window.history.length > 1) { ev.preventDefault(); window.history.back(); }
});
