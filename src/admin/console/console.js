// Live refresh of the overview: every few seconds the page is fetched again
// and its #live part replaced. Everything else works without this script.
(function () {
  "use strict";
  var stamp = document.getElementById("updated");
  var live = document.getElementById("live");
  if (!stamp || !live) {
    return;
  }
  var seconds = parseInt(stamp.getAttribute("data-refresh"), 10) || 5;
  function refresh() {
    // Not while hidden, and not while someone is on a control of the part
    // that would be replaced (keyboard focus would be lost).
    if (document.hidden || live.contains(document.activeElement)) {
      return;
    }
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        var page = new DOMParser().parseFromString(html, "text/html");
        var fresh = page.getElementById("live");
        var freshStamp = page.getElementById("updated");
        if (fresh && !live.contains(document.activeElement)) {
          live.replaceChildren.apply(live, Array.prototype.slice.call(fresh.childNodes).map(function (n) {
            return document.importNode(n, true);
          }));
        }
        if (freshStamp) {
          stamp.textContent = freshStamp.textContent;
        }
      })
      .catch(function (e) {
        stamp.textContent = "Refresh failed (" + e.message + "); the figures may be old";
      });
  }
  window.setInterval(refresh, seconds * 1000);
}());
