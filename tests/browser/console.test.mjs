// The web console in a real browser: Debian's chromium, headless, driven by
// playwright-core against the real binary on loopback (started by .ci/browser.sh).
// Each scenario saves a full-page screenshot under target/browser/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { mkdirSync, writeFileSync } from "node:fs";
import { chromium } from "playwright-core";

const BASE = process.env.CONSOLE_URL;
const ADMIN_KEY = process.env.CONSOLE_ADMIN_KEY;
const SHOTS = process.env.SCREENSHOT_DIR ?? "target/browser";
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
assert.ok(BASE && ADMIN_KEY, "CONSOLE_URL and CONSOLE_ADMIN_KEY must be set");
mkdirSync(SHOTS, { recursive: true });

let browser;

before(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu"],
  });
  // Proof for .ci/browser.sh that a real Chromium ran.
  writeFileSync(`${SHOTS}/chromium-version.txt`, `${browser.version()}\n`);
});

after(async () => {
  await browser?.close();
});

/** The API, with the admin key (setup and checks only; the scenarios use pages). */
async function api(method, path, body, key = ADMIN_KEY) {
  const r = await fetch(`${BASE}${path}`, {
    method,
    headers: { "x-api-key": key, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, json: text ? JSON.parse(text) : null };
}

async function newPage(viewport = { width: 1280, height: 900 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on("dialog", (d) => d.accept());
  const errors = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });
  page.on("pageerror", (e) => errors.push(String(e)));
  page.cspErrors = () => errors.filter((e) => /Content Security Policy|Refused to/i.test(e));
  return { context, page };
}

async function signIn(page, key = ADMIN_KEY, screenshot = null) {
  await page.goto(`${BASE}/`);
  assert.match(page.url(), /\/signin$/);
  if (screenshot) await shot(page, screenshot);
  await page.getByLabel("API key or JWT").fill(key);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(`${BASE}/`);
}

async function shot(page, name) {
  await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
}

const uniq = () => Math.random().toString(36).slice(2, 8);

test("sign in and see the overview", async () => {
  const { context, page } = await newPage();
  await signIn(page, ADMIN_KEY, "signin");
  await assert.doesNotReject(page.locator("h1", { hasText: "Overview" }).waitFor());
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "de_session");
  assert.ok(session, "session cookie set");
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, "Strict");
  assert.ok(!cookies.some((c) => c.value.includes(ADMIN_KEY)), "the key is not kept in the browser");
  assert.deepEqual(page.cspErrors(), []);
  await context.close();
});

test("create an employee with a bad field, fix it, give it a task, watch it succeed live", async () => {
  const { context, page } = await newPage();
  await signIn(page);
  const name = `clerk-${uniq()}`;
  await page.goto(`${BASE}/employees/new`);
  await page.getByLabel("Name").fill(name);
  await page.getByLabel("Role").fill("Does sums with the calculator");
  await page.getByRole("checkbox", { name: /calculator/ }).first().check();
  await page.getByLabel("Temperature").fill("7");
  await page.getByRole("button", { name: "Create" }).click();
  const err = page.locator("#temperature-error");
  await err.waitFor();
  assert.match(await err.textContent(), /between 0 and 2/);
  assert.equal(await page.getByLabel("Name").inputValue(), name, "typed values kept");
  await shot(page, "employee-validation");
  await page.getByLabel("Temperature").fill("0");
  await page.getByRole("button", { name: "Create" }).click();
  await page.waitForURL(/\/employees\/[0-9a-f-]{36}$/);

  await page.getByRole("link", { name: "Give a task" }).click();
  await page.getByLabel("What to do").fill("What is 12 * (3 + 4)? Use the calculator.");
  await page.getByRole("button", { name: "Give the task" }).click();
  await page.waitForURL(/\/tasks\/[0-9a-f-]{36}$/);
  // No reload from here on: a marker on the window survives only if the page stays.
  await page.evaluate(() => { window.__stayed = true; });
  await page.locator("#task-status", { hasText: "succeeded" }).waitFor({ timeout: 20000 });
  assert.equal(await page.evaluate(() => window.__stayed), true, "the page was not reloaded");
  await page.locator("#timeline li.k-tool_call").first().waitFor();
  assert.match(await page.locator("#timeline").textContent(), /LLM call: sandbox\/sandbox-1/);
  assert.match(await page.locator("#task-result").textContent(), /84/);
  await page.locator("#timeline details summary").first().click();
  await shot(page, "task-timeline");
  assert.deepEqual(page.cspErrors(), []);
  await context.close();
});

