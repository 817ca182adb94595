// Reads a JSON array of LaTeX strings on stdin; renders each with KaTeX in display mode,
// strict (warnings are errors too). Prints one JSON array of error messages (null = ok).
const katex = require("katex");
let input = "";
process.stdin.on("data", (d) => (input += d));
process.stdin.on("end", () => {
  const out = JSON.parse(input).map((tex) => {
    try {
      katex.renderToString(tex, { displayMode: true, throwOnError: true, strict: "error" });
      return null;
    } catch (e) {
      // KaTeX cuts messages by UTF-16 units: no lone surrogates in JSON
      return String(e.message || e).replace(/[\ud800-\udfff]/g, "?");
    }
  });
  process.stdout.write(JSON.stringify(out));
});
