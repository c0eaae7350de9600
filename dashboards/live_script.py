"""The live page's script, kept as a string so it ships inside the package with no data files.

It polls ``/api/study`` and redraws with ``Plotly.react`` only when the study's version changed.
Stored text (study names, facts, table cells) goes into the page with ``textContent`` only.
When a study is drawn it sets ``data-version`` on ``<body>``, which tests wait for. A figure
element whose figure the study lacks (the latency scatter, without latencies) is emptied and
hidden; the supernet-estimate columns and note appear for one-shot studies only.
"""

LIVE_JS = r"""
"use strict";
(function () {
  var poll = Number(document.currentScript.dataset.poll || 3) * 1000;
  var select = document.getElementById("studies");
  var status = document.getElementById("status");
  var current = new URLSearchParams(window.location.search).get("study");
  var drawn = null;
  var config = {responsive: true, displaylogo: false};

  function element(tag, text, className) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function percent(value, digits) {
    return value === null ? "\u2013" : (100 * value).toFixed(digits) + "%";
  }

  function si(value) {  // as dashboards.figures.si: 1.5e8 -> 150M
    if (value === null) return "\u2013";
    var scales = [[1e9, "G"], [1e6, "M"], [1e3, "k"], [1, ""]];
    for (var i = 0; i < scales.length; i++) {
      if (Math.abs(value) >= scales[i][0] || i === scales.length - 1) {
        return Number((value / scales[i][0]).toPrecision(4)).toString() + scales[i][1];
      }
    }
  }

  function withInterval(value, interval) {  // as page._with_interval
    var cell = element("td", percent(value, 2));
    if (value !== null && interval) {
      cell.appendChild(element("br"));
      cell.appendChild(element("small", "[" + (100 * interval[0]).toFixed(1) + ", "
        + (100 * interval[1]).toFixed(1) + "]"));
    }
    return cell;
  }

  function meanSd(mean, sd) {
    if (mean === null) return "\u2013";
    return percent(mean, 2) + (sd === null ? "" : " \u00b1 " + (100 * sd).toFixed(2));
  }

  function drawConfirmed(rows, oneshot) {  // as page.confirmed_table_html
    var box = document.getElementById("confirmed");
    box.replaceChildren();
    if (!rows.length) {
      box.appendChild(element("p", "No architecture was trained with more than one seed yet."));
      return;
    }
    var table = element("table");
    var head = element("tr");
    ["trial", "kind", "runs", "accuracy, mean \u00b1 sd"].concat(
      oneshot ? ["supernet estimate"] : [],
      ["test, mean \u00b1 sd", "paper MACs", "parts"]).forEach(function (title) {
      head.appendChild(element("th", title, title === "parts" ? "parts" : ""));
    });
    table.appendChild(head);
    rows.forEach(function (row) {
      var line = element("tr");
      line.appendChild(element("td", row.number));
      line.appendChild(element("td", row.kind, "kind"));
      line.appendChild(element("td", row.runs + " (trials " + row.trials.join(", ") + ")"));
      line.appendChild(element("td", meanSd(row.accuracy_mean, row.accuracy_sd)));
      if (oneshot) line.appendChild(element("td", percent(row.estimated_accuracy, 2)));
      line.appendChild(element("td", meanSd(row.test_mean, row.test_sd)));
      line.appendChild(element("td", si(row.paper_macs)));
      line.appendChild(element("td", row.parts_summary, "parts"));
      table.appendChild(line);
    });
    box.appendChild(table);
  }

  function ms(value) {  // as dashboards.figures.ms: 12.345 -> 12.3
    if (value === null) return "\u2013";
    var size = Math.abs(value);
    return value.toFixed(size < 10 ? 2 : size < 100 ? 1 : 0);
  }

  function listStudies() {
    return fetch("/api/studies", {cache: "no-store"}).then(function (answer) {
      return answer.json();
    }).then(function (data) {
      if (current === null) current = data["default"];
      var names = data.studies.map(function (s) { return s.name; });
      var same = select.options.length === names.length && names.every(function (n, i) {
        return select.options[i].value === n;
      });
      if (!same) {
        select.replaceChildren();
        data.studies.forEach(function (s) {
          var label = s.name + (s.backbone ? " \u2014 " + s.backbone : "")
            + (s.dataset ? " on " + s.dataset : "");
          var option = element("option", label);
          option.value = s.name;
          select.appendChild(option);
        });
      }
      select.value = current;
    });
  }

  function drawFacts(facts) {
    var box = document.getElementById("facts");
    box.replaceChildren();
    facts.forEach(function (pair) {
      var span = element("span");
      span.appendChild(element("b", pair[0]));
      span.appendChild(document.createTextNode(" " + pair[1]));
      box.appendChild(span);
    });
  }

  function drawTable(rows, latency, oneshot) {  // as page.top_table_html
    var box = document.getElementById("top");
    box.replaceChildren();
    if (!rows.length) {
      box.appendChild(element("p", "No trial has finished all its epochs within the budget yet."));
      return;
    }
    var table = element("table");
    var head = element("tr");
    var titles = ["rank", "trial", "kind", "accuracy"].concat(
      oneshot ? ["supernet estimate"] : [], ["test", "paper MACs", "of budget", "params"],
      latency ? ["latency (ms)"] : [], ["front", "parts"]);
    titles.forEach(function (title) {
      head.appendChild(element("th", title, title === "parts" ? "parts" : ""));
    });
    table.appendChild(head);
    rows.forEach(function (row) {
      var line = element("tr");
      [row.rank, row.number].forEach(function (v) { line.appendChild(element("td", v)); });
      line.appendChild(element("td", row.kind, "kind"));
      line.appendChild(withInterval(row.accuracy, row.accuracy_interval));
      if (oneshot) line.appendChild(element("td", percent(row.estimated_accuracy, 2)));
      line.appendChild(withInterval(row.test_accuracy, row.test_interval));
      line.appendChild(element("td", si(row.paper_macs)));
      line.appendChild(element("td", percent(row.budget_share, 1)));
      line.appendChild(element("td", si(row.params)));
      if (latency) line.appendChild(element("td", ms(row.latency_ms)));
      line.appendChild(element("td", row.on_front ? "\u2713" : ""));
      var parts = element("td", row.parts_summary, "parts");
      parts.appendChild(element("br"));
      parts.appendChild(element("code", row.parts.join(" ")));
      line.appendChild(parts);
      table.appendChild(line);
    });
    box.appendChild(table);
  }

  function refresh() {
    var name = current;
    return fetch("/api/study?name=" + encodeURIComponent(name), {cache: "no-store"})
      .then(function (answer) {
        return answer.json().then(function (body) { return {ok: answer.ok, body: body}; });
      }).then(function (answer) {
        if (name !== current) return;
        if (!answer.ok) {
          status.textContent = answer.body.error;
          return;
        }
        var data = answer.body;
        if (data.version !== drawn) {
          document.getElementById("title").textContent = "HetNAS study \u201c" + data.name
            + "\u201d";
          drawFacts(data.facts);
          document.querySelectorAll("div.figure").forEach(function (box) {
            var figure = data.figures[box.id];
            if (figure) {
              box.hidden = false;
              Plotly.react(box, figure.data, figure.layout, config);
            } else if (!box.hidden) {
              Plotly.purge(box);
              box.hidden = true;
            }
          });
          drawTable(data.top, data.latency, data.oneshot);
          drawConfirmed(data.confirmed, data.oneshot);
          document.getElementById("estimates").textContent = data.estimates || "";
          document.getElementById("oneshot").hidden = data.estimates === null;
          drawn = data.version;
          document.body.dataset.version = drawn;
        }
        status.textContent = data.trials + " trials \u00b7 checked "
          + new Date().toLocaleTimeString();
      }).catch(function (error) {
        status.textContent = "cannot reach the server (" + error + "); retrying";
      });
  }

  function tick() {
    refresh().then(function () { setTimeout(tick, poll); });
  }

  select.addEventListener("change", function () {
    current = select.value;
    drawn = null;
    window.history.replaceState(null, "", "?study=" + encodeURIComponent(current));
    refresh();
  });
  listStudies().then(tick, function (error) {
    status.textContent = "cannot reach the server (" + error + ")";
  });
  setInterval(function () { listStudies().catch(function () {}); }, 10 * poll);
})();
"""
