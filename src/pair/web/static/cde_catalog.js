// CDE catalogue: filter the table rows as the user types (a static file: the CSP forbids
// inline scripts).
"use strict";
(function () {
  const box = document.getElementById("cde-filter");
  if (!box) return;
  box.addEventListener("input", function () {
    const q = box.value.trim().toLowerCase();
    document.querySelectorAll("#cde-table tbody tr").forEach(function (tr) { tr.hidden = q !== "" && tr.dataset.search.indexOf(q) < 0; });
  });
})();
