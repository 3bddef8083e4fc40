// Small conveniences; everything works without JavaScript too.
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("filters");
  if (form) {
    // A ticked box applies at once (the Apply button stays for keyboard users).
    form.querySelectorAll('input[type="checkbox"]').forEach((box) =>
      box.addEventListener("change", () => form.submit()));
  }
  document.querySelectorAll("button[data-copy]").forEach((button) =>
    button.addEventListener("click", async () => {
      const field = document.getElementById(button.dataset.copy);
      field.select();
      try { await navigator.clipboard.writeText(field.value); } catch (e) { document.execCommand("copy"); }
      button.textContent = "Copied";
      setTimeout(() => { button.textContent = "Copy"; }, 1500);
    }));
});
