// Opens an HTML report in headless Chromium at a phone's and a laptop's width and checks
// what a reader would notice: console errors, requests for anything (the page must work
// offline), charts that are missing or empty, text too small to read, anything wider than
// the screen; saves a screenshot of each width and a PDF (print). Exits 1 with every
// failure listed.
//
//   node check-report.mjs REPORT.html OUT_DIR
//
// CHROMIUM names the browser (default /usr/bin/chromium).
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { pathToFileURL } from "node:url";
import puppeteer from "puppeteer-core";

const [report, outDir] = process.argv.slice(2);
if (!report || !outDir) {
  console.error("usage: node check-report.mjs REPORT.html OUT_DIR");
  process.exit(2);
}
await mkdir(outDir, { recursive: true });

// Smallest rendered text a reader should be given, in CSS pixels.
const MIN_TEXT_PX = 10;
const WIDTHS = [
  { name: "phone", width: 390, height: 844, scale: 3 },
  { name: "laptop", width: 1280, height: 800, scale: 1 },
];

const failures = [];
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--font-render-hinting=none"],
});
try {
  for (const vp of WIDTHS) {
    const page = await browser.newPage();
    await page.setViewport({ width: vp.width, height: vp.height, deviceScaleFactor: vp.scale });
    await page.setRequestInterception(true);
    const url = pathToFileURL(path.resolve(report)).href;
    page.on("request", (req) => {
      if (req.url() === url) return req.continue();
      failures.push(`${vp.name}: the page requested ${req.url()} (it must work offline)`);
      return req.abort();
    });
    page.on("console", (msg) => {
      if (msg.type() === "error" || msg.type() === "warning")
        failures.push(`${vp.name}: console ${msg.type()}: ${msg.text()}`);
    });
    page.on("pageerror", (err) => failures.push(`${vp.name}: page error: ${err.message}`));
    await page.goto(url, { waitUntil: "load" });

    const found = await page.evaluate((minText) => {
      const problems = [];
      const vw = document.documentElement.clientWidth;
      if (document.documentElement.scrollWidth > vw)
        problems.push(`the page is ${document.documentElement.scrollWidth} px wide, the screen ${vw} px`);
      // Anything sticking out of the screen, unless it sits in a box that scrolls sideways.
      const scrolls = (el) => {
        for (let p = el.parentElement; p; p = p.parentElement)
          if (getComputedStyle(p).overflowX === "auto" || getComputedStyle(p).overflowX === "scroll") return true;
        return false;
      };
      for (const el of document.querySelectorAll("body *")) {
        const r = el.getBoundingClientRect();
        if (r.width === 0 || el.closest("svg") !== null && el.tagName !== "svg") continue;
        if (r.right > vw + 0.5 && !scrolls(el))
          problems.push(`<${el.tagName.toLowerCase()} class="${el.getAttribute("class") || ""}"> reaches ${Math.round(r.right)} px`);
      }
      // The charts: each shown chart has a size and drawn content.
      const charts = [...document.querySelectorAll("svg")].filter((s) => s.getBoundingClientRect().width > 0);
      if (charts.length < 3) problems.push(`${charts.length} charts shown, 3 expected`);
      for (const s of charts) {
        const r = s.getBoundingClientRect();
        const label = s.getAttribute("aria-label");
        if (r.height < 100) problems.push(`chart "${label}" is ${Math.round(r.height)} px high`);
        if (s.querySelectorAll("rect, path, polyline, circle").length === 0)
          problems.push(`chart "${label}" draws nothing`);
        let smallest = Infinity;
        for (const t of s.querySelectorAll("text")) {
          const h = t.getBoundingClientRect().height;
          if (h > 0) smallest = Math.min(smallest, h);
        }
        if (smallest < minText) problems.push(`chart "${label}": text ${smallest.toFixed(1)} px high`);
      }
      // Text outside the charts.
      for (const el of document.querySelectorAll("body *:not(svg):not(svg *)")) {
        if (!el.childNodes.length || ![...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
        const size = parseFloat(getComputedStyle(el).fontSize);
        if (size < minText) problems.push(`<${el.tagName.toLowerCase()}> text is ${size} px`);
      }
      const table = document.querySelector("table");
      if (!table || table.querySelectorAll("tr").length < 2) problems.push("no daily table");
      const nav = performance.getEntriesByType("navigation")[0];
      return { problems, loadMs: Math.round(nav.loadEventEnd), charts: charts.map((s) => [s.getAttribute("aria-label"), Math.round(s.getBoundingClientRect().width), Math.round(s.getBoundingClientRect().height)]) };
    }, MIN_TEXT_PX);
    for (const p of found.problems) failures.push(`${vp.name} (${vp.width} px): ${p}`);
    console.log(`${vp.name} (${vp.width} px): loaded in ${found.loadMs} ms; charts (label, width, height): ${JSON.stringify(found.charts)}`);
    await page.screenshot({ path: path.join(outDir, `report-${vp.width}.png`), fullPage: true });
    if (vp.name === "laptop") {
      await page.emulateMediaType("print");
      await page.pdf({ path: path.join(outDir, "report.pdf"), format: "A4", printBackground: true });
    }
    await page.close();
  }
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(`the report fails ${failures.length} check(s):\n  ` + [...new Set(failures)].join("\n  "));
  process.exit(1);
}
console.log(`the report passes at ${WIDTHS.map((w) => w.width + " px").join(" and ")}; screenshots in ${outDir}`);
