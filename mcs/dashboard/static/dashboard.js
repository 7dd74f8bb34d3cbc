// Live refresh without a front-end framework: every element with data-refresh="URL" gets the server-rendered
// (and server-escaped) HTML of that URL again every data-refresh-s seconds of <body>. A part in which the person
// is typing or has a form focused is left alone until they leave it; a hidden tab does not poll.
(function () {
  "use strict";
  var every = Math.max(500, Number(document.body.dataset.refreshS || 3) * 1000);
  var state = document.querySelector(".live-state");

  function busy(element) {
    var active = document.activeElement;
    return active && active !== document.body && element.contains(active) &&
      /^(INPUT|SELECT|TEXTAREA|BUTTON)$/.test(active.tagName);
  }

  function refresh(element) {
    if (busy(element)) return Promise.resolve();
    var open = Array.prototype.map.call(element.querySelectorAll("details[open]"), function (d) { return d.id || d.textContent.slice(0, 80); });
    return fetch(element.dataset.refresh, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (response) {
        if (!response.ok) throw new Error(response.status);
        return response.text();
      })
      .then(function (html) {
        if (busy(element)) return;
        element.innerHTML = html;
        element.querySelectorAll("details").forEach(function (d) {
          if (open.indexOf(d.id || d.textContent.slice(0, 80)) >= 0) d.open = true;
        });
        if (state) { state.textContent = "live"; state.classList.remove("stale"); }
      })
      .catch(function () {
        if (state) { state.textContent = "not answering"; state.classList.add("stale"); }
      });
  }

  setInterval(function () {
    if (document.hidden) return;
    document.querySelectorAll("[data-refresh]").forEach(refresh);
  }, every);
})();
