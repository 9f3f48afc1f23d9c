/* apparate console behaviour: confirmations, dialogs, copy buttons, toasts. No dependencies.
 *
 * - <form data-confirm="Delete X? This cannot be undone." data-confirm-button="Delete"> asks in
 *   the shared #confirm-dialog before submitting; elements with hx-confirm="..." use the same
 *   dialog for htmx requests (data-confirm-button sets the button text there too).
 * - <button type="button" data-open-dialog="some-id"> opens <dialog id="some-id">;
 *   [data-close-dialog] inside a dialog closes it.
 * - <button type="button" class="copy" data-copy-target="#id"> copies the text of #id
 *   (without data-copy-target: the <pre>/<code> inside the same .code-block;
 *   with data-copy-value="…": that value, e.g. from {% copy_value %} in layout_tags).
 * - Toasts: .toast elements close on their × button; success/info ones fade after 8 s.
 *   Views can add one from an htmx response with the header
 *   HX-Trigger: {"showMessage": {"level": "success", "text": "Saved."}}
 */
(function () {
  "use strict";

  function askConfirmation(message, buttonText, onConfirm) {
    var dialog = document.getElementById("confirm-dialog");
    if (!dialog || typeof dialog.showModal !== "function") {
      if (window.confirm(message)) onConfirm();
      return;
    }
    dialog.querySelector(".confirm-message").textContent = message;
    dialog.querySelector(".confirm-button").textContent = buttonText || "Confirm";
    dialog.returnValue = "";
    dialog.addEventListener("close", function handler() {
      dialog.removeEventListener("close", handler);
      if (dialog.returnValue === "confirm") onConfirm();
    });
    dialog.showModal();
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.confirm || form.dataset.confirmed) return;
    event.preventDefault();
    var submitter = event.submitter;
    askConfirmation(form.dataset.confirm, form.dataset.confirmButton, function () {
      form.dataset.confirmed = "1";
      if (form.requestSubmit) form.requestSubmit(submitter || undefined); else form.submit();
      delete form.dataset.confirmed;
    });
  }, true);

  document.addEventListener("htmx:confirm", function (event) {
    var question = event.detail.question;
    if (!question) return;
    event.preventDefault();
    var element = event.detail.elt;
    askConfirmation(question, element && element.dataset.confirmButton, function () {
      event.detail.issueRequest(true);
    });
  });

  document.addEventListener("click", function (event) {
    var opener = event.target.closest("[data-open-dialog]");
    if (opener) {
      var dialog = document.getElementById(opener.dataset.openDialog);
      if (dialog) dialog.showModal();
      return;
    }
    var closer = event.target.closest("[data-close-dialog]");
    if (closer) {
      var open = closer.closest("dialog");
      if (open) open.close();
      return;
    }
    var copy = event.target.closest("button.copy");
    if (copy) {
      var source = copy.dataset.copyTarget
        ? document.querySelector(copy.dataset.copyTarget)
        : copy.closest(".code-block") && copy.closest(".code-block").querySelector("pre, code");
      if (copy.dataset.copyValue !== undefined) copyText(copy.dataset.copyValue, copy);
      else if (source) copyText(source.textContent, copy);
      return;
    }
    var close = event.target.closest(".toast-close");
    if (close) close.closest(".toast").remove();
  });

  function copyText(text, button) {
    var done = function () {
      var label = button.textContent;
      button.textContent = "Copied";
      button.classList.add("copied");
      setTimeout(function () { button.textContent = label; button.classList.remove("copied"); }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { fallbackCopy(text); done(); });
    } else {
      fallbackCopy(text);
      done();
    }
  }

  function fallbackCopy(text) {
    // Plain-http consoles inside private networks have no Clipboard API: use a hidden textarea.
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); } finally { area.remove(); }
  }

  function showToast(level, text) {
    var region = document.getElementById("toasts");
    if (!region) return;
    var toast = document.createElement("div");
    toast.className = "toast toast-" + (level || "info");
    var span = document.createElement("span");
    span.textContent = text;
    var button = document.createElement("button");
    button.type = "button";
    button.className = "toast-close";
    button.setAttribute("aria-label", "Dismiss");
    button.textContent = "×";
    toast.append(span, button);
    region.appendChild(toast);
    fade(toast);
  }

  function fade(toast) {
    if (toast.classList.contains("toast-success") || toast.classList.contains("toast-info")) {
      setTimeout(function () { toast.remove(); }, 8000);
    }
  }

  document.addEventListener("showMessage", function (event) {
    var detail = event.detail || {};
    showToast(detail.level, detail.text || detail.value);
  });

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".toast").forEach(fade);
  });
})();

