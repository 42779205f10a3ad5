// Loaded by hello.html: proves that a second request on the page worked, then asks /stats
// which process (and which step) answered.
(function () {
  var status = document.getElementById("script-status");
  status.textContent = "ran";
  status.style.color = "green";

  fetch("/stats")
    .then(function (response) { return response.json(); })
    .then(function (stats) {
      document.getElementById("server").textContent = stats.step;
      document.getElementById("stats").textContent = JSON.stringify(stats, null, 2);
    })
    .catch(function (error) {
      document.getElementById("stats").textContent = "could not load /stats: " + error;
    });
})();
