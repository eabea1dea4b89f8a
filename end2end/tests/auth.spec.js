// Operator tokens in the browser: sign-in, the header, a button disabled for a missing scope,
// and the audit page. This spec starts its own `switchyard serve` with tokens configured (the
// suite's shared server runs in open local mode).
const { test, expect } = require('@playwright/test');
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const repo = path.resolve(__dirname, '..', '..');
const targetDir = process.env.CARGO_TARGET_DIR || path.join(repo, 'target');
const binary = process.env.SWITCHYARD_BIN || path.join(targetDir, 'debug', 'switchyard');
// The suite's shared server took a free port in the config (SWITCHYARD_E2E_PORT, inherited by
// the workers); this spec's own server takes the next one. A port finder run from inside a
// Playwright worker printed nothing usable here.
const port = Number(process.env.SWITCHYARD_E2E_PORT || 3900) + 1;
const base = `http://127.0.0.1:${port}`;
// Operator tokens need at least 32 characters.
const ADMIN_TOKEN = 'e2e-admin-token-0123456789abcdef0123';
const RUNNER_TOKEN = 'e2e-runner-token-0123456789abcdef012';
const TOKENS = [
  { subject: 'ada', token: ADMIN_TOKEN, scopes: ['admin'] },
  { subject: 'runner', token: RUNNER_TOKEN, scopes: ['jobs:run'] },
];
const admin = { Authorization: `Bearer ${ADMIN_TOKEN}` };

test.use({ baseURL: base });
test.describe.configure({ mode: 'serial' });

let server;
test.beforeAll(async () => {
  test.setTimeout(120000);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchyard-e2e-auth-'));
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'DATABASE_URL'));
  env.SWITCHYARD_OPERATOR_TOKENS = JSON.stringify(TOKENS);
  server = spawn(binary, ['--data-dir', dataDir, 'serve', '--bind', `127.0.0.1:${port}`,
    '--site-root', path.join(repo, 'target', 'site')], { cwd: repo, env, stdio: ['ignore', 'ignore', 'inherit'] });
  for (let i = 0; i < 1100; i++) {
    if (server.exitCode !== null) throw new Error(`the auth server exited with ${server.exitCode} (port ${port} taken?)`);
    try {
      if ((await fetch(`${base}/api/ready`)).ok) return;
    } catch (_) { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('the auth server did not become ready');
});
test.afterAll(() => { if (server) server.kill(); });

async function signIn(page, token) {
  await page.goto('/sign-in');
  await page.fill('#token', token);
  await page.click('#sign-in-submit');
}

test('reads need a token: a signed-out visit goes to sign-in and comes back; a bad token is refused', async ({ page, request }) => {
  // With tokens configured, writes and reads need one (the server has no --public-reads).
  expect((await request.post('/api/jobs', { data: { slug: 'nope', name: 'n', entryPoint: 'builtin:noop' } })).status()).toBe(401);
  expect((await request.get('/api/jobs')).status()).toBe(401);
  expect((await request.get('/api/events')).status()).toBe(401);
  expect((await request.get('/api/jobs', { headers: { Authorization: `Bearer ${RUNNER_TOKEN}` } })).status()).toBe(200);
  // A page sends the signed-out browser to the sign-in form, which says why.
  await page.goto('/runs?status=failed');
  await expect(page).toHaveURL(/\/sign-in\?/);
  await expect(page.locator('#sign-in-error')).toContainText('operators only');
  await expect(page.locator('#session')).toHaveAttribute('data-mode', 'signed-out');
  await page.fill('#token', 'wrong-token-0123456789abcdef0123456');
  await page.click('#sign-in-submit');
  await expect(page.locator('#sign-in-error')).toContainText('not valid');

  await page.goto('/runs?status=failed');
  await page.fill('#token', RUNNER_TOKEN);
  await page.click('#sign-in-submit');
  // Back where the visit started.
  await expect(page).toHaveURL(`${base}/runs?status=failed`);
  await expect(page.locator('#session-subject')).toHaveText('runner');
  await expect(page.locator('#session-scopes')).toHaveText('jobs:run');
  await expect(page.locator('#audit-link')).toHaveCount(0);
  // The cookie holds a server-side session, never the token.
  const cookies = await page.context().cookies();
  const c = cookies.find((x) => x.name === 'switchyard_session');
  expect(c.httpOnly).toBe(true);
  expect(c.sameSite).toBe('Strict');
  expect(c.value).not.toContain(RUNNER_TOKEN);
  expect(cookies.find((x) => x.name === 'switchyard_token')).toBeUndefined();

  await page.click('#sign-out');
  await expect(page).toHaveURL(/\/sign-in\?/);
  await expect(page.locator('#session')).toHaveAttribute('data-mode', 'signed-out');
  // Sign-out ended the session on the server: the old cookie signs nobody in.
  await page.context().addCookies([{ ...c }]);
  await page.goto('/runs');
  await expect(page).toHaveURL(/\/sign-in\?.*error=session_expired/);
  await expect(page.locator('#sign-in-error')).toContainText('session has ended');
  await expect(page.locator('#session')).toHaveAttribute('data-mode', 'signed-out');
});