/* --- uifix: forms that follow what is typed, confirmations per option --- */
(function () {
  "use strict";

  // <div data-shown-when="auth_method=token">: shown only while the form's field auth_method has that
  // value (radio or select). Without JavaScript every field shows.
  function applyShownWhen(root) {
    (root || document).querySelectorAll("[data-shown-when]").forEach(function (block) {
      var form = block.closest("form");
      if (!form) return;
      var parts = block.dataset.shownWhen.split("=");
      var controls = form.querySelectorAll('[name="' + parts[0] + '"]');
      var value = null;
      controls.forEach(function (control) {
        if (control.type === "radio" || control.type === "checkbox") { if (control.checked) value = control.value; }
        else value = control.value;
      });
      block.hidden = value !== null && value !== parts[1];
    });
  }

  document.addEventListener("change", function (event) {
    var form = event.target.form;
    if (form && form.querySelector("[data-shown-when]")) applyShownWhen(form);
  });

  // A field's error is stale once the field is edited and filled: take it away.
  document.addEventListener("input", function (event) {
    var control = event.target;
    var field = control.closest && control.closest(".field.has-error");
    if (!field || !control.value) return;
    field.classList.remove("has-error");
    control.removeAttribute("aria-invalid");
    field.querySelectorAll(":scope > .errorlist").forEach(function (list) { list.remove(); });
  });

  // Enter in an input with its own button (.input-with-button) presses that button, not the form's first one.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Enter" || !event.target.closest) return;
    var group = event.target.closest(".input-with-button");
    if (!group || event.target.tagName !== "INPUT") return;
    var button = group.querySelector("button");
    if (!button) return;
    event.preventDefault();
    button.click();
  });

  // A form whose chosen <option> carries data-confirm asks that question (e.g. "Uninstall the suite from …"):
  // the form's own question follows the choice, before the confirmation reads it at submit.
  function confirmFromOption(root) {
    (root || document).querySelectorAll("form[data-confirm]").forEach(function (form) {
      var chosen = form.querySelector("option[data-confirm]:checked");
      if (!chosen) return;
      form.dataset.confirm = chosen.dataset.confirm;
      if (chosen.dataset.confirmButton) form.dataset.confirmButton = chosen.dataset.confirmButton;
    });
  }

  document.addEventListener("change", function (event) {
    if (event.target.tagName === "SELECT" && event.target.form) confirmFromOption(event.target.form.parentElement);
  });

  document.addEventListener("DOMContentLoaded", function () { applyShownWhen(document); confirmFromOption(document); });
  document.addEventListener("htmx:afterSettle", function () { applyShownWhen(document); confirmFromOption(document); });
})();

/* --- uifix: the kubectl command for the checked nodes (clusters/_label_panel.html) --- */
(function () {
  "use strict";

  function kubectlCommand(form) {
    var target = form.querySelector("#kubectl-command");
    if (!target) return;
    var operation = form.querySelector('select[name="operation"]');
    var removing = operation && operation.value === "unlabel";
    var byCluster = {};
    var order = [];
    form.querySelectorAll('input[name="nodes"]:checked').forEach(function (box) {
      var row = box.closest("tr");
      if (!row) return;
      var cluster = row.dataset.cluster || "";
      if (!(cluster in byCluster)) { byCluster[cluster] = []; order.push(cluster); }
      byCluster[cluster].push(row.dataset.node);
    });
    if (!order.length) { target.textContent = "Check nodes in the table to get the command."; return; }
    var change = removing ? target.dataset.labelKey + "-" : target.dataset.label + " --overwrite";
    target.textContent = order.map(function (cluster) {
      var line = "kubectl label node " + byCluster[cluster].join(" ") + " " + change;
      return order.length > 1 ? "# cluster " + cluster + "\n" + line : line;
    }).join("\n");
  }

  document.addEventListener("change", function (event) {
    var form = event.target.form;
    if (form && (event.target.name === "nodes" || event.target.name === "operation")) kubectlCommand(form);
  });
  document.addEventListener("htmx:afterSettle", function () {
    document.querySelectorAll("form").forEach(function (form) { if (form.querySelector("#kubectl-command")) kubectlCommand(form); });
  });
})();
