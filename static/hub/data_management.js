// Restore form: upload with a progress bar, then show the server's answer. Without JavaScript
// the form posts normally and the page comes back with a message.
(function () {
  "use strict";
  var script = document.currentScript;
  var form = document.getElementById("restore-form");
  if (!form || !window.XMLHttpRequest) return;
  var bar = document.getElementById("restore-progress");
  var status = document.getElementById("restore-status");
  var button = document.getElementById("restore-button");

  function show(text, kind) {
    status.textContent = text;
    status.className = kind || "";
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = function (e) {
      if (e.lengthComputable) bar.value = Math.round((e.loaded / e.total) * 100);
    };
    xhr.upload.onload = function () {
      bar.value = 100;
      show(script.dataset.restoring, "muted");
    };
    xhr.onload = function () {
      button.disabled = false;
      var answer;
      try { answer = JSON.parse(xhr.responseText); } catch (e) { answer = { ok: false, message: xhr.status + " " + xhr.statusText }; }
      var message = answer.message || answer.error || "";
      if (answer.ok) show(message, "ok");
      else show(script.dataset.failed + " " + message, "error");
    };
    xhr.onerror = function () {
      button.disabled = false;
      show(script.dataset.network, "error");
    };
    button.disabled = true;
    bar.hidden = false;
    bar.value = 0;
    show(script.dataset.uploading, "muted");
    xhr.send(new FormData(form));
  });
})();