test("approvals: approve one and see it finish, reject another", async () => {
  const name = `careful-${uniq()}`;
  let r = await api("POST", "/v1/employees", {
    name, role: "Careful clerk", allowed_tools: ["calculator"], approval_tools: ["calculator"],
  });
  assert.equal(r.status, 201);
  const yes = (await api("POST", "/v1/tasks", { employee: name, input: "6 * 7" })).json.id;
  const no = (await api("POST", "/v1/tasks", { employee: name, input: "1 + 1" })).json.id;
  const { context, page } = await newPage();
  await signIn(page);
  await page.goto(`${BASE}/approvals`);
  // Both appear once their tasks pause.
  for (const id of [yes, no]) {
    for (let i = 0; i < 100 && !(await page.locator(`#approval-${id}`).count()); i++) {
      await page.waitForTimeout(100);
      await page.reload();
    }
    await page.locator(`#approval-${id}`).waitFor();
  }
  assert.ok(await page.locator("#approvals-badge").isVisible(), "badge in the navigation");
  await shot(page, "approvals");
  const card = page.locator(`#approval-${yes}`);
  await card.getByLabel("Reason (optional)").fill("looks right");
  await card.getByRole("button", { name: "Approve" }).click();
  await page.locator(`#approval-${yes}`, { hasText: "Approved" }).waitFor();
  const other = page.locator(`#approval-${no}`);
  await other.getByLabel("Reason (optional)").fill("not today");
  await other.getByRole("button", { name: "Reject" }).click();
  await page.locator(`#approval-${no}`, { hasText: "Rejected" }).waitFor();
  await page.goto(`${BASE}/tasks/${yes}`);
  await page.locator("#task-status", { hasText: "succeeded" }).waitFor({ timeout: 20000 });
  assert.match(await page.locator("#task-result").textContent(), /42/);
  await shot(page, "approved-task");
  await page.goto(`${BASE}/tasks/${no}`);
  await page.locator("#task-status", { hasText: "succeeded" }).waitFor({ timeout: 20000 });
  assert.match(await page.locator("#timeline").textContent(), /Decision: reject/);
  await context.close();
});

test("cancel a delayed task", async () => {
  const name = `later-${uniq()}`;
  assert.equal((await api("POST", "/v1/employees", { name, role: "r" })).status, 201);
  const runAt = new Date(Date.now() + 3600_000).toISOString();
  const id = (await api("POST", "/v1/tasks", { employee: name, input: "later", run_at: runAt })).json.id;
  const { context, page } = await newPage();
  await signIn(page);
  await page.goto(`${BASE}/tasks/${id}`);
  await page.getByRole("button", { name: "Cancel task" }).click();
  await page.locator("#task-status", { hasText: "cancelled" }).waitFor();
  await shot(page, "cancelled-task");
  assert.equal((await api("GET", `/v1/tasks/${id}`)).json.status, "cancelled");
  await context.close();
});

test("create a key (secret shown once) and revoke it", async () => {
  const { context, page } = await newPage();
  await signIn(page);
  await page.goto(`${BASE}/keys`);
  const name = `ci-${uniq()}`;
  await page.getByLabel("Name").fill(name);
  await page.getByLabel("Scope").selectOption("read");
  await page.getByRole("button", { name: "Create key" }).click();
  const secret = (await page.locator("#new-key-secret").textContent()).trim();
  assert.match(secret, /^de_[0-9a-f]{12}_/);
  assert.equal((await api("GET", "/v1/employees", undefined, secret)).status, 200, "the new key works");
  await shot(page, "key-created");
  await page.goto(`${BASE}/keys`);
  assert.equal(await page.locator("#new-key-secret").count(), 0, "the secret is not shown again");
  assert.ok(!(await page.content()).includes(secret));
  const prefix = secret.split("_")[1];
  await page.locator(`#key-${prefix}`).getByRole("button", { name: "Revoke" }).click();
  await page.locator(`#key-${prefix}`, { hasText: "revoked" }).waitFor();
  assert.equal((await api("GET", "/v1/employees", undefined, secret)).status, 401, "revoked");
  await context.close();
});

