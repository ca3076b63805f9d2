// The probe terminal on an endpoint's availability page: refetches its lines (the export's
// format, newest last) every few seconds while the page is visible. No library, no CDN.
(function () {
  "use strict";
  var terminal = document.getElementById("probe-terminal");
  if (!terminal || !terminal.dataset.src) return;
  var status = document.getElementById("terminal-status");
  var every = parseInt(terminal.dataset.refreshMs, 10) || 5000;
  var timer = null;

  function atBottom() {
    return terminal.scrollHeight - terminal.scrollTop - terminal.clientHeight < 24;
  }

  function show(text) {
    var follow = atBottom();
    if (text) {
      terminal.textContent = text;
    } else {
      terminal.textContent = "";
      var empty = document.createElement("span");
      empty.className = "muted";
      empty.textContent = terminal.dataset.empty;
      terminal.appendChild(empty);
    }
    if (follow) terminal.scrollTop = terminal.scrollHeight;
  }

  function refresh() {
    timer = null;
    fetch(terminal.dataset.src, { credentials: "same-origin", headers: { Accept: "text/plain" } })
      .then(function (response) {
        var type = response.headers.get("Content-Type") || "";
        if (!response.ok || type.indexOf("text/plain") !== 0) {
          throw new Error(response.status === 200 ? "signed out?" : "HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (text) {
        show(text);
        terminal.dataset.updated = new Date().toISOString();
        if (status) status.textContent = status.dataset.ok || status.textContent;
        terminal.classList.remove("stale");
      })
      .catch(function (error) {
        terminal.classList.add("stale");
        if (status) status.textContent = "⚠ " + error.message;
      })
      .then(schedule);
  }

  function schedule() {
    if (timer === null && !document.hidden) timer = window.setTimeout(refresh, every);
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden && timer !== null) {
      window.clearTimeout(timer);
      timer = null;
    } else if (!document.hidden) {
      schedule();
    }
  });
  if (status) status.dataset.ok = status.textContent;
  terminal.scrollTop = terminal.scrollHeight;
  schedule();
})();
