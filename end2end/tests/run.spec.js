const { test, expect } = require('@playwright/test');
const os = require('os');
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');

async function job(request, body) {
  const res = await request.post('/api/jobs', { data: body });
  expect(res.status()).toBe(201);
}

async function start(request, slug, parameters) {
  const res = await request.post(`/api/jobs/${slug}/run`, { data: { parameters } });
  expect(res.status()).toBe(202);
  return (await res.json()).data;
}

async function openRun(page, id) {
  await page.goto(`/runs/jobs/${id}`);
  await expect(page.locator('#live-status')).toHaveText('connected', { timeout: 20000 });
}

test('cancel a sleeping run from the UI', async ({ page, request }) => {
  const slug = `nap-${Date.now()}`;
  await job(request, { slug, name: 'Nap', entryPoint: 'builtin:sleep' });
  const run = await start(request, slug, { durationMs: 30000 });
  await openRun(page, run.id);
  await expect(page.locator('#run-status .badge')).toHaveText('running', { timeout: 15000 });
  await expect(page.locator('#retry-run')).toBeDisabled();
  await page.click('#cancel-run');
  await expect(page.locator('#run-status .badge')).toHaveText('canceled', { timeout: 10000 });
  await expect(page.locator('#cancel-run')).toBeDisabled();
  const stored = await (await request.get(`/api/job-runs/${run.id}`)).json();
  expect(stored.data.status).toBe('canceled');
  await expect(page.locator('#run-log')).toContainText('cancel', { timeout: 10000 });
});

test('a failing run shows its error, and Retry starts a new run', async ({ page, request }) => {
  const slug = `boom-${Date.now()}`;
  await job(request, { slug, name: 'Boom', entryPoint: 'builtin:fail' });
  const run = await start(request, slug, { message: 'disk on fire' });
  await openRun(page, run.id);
  await expect(page.locator('#run-status .badge')).toHaveText('failed', { timeout: 15000 });
  await expect(page.locator('#run-error')).toContainText('disk on fire');
  await page.screenshot({ path: 'test-results/run-failed.png', fullPage: true });
  await page.click('#retry-run');
  await expect(page).not.toHaveURL(new RegExp(run.id), { timeout: 10000 });
  await expect(page.locator('#run-parameters')).toContainText('disk on fire');
});

/// A git repository with one commit, in a new temporary directory.
function repository() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'e2e-repo-'));
  const git = (...args) => execFileSync('git', args, { cwd: dir, stdio: 'ignore' });
  fs.writeFileSync(path.join(dir, 'README'), 'e2e\n');
  git('init', '-q');
  git('add', '.');
  git('-c', 'user.name=e2e', '-c', 'user.email=e2e@example.com', 'commit', '-q', '-m', 'init');
  return dir;
}

test('the log of a repository-build run streams while it runs', async ({ page, request }) => {
  // The command is the definition's (definition-only); the run names the repository.
  const slug = `stream-build-${Date.now()}`;
  await job(request, {
    slug, name: 'Streaming build', entryPoint: 'builtin:repository-build',
    defaultParameters: { command: ['sh', '-c', 'for i in 1 2 3 4 5 6; do echo line$i; sleep 0.7; done'] },
  });
  const run = await start(request, slug, { repoUrl: repository() });
  await openRun(page, run.id);
  await expect(page.locator('#run-log')).toContainText('line1', { timeout: 15000 });
  // Seen while the run is still going: the log follows the run.
  await expect(page.locator('#run-status .badge')).toHaveText('running');
  await expect(page.locator('#run-log')).toContainText('line6', { timeout: 15000 });
  await expect(page.locator('#run-status .badge')).toHaveText('succeeded', { timeout: 15000 });
});