test("the usage chart has data", async () => {
  const { context, page } = await newPage();
  await signIn(page);
  await page.goto(`${BASE}/usage`);
  const heights = await page.locator("#usage-chart rect.bar").evaluateAll(
    (rects) => rects.map((r) => Number(r.getAttribute("height"))),
  );
  assert.equal(heights.length, 30);
  assert.ok(heights.some((h) => h > 0), "today has a bar");
  assert.match(await page.locator("#usage-by-model").textContent(), /sandbox-1/);
  await shot(page, "usage");
  const csv = await page.evaluate(async () => (await fetch(document.querySelector("#usage-csv").href)).text());
  assert.match(csv, /^day,employee_name,requests/);
  await context.close();
});

test("sign out, and the old cookie is refused", async () => {
  const { context, page } = await newPage();
  await signIn(page);
  const old = (await context.cookies()).find((c) => c.name === "de_session");
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL(/\/signin$/);
  const replay = await browser.newContext();
  await replay.addCookies([old]);
  const p2 = await replay.newPage();
  await p2.goto(`${BASE}/tasks`);
  assert.match(p2.url(), /\/signin$/, "the old session is gone on the server");
  await shot(p2, "signed-out");
  await replay.close();
  await context.close();
});

test("tenant B's session never shows tenant A's employee", async () => {
  const secretName = `alpha-only-${uniq()}`;
  const emp = await api("POST", "/v1/employees", { name: secretName, role: "r" });
  assert.equal(emp.status, 201);
  const tenant = await api("POST", "/v1/tenants", { name: `bravo-${uniq()}` });
  assert.equal(tenant.status, 201);
  const key = await api("POST", "/v1/keys", { name: "b", scope: "admin", tenant_id: tenant.json.id });
  assert.equal(key.status, 201);
  const { context, page } = await newPage();
  await signIn(page, key.json.secret);
  await page.goto(`${BASE}/employees`);
  assert.ok(!(await page.content()).includes(secretName));
  const r = await page.goto(`${BASE}/employees/${emp.json.id}`);
  assert.equal(r.status(), 404);
  await shot(page, "tenant-isolation");
  await context.close();
});

test("a cross-site POST without the CSRF token is refused", async () => {
  const name = `forged-${uniq()}`;
  // Another origin serving a form that posts to the console.
  const evil = createServer((_, res) => {
    res.setHeader("content-type", "text/html");
    res.end(`<form method="post" action="${BASE}/employees" id="f">
      <input name="name" value="${name}"><input name="role" value="r">
      <input name="model_policy" value="sandbox/sandbox-1"><input name="max_steps" value="5">
      <input name="token_budget" value="1000"><input name="temperature" value="0">
      <button id="go">go</button></form>`);
  });
  await new Promise((ok) => evil.listen(0, "127.0.0.1", ok));
  const { context, page } = await newPage();
  await signIn(page);
  // Same origin but without the token (as script on the page could try): 403.
  const status = await page.evaluate(async (n) => {
    const body = new URLSearchParams({ name: n, role: "r", model_policy: "sandbox/sandbox-1", max_steps: "5", token_budget: "1000", temperature: "0" });
    return (await fetch("/employees", { method: "POST", body })).status;
  }, name);
  assert.equal(status, 403);
  // From a page of another origin posting a form to the console.
  const other = await context.newPage();
  await other.goto(`http://127.0.0.1:${evil.address().port}/`);
  // 127.0.0.1 on another port is the same site, so the cookie does come along: the
  // missing token alone refuses it.
  const [resp] = await Promise.all([other.waitForNavigation(), other.click("#go")]);
  assert.equal(resp.status(), 403);
  assert.match(await other.locator("#error-message").textContent(), /CSRF/);
  await shot(other, "csrf-refused");
  evil.close();
  const list = await api("GET", "/v1/employees?limit=100");
  assert.ok(!list.json.data.some((e) => e.name === name), "nothing was created");
  await context.close();
});

