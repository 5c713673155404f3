// The audit viewer's live tail. Every few seconds it asks for the records newer than the
// newest one shown, with the same filters, and puts them on top. Without JavaScript the
// viewer works the same way, refreshed by hand; nothing that changes state depends on this.
(function () {
  "use strict";
  var state = document.getElementById("tail-state");
  var body = document.querySelector("table.audit tbody");
  if (!state || !body) return;
  var url = state.getAttribute("data-tail");
  var glue = url.charAt(url.length - 1) === "?" ? "" : "&";
  var paused = false;
  var button = document.createElement("button");
  button.type = "button";
  button.className = "secondary small";
  button.textContent = "Pause";
  button.addEventListener("click", function () {
    paused = !paused;
    button.textContent = paused ? "Resume" : "Pause";
    label.textContent = paused ? "Live tail paused. " : "Live: newer records appear on top. ";
  });
  var label = document.createElement("span");
  label.setAttribute("role", "status");
  label.textContent = "Live: newer records appear on top. ";
  state.textContent = "";
  state.appendChild(label);
  state.appendChild(button);

  function newest() {
    var row = body.querySelector("tr[data-id]");
    return row ? row.getAttribute("data-id") : "0";
  }
  function schedule() {
    window.setTimeout(poll, 2000);
  }
  function poll() {
    if (paused || document.hidden) return schedule();
    fetch(url + glue + "after=" + encodeURIComponent(newest()), { credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error("status " + response.status);
        return response.text();
      })
      .then(function (html) {
        // The server rendered (and escaped) these rows, newest first.
        var holder = document.createElement("tbody");
        holder.innerHTML = html;
        var rows = Array.prototype.slice.call(holder.querySelectorAll("tr[data-id]"));
        for (var i = rows.length - 1; i >= 0; i--) {
          rows[i].classList.add("fresh");
          body.insertBefore(rows[i], body.firstChild);
        }
        while (body.rows.length > 500) body.deleteRow(body.rows.length - 1);
      })
      .catch(function () {
        label.textContent = "Live tail interrupted; retrying. ";
      })
      .then(schedule);
  }
  schedule();
})();
