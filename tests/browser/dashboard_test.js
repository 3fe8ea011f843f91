#!/usr/bin/env node
// dashboard_test.js — drives the dashboard (GET /) in Debian's headless
// Chromium through playwright-core and checks what a person would see: the
// project's agents (one with a load error) and workflow, an agent run started
// from the form with its output and live events, a workflow run waiting for a
// signal and answered through the form, the metrics summary, text never run
// as HTML, a dropped event stream resumed with Last-Event-ID, and the key
// form and auth error.
//
// It starts `moonhive serve --port 0` ($MOONHIVE_BIN, default ./moonhive) in
// a temp project (agents/greeter.lua, agents/broken.lua that does not load,
// workflows/approval.lua) on the mock model, with its own data directory.
// Output: TAP, for tests/run.sh.
// Environment: MOONHIVE_BIN, MOONHIVE_RUNTIME, MOONHIVE_STDLIB (as the specs),
// CHROMIUM (default /usr/bin/chromium), BROWSER_WAIT_MS (bound on each wait).
'use strict';
const { spawn, execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const ROOT = path.resolve(__dirname, '../..');
const BIN = path.resolve(process.env.MOONHIVE_BIN || path.join(ROOT, 'moonhive'));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const WAIT_MS = Number(process.env.BROWSER_WAIT_MS) || 20000;
const WRONG_KEY = 'mh_00000000_0000000000000000000000000000000000000000';

const AGENT = `-- greeter: answers with the mock model's scripted reply.
return agent{ name = "greeter", description = "Greets whoever writes to it.", system = "You greet people." }
`;
const WORKFLOW = `-- approval: a draft, then a person's answer through the signal "approve".
return workflow{
  name = "approval",
  description = "Drafts, then waits for a person's approval.",
  run = function(wf, input)
    local draft = wf:call("greeter", "draft about " .. tostring(input.topic) .. " [reply:a draft]")
    local answer = wf:wait_signal("approve")
    return { draft = draft, approved = answer.approved, note = answer.note }
  end,
}
`;

// ------------------------------------------------------------------ TAP

let n = 0;
let failures = 0;
function tap(ok, name, details) {
  n += 1;
  if (!ok) failures += 1;
  console.log(`${ok ? 'ok' : 'not ok'} ${n} - ${name}`);
  if (!ok) for (const line of String(details || '').split('\n').filter(Boolean)) console.log('# ' + line);
}

// Waits until fn() returns something truthy (fn may throw meanwhile); throws
// `what` with the last value or error when WAIT_MS pass.
async function eventually(what, fn) {
  const until = Date.now() + WAIT_MS;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) { last = err.message; }
    if (Date.now() > until) throw new Error(`${what} (last seen: ${JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function assert(cond, message) { if (!cond) throw new Error(message); }

// ------------------------------------------------------------------ the service

function project() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moonhive-dashboard-'));
  fs.mkdirSync(path.join(dir, 'agents'));
  fs.mkdirSync(path.join(dir, 'workflows'));
  fs.writeFileSync(path.join(dir, 'agents', 'greeter.lua'), AGENT);
  fs.writeFileSync(path.join(dir, 'workflows', 'approval.lua'), WORKFLOW);
  fs.writeFileSync(path.join(dir, 'agents', 'broken.lua'), 'return agent{ name = "broken", system =\n');
  const env = { ...process.env, MOONHIVE_DATA: path.join(dir, '.moonhive'), MOONHIVE_MODEL: 'mock/dashboard',
                MOONHIVE_RUNTIME: process.env.MOONHIVE_RUNTIME || path.join(ROOT, 'lua'),
                MOONHIVE_STDLIB: process.env.MOONHIVE_STDLIB || path.join(ROOT, 'stdlib') };
  delete env.OPENAI_API_KEY;
  delete env.ANTHROPIC_API_KEY;
  return { dir, env };
}

// Starts `moonhive serve --port 0`; resolves with {url, key, proc, stderr()}
// once it prints its address. The key is the session key it prints, or an
// admin key made with `moonhive keys create` when it prints none.
function serve(p) {
  return new Promise((resolve, reject) => {
    const proc = spawn(BIN, ['serve', '--port', '0'], { cwd: p.dir, env: p.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    const timer = setTimeout(() => reject(new Error('moonhive serve printed no address: ' + err)), WAIT_MS);
    proc.stderr.on('data', (d) => { err += d; });
    proc.on('error', (e) => { clearTimeout(timer); reject(e); });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`moonhive serve exited (${code}): ${err}`)); });
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/moonhive serving on (http:\/\/127\.0\.0\.1:\d+\/)/);
      if (!m) return;
      clearTimeout(timer);
      const session = out.match(/#key=([^\s)]+)/);
      const key = session ? session[1]
        : execFileSync(BIN, ['keys', 'create', '--role', 'admin'], { cwd: p.dir, env: p.env }).toString().trim();
      resolve({ url: m[1], key, proc, sessionKey: !!session, stderr: () => err });
    });
  });
}

function stop(proc) {
  return new Promise((resolve) => {
    if (proc.exitCode !== null) return resolve(proc.exitCode);
    proc.removeAllListeners('exit');
    proc.on('exit', (code) => resolve(code));
    proc.kill('SIGTERM');
  });
}

// ------------------------------------------------------------------ the checks

async function main() {
  if (!fs.existsSync(CHROMIUM)) {
    tap(false, `Chromium is installed at ${CHROMIUM}`, 'install it: apt-get install chromium (scripts/deps.sh)');
    return;
  }
  const p = project();
  const srv = await serve(p);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
           '--disable-sync', '--no-first-run', '--disable-quic'],
  });
  const problems = []; // script errors and CSP violations, from every page
  const watch = (page) => {
    page.on('pageerror', (e) => problems.push('script error: ' + e.message));
    page.on('console', (m) => { if (/Content Security Policy|Refused to/.test(m.text())) problems.push(m.text()); });
    return page;
  };
  const newContext = async (opts) => {
    const c = await browser.newContext(opts);
    c.setDefaultTimeout(WAIT_MS);
    return c;
  };
  const context = await newContext({ viewport: { width: 1400, height: 1000 } });
  const page = watch(await context.newPage());
  let shot = 0;
  async function check(name, fn) {
    try {
      await fn();
      tap(true, name);
    } catch (err) {
      const file = path.join(os.tmpdir(), `moonhive-dashboard-${process.pid}-${++shot}.png`);
      await page.screenshot({ path: file, fullPage: true }).catch(() => {});
      const message = err.message.replace(/\x1b\[[0-9;]*m/g, '').split('\n').slice(0, 6).join('\n');
      tap(false, name, `${message}\nscreenshot: ${file}\nserver stderr (last lines):\n` +
          srv.stderr().split('\n').slice(-5).join('\n'));
    }
  }
  const region = (pg, name) => pg.getByRole('region', { name, exact: true });
  const runView = (pg) => pg.getByRole('region', { name: /^Run / });
  const runIdShown = async (pg) => (await runView(pg).getByRole('heading', { level: 2 }).textContent()).replace(/^Run /, '');
  let agentRun = null;
  // Fills "Start a run" as a person would and presses its button.
  async function startRun(label, mode, input) {
    const form = region(page, 'Start a run');
    await form.getByLabel('Agent or workflow').selectOption({ label });
    await form.getByLabel(mode, { exact: true }).check();
    await form.getByLabel('Input', { exact: true }).fill(input);
    await form.getByRole('button', { name: 'Start run' }).click();
  }

  try {
    await check('GET / serves the page without credentials, with its security headers', async () => {
      const res = await fetch(srv.url);
      const h = (k) => res.headers.get(k) || '';
      assert(res.status === 200, 'status ' + res.status);
      assert(h('content-type') === 'text/html; charset=utf-8', 'content-type ' + h('content-type'));
      assert(/script-src 'sha256-[A-Za-z0-9+/=]+'/.test(h('content-security-policy')), 'CSP ' + h('content-security-policy'));
      assert(/default-src 'none'/.test(h('content-security-policy')), 'CSP ' + h('content-security-policy'));
      assert(/frame-ancestors 'none'/.test(h('content-security-policy')), 'CSP ' + h('content-security-policy'));
      assert(h('x-frame-options') === 'DENY', 'x-frame-options ' + h('x-frame-options'));
      assert(h('cache-control') === 'no-store', 'cache-control ' + h('cache-control'));
      assert((await res.text()).includes('<title>moonhive dashboard</title>'), 'not the dashboard page');
    });

    await page.goto(srv.url + '#key=' + srv.key);

    await check('the key moves from the address bar into the tab\'s session storage', async () => {
      await region(page, 'Agents').waitFor({ timeout: WAIT_MS });
      assert(!page.url().includes('key='), 'the address bar still shows the key: ' + page.url());
      const stored = await page.evaluate(() => sessionStorage.getItem('moonhive.key'));
      assert(stored === srv.key, 'sessionStorage holds ' + stored);
    });

    await check('the project\'s agents and workflow are listed with their descriptions and load errors', async () => {
      await region(page, 'Agents').getByText('greeter', { exact: true }).waitFor({ timeout: WAIT_MS });
      await region(page, 'Agents').getByText('Greets whoever writes to it.').waitFor({ timeout: WAIT_MS });
      await region(page, 'Workflows').getByText('approval', { exact: true }).waitFor({ timeout: WAIT_MS });
      await region(page, 'Workflows').getByText('Drafts, then waits for a person\'s approval.').waitFor({ timeout: WAIT_MS });
      await region(page, 'Agents').getByText('Load error: agents/broken.lua:2:').waitFor({ timeout: WAIT_MS });
      const broken = region(page, 'Start a run').getByRole('option', { name: 'broken', exact: true });
      assert(await broken.isDisabled(), 'an agent that never loaded can be chosen to start');
    });

    await check('an agent run started from the form shows its output, status and live events', async () => {
      await startRun('greeter', 'text', 'Say hi [reply:Hello from the mock]');
      const run = runView(page);
      await run.getByText('Hello from the mock', { exact: true }).waitFor({ timeout: WAIT_MS });
      await run.getByText('succeeded', { exact: true }).waitFor({ timeout: WAIT_MS });
      await run.getByRole('list', { name: 'events' }).getByText('model_call').first().waitFor({ timeout: WAIT_MS });
      await run.getByText('(ended)').waitFor({ timeout: WAIT_MS });
      agentRun = await runIdShown(page);
      assert(/^[0-9a-f]+-[0-9a-f]+$/.test(agentRun), 'run id shown: ' + agentRun);
    });

    await check('the runs list shows that run as succeeded, and opens it on a click', async () => {
      assert(agentRun, 'no agent run to look for');
      const row = region(page, 'Runs').getByRole('row').filter({ hasText: agentRun.slice(0, 11) });
      await eventually('the row says greeter and succeeded', async () => {
        const text = await row.textContent({ timeout: 1000 });
        return text.includes('greeter') && text.includes('succeeded');
      });
      await runView(page).getByRole('button', { name: 'Close' }).click();
      await runView(page).waitFor({ state: 'hidden', timeout: WAIT_MS });
      await row.getByRole('button').click();
      await runView(page).getByText('Hello from the mock', { exact: true }).waitFor({ timeout: WAIT_MS });
    });

    await check('a workflow run started with JSON input waits for signal "approve"', async () => {
      await startRun('approval', 'JSON', '{"topic": "launch"}');
      const run = runView(page);
      await run.getByLabel('status').getByText('waiting', { exact: true }).waitFor({ timeout: WAIT_MS });
      await run.getByText('Waiting for a signal').waitFor({ timeout: WAIT_MS });
      await eventually('the signal field names "approve"', async () =>
        (await run.getByLabel('Signal', { exact: true }).inputValue()) === 'approve');
      assert((await run.getByText('"topic": "launch"').count()) === 1, 'the JSON input is not shown');
    });

    await check('answering the signal through the form makes the run succeed with the answer', async () => {
      const run = runView(page);
      await run.getByLabel('Payload (JSON, may be empty)').fill('{"approved": true, "note": "ship it"}');
      await run.getByRole('button', { name: 'Send signal' }).click();
      await run.getByText('succeeded', { exact: true }).first().waitFor({ timeout: WAIT_MS });
      await run.getByText('"note": "ship it"').waitFor({ timeout: WAIT_MS });
      await run.getByText('Waiting for a signal').waitFor({ state: 'hidden', timeout: WAIT_MS });
    });

    await check('the metrics summary shows request counts and uptime', async () => {
      const metrics = region(page, 'Metrics');
      const card = (name) => metrics.locator('div').filter({ has: page.getByRole('term').filter({ hasText: new RegExp(`^${name}$`) }) });
      await eventually('Requests shows a count above 0', async () => {
        const text = await card('Requests').getByRole('definition').textContent({ timeout: 1000 });
        return Number(text.match(/^[\d,]+/)[0].replace(/,/g, '')) > 0;
      });
      await card('Uptime').getByRole('definition').waitFor({ timeout: WAIT_MS });
      const text = await (await fetch(srv.url + 'metrics', { headers: { Authorization: 'Bearer ' + srv.key } })).text();
      if (/^moonhive_runs\{/m.test(text)) await card('Runs').getByRole('definition').first().waitFor({ timeout: WAIT_MS });
      if (/^moonhive_model_tokens_total\{/m.test(text)) {
        await eventually('Tokens shows a count above 0', async () =>
          Number((await card('Tokens').getByRole('definition').textContent({ timeout: 1000 })).match(/^[\d,]+/)[0]
            .replace(/,/g, '')) > 0);
      }
    });

    await check('text from the API is shown as text, never run as HTML', async () => {
      await startRun('greeter', 'text',
        '<img src=x onerror="window.pwned=1"> [reply:<b>bold</b> <img src=y onerror="window.pwned=2">]');
      const run = runView(page);
      await run.getByText('<b>bold</b> <img src=y onerror="window.pwned=2">', { exact: true })
        .waitFor({ timeout: WAIT_MS });
      assert((await page.evaluate(() => window.pwned)) === undefined, 'an inserted handler ran');
      assert((await page.locator('b, img').count()) === 0, 'inserted markup became elements');
    });

    await check('a dropped event stream reconnects with Last-Event-ID and shows no event twice', async () => {
      assert(agentRun, 'no agent run to follow');
      const p2 = watch(await context.newPage());
      const asked = [];
      await p2.route('**/v1/runs/*/events', async (route) => {
        const last = route.request().headers()['last-event-id'];
        asked.push(last === undefined ? null : last);
        if (asked.length > 1) return route.continue();
        // the first stream delivers event 1 and drops
        const ev = { seq: 1, at: Date.now() / 1000, kind: 'model_call', agent: 'greeter', data: { model: 'mock/x' } };
        await route.fulfill({ status: 200, contentType: 'text/event-stream',
                              body: `retry: 50\n\nid: 1\nevent: model_call\ndata: ${JSON.stringify(ev)}\n\n` });
      });
      await p2.goto(srv.url + '#key=' + srv.key + '&run=' + agentRun); // sessionStorage is per tab
      await runView(p2).getByText('(ended)').waitFor({ timeout: WAIT_MS });
      assert(JSON.stringify(asked) === '[null,"1"]', 'Last-Event-ID sent: ' + JSON.stringify(asked));
      const events = runView(p2).getByRole('list', { name: 'events' }).getByRole('listitem');
      assert((await events.count()) === 1, 'events shown: ' + (await events.count()));
      await p2.close();
    });

    await check('a wrong key shows the authentication error and the key form', async () => {
      const c2 = await newContext();
      const p2 = watch(await c2.newPage());
      await p2.goto(srv.url + '#key=' + WRONG_KEY);
      await p2.getByRole('alert').filter({ hasText: 'The API key was refused (401)' }).waitFor({ timeout: WAIT_MS });
      await p2.getByLabel('API key').waitFor({ timeout: WAIT_MS });
      assert(!(await p2.getByRole('region', { name: 'Agents' }).isVisible()), 'the dashboard is still shown');
      await c2.close();
    });

    await check('without a key the page asks for one, and a pasted key opens the dashboard', async () => {
      const c2 = await newContext();
      const p2 = watch(await c2.newPage());
      await p2.goto(srv.url);
      await p2.getByLabel('API key').fill(srv.key);
      await p2.getByRole('button', { name: 'Open the dashboard' }).click();
      await region(p2, 'Workflows').getByText('approval', { exact: true }).waitFor({ timeout: WAIT_MS });
      await c2.close();
    });

    await check('no page had a script error or a Content-Security-Policy violation', async () => {
      assert(problems.length === 0, problems.join('\n'));
    });
  } finally {
    await browser.close();
    const code = await stop(srv.proc);
    tap(code === 0, 'moonhive serve exits 0 on SIGTERM', `exit code ${code}\n${srv.stderr().slice(-500)}`);
    fs.rmSync(p.dir, { recursive: true, force: true });
  }
}

main().catch((err) => tap(false, 'the browser test ran to its end', err.stack || String(err)))
  .finally(() => {
    console.log(`1..${n}`);
    process.exitCode = failures ? 1 : 0;
  });