test("a read-only key sees no edit buttons and gets 403 when it forges the POST", async () => {
  const name = `steady-${uniq()}`;
  const emp = await api("POST", "/v1/employees", { name, role: "r" });
  const key = await api("POST", "/v1/keys", { name: "viewer", scope: "read" });
  const { context, page } = await newPage({ width: 390, height: 844 });
  await signIn(page, key.json.secret);
  await page.goto(`${BASE}/employees/${emp.json.id}`);
  for (const id of ["#save-employee", "#delete-employee", "#give-task"]) {
    assert.equal(await page.locator(id).count(), 0, `${id} hidden`);
  }
  await page.goto(`${BASE}/employees`);
  assert.equal(await page.locator("#new-employee").count(), 0);
  await shot(page, "read-only-phone");
  const status = await page.evaluate(async (id) => {
    const csrf = document.querySelector('input[name="_csrf"]').value;
    const body = new URLSearchParams({ _csrf: csrf });
    return (await fetch(`/employees/${id}/delete`, { method: "POST", body })).status;
  }, emp.json.id);
  assert.equal(status, 403);
  assert.equal((await api("GET", `/v1/employees/${emp.json.id}`)).status, 200);
  await context.close();
});

test("schedules: the cron helper shows the next five fires as you type", async () => {
  const name = `reporter-${uniq()}`;
  assert.equal((await api("POST", "/v1/employees", { name, role: "r" })).status, 201);
  const { context, page } = await newPage();
  await signIn(page);
  await page.goto(`${BASE}/schedules`);
  await page.getByLabel("Employee").selectOption({ label: name });
  await page.getByLabel("Cron").pressSequentially("30 8 * * MON-FRI");
  await page.locator("#cron-next li").nth(4).waitFor();
  assert.equal(await page.locator("#cron-next li").count(), 5);
  assert.match(await page.locator("#cron-next").textContent(), /08:30:00 UTC/);
  await page.getByLabel("Task input").fill("Send the morning report");
  await shot(page, "schedule-cron-helper");
  await page.getByRole("button", { name: "Create schedule" }).click();
  await page.waitForURL(`${BASE}/schedules`);
  assert.match(await page.locator("table").textContent(), /30 8 \* \* MON-FRI/);
  await context.close();
});

test("chat with an employee in a session", async () => {
  const name = `chatty-${uniq()}`;
  const emp = await api("POST", "/v1/employees", { name, role: "r" });
  const { context, page } = await newPage();
  await signIn(page);
  await page.goto(`${BASE}/chat?employee=${emp.json.id}`);
  await page.getByLabel("Message").fill("Good morning");
  await page.getByRole("button", { name: "Send" }).click();
  await page.locator("#chat-log", { hasText: "Sandbox reply to: Good morning" }).waitFor();
  await page.getByLabel("Message").fill("And again");
  await page.getByRole("button", { name: "Send" }).click();
  await page.locator("#chat-log", { hasText: "Sandbox reply to: And again" }).waitFor();
  assert.equal(await page.locator("#chat-log .msg").count(), 4, "one session, both turns");
  await shot(page, "chat");
  await context.close();
});

test("the overview shows the day's work", async () => {
  const { context, page } = await newPage();
  await signIn(page);
  const total = await page.locator("h2", { hasText: "Tasks in the last 24 hours" }).textContent();
  assert.ok(Number(total.match(/\((\d+)\)/)[1]) > 0, total);
  assert.match(await page.locator("table", { hasText: "Circuit breaker" }).textContent(), /sandbox\s*closed/);
  assert.notEqual((await page.locator("#stat-spend-today").textContent()).trim(), "$0.00");
  await shot(page, "overview");
  await context.close();
});
