// The report's only script: sortable tables, the neuron list's filters, the simulation picker and the
// "show every value" switch. Pages work without it (all simulations shown, tables in file order).
(function () {
  "use strict";
  function cellValue(cell) {
    var raw = cell.getAttribute("data-value");
    if (raw === null) { raw = cell.textContent.trim(); }
    var num = parseFloat(raw);
    return isNaN(num) || !/^[-+]?[0-9.]/.test(raw) ? raw.toLowerCase() : num;
  }
  function sortBy(table, index, header) {
    var body = table.tBodies[0];
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellValue(a.cells[index]), y = cellValue(b.cells[index]);
      var xn = typeof x === "number", yn = typeof y === "number";
      var cmp = xn && yn ? x - y : xn ? -1 : yn ? 1 : (x < y ? -1 : x > y ? 1 : 0);
      return ascending ? cmp : -cmp;
    });
    Array.prototype.forEach.call(header.parentNode.cells, function (th) { th.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    rows.forEach(function (row) { body.appendChild(row); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
      var button = document.createElement("button");
      button.className = "sort";
      button.type = "button";
      button.textContent = th.textContent;
      th.textContent = "";
      th.appendChild(button);
      button.addEventListener("click", function () { sortBy(table, index, th); });
    });
  });
  var list = document.getElementById("neuron-list");
  if (list) {
    var text = document.getElementById("filter-text");
    var best = document.getElementById("filter-best");
    var layerMin = document.getElementById("filter-layer-min");
    var layerMax = document.getElementById("filter-layer-max");
    var count = document.getElementById("filter-count");
    var apply = function () {
      var needle = text.value.trim().toLowerCase(), shown = 0;
      var lo = layerMin.value === "" ? -Infinity : Number(layerMin.value);
      var hi = layerMax.value === "" ? Infinity : Number(layerMax.value);
      Array.prototype.forEach.call(list.tBodies[0].rows, function (row) {
        var layer = Number(row.getAttribute("data-layer"));
        var ok = (!needle || row.textContent.toLowerCase().indexOf(needle) >= 0) &&
                 (!best.value || row.getAttribute("data-best") === best.value) && layer >= lo && layer <= hi;
        row.hidden = !ok;
        if (ok) { shown += 1; }
      });
      count.textContent = shown + " of " + list.tBodies[0].rows.length + " neurons shown";
    };
    [text, best, layerMin, layerMax].forEach(function (el) { el.addEventListener("input", apply); });
    apply();
  }
  var picker = document.getElementById("sim-picker");
  if (picker) {
    var show = function () {
      document.querySelectorAll("[data-sim]").forEach(function (el) {
        el.hidden = picker.value !== "all" && el.getAttribute("data-sim") !== picker.value;
      });
    };
    picker.addEventListener("change", show);
    show();
  }
  var all = document.getElementById("allvalues");
  if (all) {
    var toggle = function () { document.body.classList.toggle("allvalues", all.checked); };
    all.addEventListener("change", toggle);
    toggle();
  }
}());
