// digital-employee web console: the live task timeline and confirmations. No inline
// script anywhere (the Content-Security-Policy forbids it); htmx does the partial updates.
(function () {
  "use strict";

  // Forms and buttons with data-confirm ask first (delete, revoke, cancel).
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    var text = form.getAttribute("data-confirm");
    if (text && !window.confirm(text)) {
      ev.preventDefault();
    }
  }, true);

  // The live timeline: server-rendered <li> fragments arrive over Server-Sent Events and
  // are appended; when the task ends the summary (status, result) is fetched again.
  function follow(list) {
    var src = list.getAttribute("data-live");
    if (!src || typeof window.EventSource === "undefined") {
      return;
    }
    var es = new EventSource(src);
    es.addEventListener("step", function (ev) {
      var tpl = document.createElement("template");
      tpl.innerHTML = ev.data;
      var item = tpl.content.firstElementChild;
      if (item && !document.getElementById(item.id)) {
        list.appendChild(item);
      }
      refreshSummary();
    });
    es.addEventListener("end", function () {
      es.close();
      list.removeAttribute("data-live");
      refreshSummary();
    });
  }

  function refreshSummary() {
    var box = document.getElementById("task-summary");
    if (!box || !window.htmx) {
      return;
    }
    window.htmx.ajax("GET", box.getAttribute("data-src"), { target: "#task-summary", swap: "outerHTML" });
  }

  // htmx leaves error answers unswapped: say what the server said instead.
  document.addEventListener("htmx:responseError", function (ev) {
    var xhr = ev.detail.xhr;
    var text = "The request failed (" + xhr.status + ").";
    try {
      var doc = new DOMParser().parseFromString(xhr.responseText, "text/html");
      var msg = doc.getElementById("error-message");
      if (msg) {
        text = msg.textContent;
      }
    } catch (e) {
      // keep the generic text
    }
    window.alert(text);
  });

  document.addEventListener("DOMContentLoaded", function () {
    var lists = document.querySelectorAll("ol[data-live]");
    for (var i = 0; i < lists.length; i++) {
      follow(lists[i]);
    }
  });
})();
