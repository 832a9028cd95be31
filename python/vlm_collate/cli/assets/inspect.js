(function () {
  var tip = document.getElementById("tip");
  function describe(el) {
    var ids = JSON.parse(el.dataset.ids), labels = JSON.parse(el.dataset.labels);
    if (el.classList.contains("media")) {
      var label = labels.every(function (l) { return l === -100; }) ? "-100 (ignored)"
        : "TARGET (a media placeholder is labelled)";
      return el.dataset.kind + " placeholder id " + ids[0] + " x " + ids.length +
        "\nlabel " + label;
    }
    return ids.map(function (id, k) {
      var l = labels[k];
      return "id " + id + "  label " + l + (l === -100 ? " (ignored)" : " (target)");
    }).join("\n");
  }
  document.addEventListener("mouseover", function (event) {
    var el = event.target.closest ? event.target.closest("[data-ids]") : null;
    if (!el) { tip.style.display = "none"; return; }
    tip.textContent = describe(el);
    tip.style.display = "block";
  });
  document.addEventListener("mousemove", function (event) {
    tip.style.left = (event.clientX + 14) + "px";
    tip.style.top = (event.clientY + 14) + "px";
  });
})();