test('next= only leads to a path on this site', async ({ page }) => {
  // A tab in `next` used to make the browser go to //evil.test after signing in.
  await page.goto('/sign-in?next=%2F%09%2Fevil.test');
  await expect(page.locator('input[name="next"]')).toHaveValue('/');
  await page.fill('#token', RUNNER_TOKEN);
  await page.click('#sign-in-submit');
  await expect(page.locator('#session-subject')).toHaveText('runner');
  expect(new URL(page.url()).origin).toBe(base);
  expect(new URL(page.url()).pathname).toBe('/');
  await page.goto('/sign-in?next=%2Fruns%3Fstatus%3Dfailed');
  await page.fill('#token', RUNNER_TOKEN);
  await page.click('#sign-in-submit');
  await expect(page).toHaveURL(`${base}/runs?status=failed`);
});

test('a button needing a scope the operator lacks is disabled with the reason', async ({ page, request }) => {
  const slug = `wf-${Date.now()}`;
  expect((await request.post('/api/jobs', { headers: admin, data: { slug: `${slug}-job`, name: 'Step', entryPoint: 'builtin:noop' } })).status()).toBe(201);
  expect((await request.post('/api/workflows', { headers: admin,
    data: { slug, name: 'Guarded', steps: [{ id: 'one', jobSlug: `${slug}-job` }] } })).status()).toBe(201);
  const run = await request.post(`/api/workflows/${slug}/run`, { headers: admin, data: {} });
  expect(run.status()).toBe(202);
  const runId = (await run.json()).data.id;

  await signIn(page, RUNNER_TOKEN);
  await page.goto(`/workflows/${slug}`);
  await expect(page.locator('#launch-submit')).toBeDisabled();
  await expect(page.locator('#launch-submit')).toHaveAttribute('title', 'needs scope workflows:run');
  await page.goto(`/runs/workflows/${runId}`);
  await expect(page.locator('#rerun-workflow-run')).toBeDisabled();
  await expect(page.locator('#rerun-workflow-run')).toHaveAttribute('title', 'needs scope workflows:run');
  // The runner may start job runs: that form is enabled.
  await page.goto(`/jobs/${slug}-job`);
  await expect(page.locator('#launch-submit')).toBeEnabled();
});

test('the audit page lists entries for admins, with filters in the URL', async ({ page, request }) => {
  // Something to see: an accepted write and a rejected one.
  await request.post('/api/jobs', { headers: admin, data: { slug: 'audited-job', name: 'A', entryPoint: 'builtin:noop' } });
  await request.post('/api/jobs', { headers: { Authorization: `Bearer ${RUNNER_TOKEN}` }, data: { slug: 'x', name: 'x', entryPoint: 'builtin:noop' } });

  await signIn(page, RUNNER_TOKEN);
  await page.goto('/audit');
  await expect(page.locator('#audit-denied')).toContainText('needs scope admin');
  await expect(page.locator('#audit')).toHaveCount(0);

  await signIn(page, ADMIN_TOKEN);
  await expect(page.locator('#audit-link')).toBeVisible();
  await page.click('#audit-link');
  await expect(page.locator('#audit')).toBeVisible();
  await expect(page.locator('#audit tr[data-action="job.create"][data-status="ok"]').first()).toBeVisible();
  await page.fill('#audit-status', 'forbidden');
  await page.click('#audit-filter');
  await expect(page).toHaveURL(/\/audit\?.*status=forbidden/);
  const rows = page.locator('#audit tbody tr');
  await expect(rows.first()).toBeVisible();
  for (const status of await rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.status))) {
    expect(status).toBe('forbidden');
  }
  await expect(page.locator('#audit')).toContainText('runner');
  await expect(page.locator('#audit')).not.toContainText(RUNNER_TOKEN);
  await page.screenshot({ path: 'test-results/audit-page.png', fullPage: true });
});
