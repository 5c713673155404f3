// Reads what one run of the MCP conformance suite's `server` mode left behind and answers the
// questions tests/conformance/run asks about it. Run with Node 22 (the suite's own runtime).
//
//   node results.mjs scenarios STDOUT            scenarios the run attempted, one a line
//   node results.mjs failing STDOUT RESULTS_DIR  failing checks as `scenario:check-id`, sorted
//   node results.mjs counts STDOUT RESULTS_DIR   "<scenarios> <passed> <failed>" (scenario counts)
//   node results.mjs entries BASELINE.yml        the `server:` entries of a baseline file, sorted
//   node results.mjs yaml < ENTRIES              a baseline file (`server:` list) from entries
//   node results.mjs baseline STDOUT             the suite's own baseline verdict, as lines
//                                                `unexpected ENTRY` and `stale ENTRY`
//
// A check fails when any of its occurrences in a scenario has status FAILURE or WARNING: the
// suite's expected-failures evaluation counts WARNING as failing too, and collapses repeated
// check ids most-severe-first. A scenario that threw before writing checks.json fails as
// `<scenario>:<scenario>`, the id of the synthetic check the suite records for it.
//
// CONFORMANCE_PACKAGE_DIR must name the installed @modelcontextprotocol/conformance package;
// its `yaml` dependency parses baseline files exactly as the suite does.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const [command, ...args] = process.argv.slice(2);

const die = (message) => {
  console.error(`results.mjs: ${message}`);
  process.exit(2);
};

const stripAnsi = (text) => text.replace(/\x1b\[[0-9;]*m/g, '');

const readLines = (file) => stripAnsi(readFileSync(file, 'utf8')).split('\n');

// Scenario names in the order the suite ran them, from its "=== Running scenario: X ===" lines.
function scenariosOf(stdoutFile) {
  const names = [];
  for (const line of readLines(stdoutFile)) {
    const m = line.match(/^=== Running scenario: (.+) ===$/);
    if (m) names.push(m[1]);
  }
  return names;
}

// Result directories are `server-<scenario>-<ISO timestamp with : and . replaced by ->`.
function resultDirsOf(resultsDir) {
  const dirs = new Map();
  if (!existsSync(resultsDir)) return dirs;
  for (const entry of readdirSync(resultsDir, { withFileTypes: true })) {
    if (!entry.isDirectory()) continue;
    const m = entry.name.match(/^server-(.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$/);
    if (m) dirs.set(m[1], path.join(resultsDir, entry.name));
  }
  return dirs;
}

// Map of scenario -> sorted list of failing check ids.
function failingByScenario(stdoutFile, resultsDir) {
  const dirs = resultDirsOf(resultsDir);
  const out = new Map();
  for (const scenario of scenariosOf(stdoutFile)) {
    const dir = dirs.get(scenario);
    const checksFile = dir && path.join(dir, 'checks.json');
    if (!checksFile || !existsSync(checksFile)) {
      out.set(scenario, [scenario]);
      continue;
    }
    let checks;
    try {
      checks = JSON.parse(readFileSync(checksFile, 'utf8'));
    } catch (error) {
      die(`cannot parse ${checksFile}: ${error.message}`);
    }
    const failing = new Set();
    for (const check of checks) {
      if (check.status === 'FAILURE' || check.status === 'WARNING') failing.add(String(check.id));
    }
    out.set(scenario, [...failing].sort());
  }
  return out;
}

function loadYaml() {
  const pkg = process.env.CONFORMANCE_PACKAGE_DIR;
  if (!pkg) die('CONFORMANCE_PACKAGE_DIR is not set');
  return createRequire(path.join(pkg, 'package.json'))('yaml');
}

const sortedUnique = (list) => [...new Set(list)].sort();

switch (command) {
  case 'scenarios': {
    for (const s of scenariosOf(args[0])) console.log(s);
    break;
  }
  case 'failing': {
    const entries = [];
    for (const [scenario, ids] of failingByScenario(args[0], args[1])) {
      for (const id of ids) entries.push(`${scenario}:${id}`);
    }
    for (const e of sortedUnique(entries)) console.log(e);
    break;
  }
  case 'counts': {
    const byScenario = failingByScenario(args[0], args[1]);
    const failed = [...byScenario.values()].filter((ids) => ids.length > 0).length;
    console.log(`${byScenario.size} ${byScenario.size - failed} ${failed}`);
    break;
  }
  case 'entries': {
    const { parse } = loadYaml();
    const doc = parse(readFileSync(args[0], 'utf8')) ?? {};
    if (typeof doc !== 'object' || Array.isArray(doc)) die(`${args[0]}: expected a mapping`);
    const list = doc.server ?? [];
    if (!Array.isArray(list)) die(`${args[0]}: 'server' must be a list`);
    for (const item of list) {
      if (typeof item !== 'string' || item === '') die(`${args[0]}: entry ${JSON.stringify(item)} is not a string`);
    }
    for (const e of sortedUnique(list)) console.log(e);
    break;
  }
  case 'yaml': {
    const entries = sortedUnique(
      readFileSync(0, 'utf8').split('\n').map((l) => l.trim()).filter(Boolean),
    );
    const plain = /^[A-Za-z0-9][A-Za-z0-9_./-]*(:[A-Za-z0-9][A-Za-z0-9_./-]*)?$/;
    const lines = ['# Generated by tests/conformance/run: the checks that fail when the suite', '# talks to server-everything directly.'];
    if (entries.length === 0) {
      lines.push('server: []');
    } else {
      lines.push('server:');
      for (const e of entries) lines.push(`  - ${plain.test(e) ? e : JSON.stringify(e)}`);
    }
    console.log(lines.join('\n'));
    break;
  }
  case 'baseline': {
    // The suite prints, after its summary, sections headed "Stale baseline entries ..." and
    // "Unexpected failures (not in baseline):", each followed by "  ✓ entry" / "  ✗ entry".
    let section = null;
    for (const line of readLines(args[0])) {
      if (line.startsWith('Stale baseline entries')) section = 'stale';
      else if (line.startsWith('Unexpected failures (not in baseline)')) section = 'unexpected';
      else if (line.startsWith('Expected failures (in baseline)')) section = null;
      else if (section && /^ {2}[✓✗] /.test(line)) console.log(`${section} ${line.slice(4).trim()}`);
      else if (line.trim() === '') continue;
      else section = null;
    }
    break;
  }
  default:
    die(`unknown command ${JSON.stringify(command)}`);
}
