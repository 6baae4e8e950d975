// Keeps a dashboard page current without reloading it: every 3 s it asks for the page again and
// swaps in the new <main>, unless the operator is filling in a form. Everything works without
// it (the pages are complete HTML); it only saves pressing reload.
(function () {
  "use strict";
  var main = document.querySelector("main[data-live]");
  if (!main || !window.fetch || !window.DOMParser) return;
  var busy = false;
  function typing() {
    var a = document.activeElement;
    return a && /^(INPUT|SELECT|TEXTAREA)$/.test(a.tagName);
  }
  function tick() {
    if (busy || typing() || document.hidden) return;
    busy = true;
    fetch(location.href, { credentials: "same-origin", headers: { "X-Palisade-Live": "1" } })
      .then(function (r) { return r.ok && !r.redirected ? r.text() : null; })
      .then(function (text) {
        if (!text) return;
        var next = new DOMParser().parseFromString(text, "text/html").querySelector("main[data-live]");
        if (next && next.innerHTML !== main.innerHTML) main.innerHTML = next.innerHTML;
        document.documentElement.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () {})
      .then(function () { busy = false; });
  }
  setInterval(tick, 3000);
})();
