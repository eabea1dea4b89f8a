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

test('the run page appends new log lines from one follow instead of refetching the log', async ({ page, request }) => {
  const slug = `append-build-${Date.now()}`;
  await job(request, {
    slug, name: 'Ticking build', entryPoint: 'builtin:repository-build',
    defaultParameters: { command: ['sh', '-c', 'for i in 1 2 3 4 5 6 7 8; do echo tick$i; sleep 0.5; done'] },
  });
  const run = await start(request, slug, { repoUrl: repository() });
  const logRequests = [];
  page.on('request', (r) => {
    const url = r.url();
    if (url.includes('/logs') || url.includes('/_sf/run-log')) logRequests.push(url);
  });
  await openRun(page, run.id);
  await expect(page.locator('#run-log')).toContainText('tick2', { timeout: 15000 });
  await expect(page.locator('#run-status .badge')).toHaveText('running');
  await expect(page.locator('#run-log')).toContainText('tick8', { timeout: 15000 });
  await expect(page.locator('#run-status .badge')).toHaveText('succeeded', { timeout: 15000 });
  await expect(page.locator('#run-log')).toContainText('[switchyard] succeeded');
  // Every line once, in order.
  const lines = (await page.locator('#run-log').innerText()).split('\n');
  const ticks = lines.filter((l) => /^tick\d$/.test(l));
  expect(ticks).toEqual(['tick1', 'tick2', 'tick3', 'tick4', 'tick5', 'tick6', 'tick7', 'tick8']);
  // The page was rendered with the log's end and followed it from its last line, once; it
  // never fetched the log again.
  const follows = logRequests.filter((u) => /\/api\/job-runs\/[^/]+\/logs\?follow=true&after=\d+$/.test(u));
  expect(follows).toHaveLength(1);
  expect(logRequests).toHaveLength(1);
});

test('a long log shows its end and links to the whole log', async ({ page, request }) => {
  const slug = `long-log-${Date.now()}`;
  await job(request, {
    slug, name: 'Long log', entryPoint: 'builtin:repository-build',
    defaultParameters: { command: ['sh', '-c', 'i=0; while [ $i -lt 1500 ]; do i=$((i+1)); echo row$i; done'] },
  });
  const run = await start(request, slug, { repoUrl: repository() });
  await expect.poll(async () => (await (await request.get(`/api/job-runs/${run.id}`)).json()).data.status,
    { timeout: 20000 }).toBe('succeeded');
  await openRun(page, run.id);
  await expect(page.locator('#run-log')).toContainText('row1500');
  // The end of it: the first lines are left out, and the page says so.
  const shown = (await page.locator('#run-log').innerText()).split('\n');
  expect(shown).toContain('row1500');
  expect(shown).not.toContain('row1');
  await expect(page.locator('#log-omitted a')).toHaveAttribute('href', `/api/job-runs/${run.id}/logs`);
  const whole = (await (await request.get(`/api/job-runs/${run.id}/logs`)).text()).split('\n');
  expect(whole).toContain('row1');
});
