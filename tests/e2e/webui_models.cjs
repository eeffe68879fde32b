// llama.cpp's own web UI in router mode, driven in Debian's headless Chromium through
// playwright-core (npm; found through NODE_PATH). Called by test_webui_models.py with one JSON
// argument: {url, names, png, pick?, send?, wait_s?}. Opens the page with a fresh profile,
// opens the model picker (the button that names one of `names`) and reads its options; with
// `pick` it chooses that model, with `send` it types the message and waits up to `wait_s` for
// an alert dialog or a reply. Prints one JSON line: {options, dialog, seconds, outside}, and
// writes the screenshot to `png` (the picker open, or the page after sending).
const { chromium } = require("playwright-core");
const fs = require("fs");
const os = require("os");
const path = require("path");

const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--hide-scrollbars"];

async function main() {
  const job = JSON.parse(process.argv[2]);
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "chromium-"));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium", headless: true, args: FLAGS,
    viewport: { width: 1280, height: 800 },
  });
  const outside = [];  // requests to anywhere but the device: the page must make none
  const result = { options: [], dialog: null, seconds: null, outside };
  try {
    const page = ctx.pages()[0] || await ctx.newPage();
    page.on("request", (r) => { if (!r.url().startsWith(job.url)) outside.push(r.url()); });
    await page.goto(job.url, { waitUntil: "networkidle", timeout: 60000 });
    // The picker's button shows the model in use, or "Select model" while none is loaded.
    const labels = [...job.names, "Select model"];
    const buttons = page.getByRole("button");
    await page.waitForFunction((ls) => [...document.querySelectorAll("button")]
      .some((b) => ls.includes(b.innerText.trim())), labels, { timeout: 30000 });
    const texts = (await buttons.allInnerTexts()).map((t) => t.trim());
    await buttons.nth(texts.findIndex((t) => labels.includes(t))).click();
    await page.getByRole("option").first().waitFor({ timeout: 30000 });
    result.options = (await page.getByRole("option").allInnerTexts()).map((t) => t.trim());
    if (job.pick) {
      if (!result.options.includes(job.pick)) throw new Error(`no option ${job.pick}`);
      await page.getByRole("option").nth(result.options.indexOf(job.pick)).click();
    }
    if (job.send) {
      const box = page.getByRole("textbox").first();
      await box.fill(job.send);
      const began = Date.now();
      await box.press("Enter");
      const dialog = page.getByRole("alertdialog").or(page.getByRole("dialog"));
      try {
        await dialog.first().waitFor({ timeout: (job.wait_s || 30) * 1000 });
        result.dialog = (await dialog.first().innerText()).trim();
      } catch (e) {
        result.dialog = null;  // none within wait_s
      }
      result.seconds = (Date.now() - began) / 1000;
    }
    await page.screenshot({ path: job.png });
  } finally {
    await ctx.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  console.log(JSON.stringify(result));
}

main().catch((e) => { console.error(e); process.exit(1); });
