const { test, expect } = require('@playwright/test');

async function post(request, path, data, status) {
  const res = await request.post(path, { data });
  expect(res.status(), `${path}: ${await res.text()}`).toBe(status);
  return (await res.json()).data;
}

async function job(request, body) {
  return post(request, '/api/jobs', body, 201);
}

async function workflow(request, body) {
  return post(request, '/api/workflows', body, 201);
}

async function connected(page) {
  await expect(page.locator('#live-status')).toHaveText('connected', { timeout: 20000 });
}

const node = (page, step) => page.locator(`svg.dag g.dag-node[data-step="${step}"]`);

test('launch a diamond workflow from its page and watch the graph turn green live', async ({ page, request }) => {
  const stamp = Date.now();
  const echo = `echo-${stamp}`;
  const nap = `nap-${stamp}`;
  const slug = `diamond-${stamp}`;
  await job(request, { slug: echo, name: 'Echo', entryPoint: 'builtin:noop' });
  await job(request, { slug: nap, name: 'Nap', entryPoint: 'builtin:sleep' });
  // Server and client render the same markup: no hydration complaints on either page.
  const complaints = [];
  page.on('console', (msg) => {
    if (['error', 'warning'].includes(msg.type()) && /hydrat|panicked|unreachable/i.test(msg.text())) complaints.push(msg.text());
  });
  page.on('pageerror', (err) => complaints.push(String(err)));
  await workflow(request, {
    slug, name: 'Diamond', description: 'a fans out to b and c, d joins them',
    parametersSchema: { type: 'object', properties: { who: { type: 'string', default: 'ops' } } },
    steps: [
      { id: 'a', name: 'Start', jobSlug: echo },
      { id: 'b', name: 'Nap a little', jobSlug: nap, parameters: { durationMs: 1200 }, dependsOn: ['a'] },
      { id: 'c', jobSlug: echo, dependsOn: ['a'] },
      { id: 'd', name: 'Join', jobSlug: echo, dependsOn: ['b', 'c'] },
    ],
  });

  await page.goto('/workflows');
  await page.click(`a[href="/workflows/${slug}"]`);
  await expect(page).toHaveURL(new RegExp(`/workflows/${slug}$`));
  await connected(page);
  await expect(page.locator('#workflow-description')).toHaveText('a fans out to b and c, d joins them');
  await expect(page.locator('svg.dag g.dag-node')).toHaveCount(4);
  await expect(page.locator('svg.dag g.dag-node.status-none')).toHaveCount(4);
  await expect(page.locator('#param-who')).toHaveValue('ops');

  await page.click('#launch-submit');
  await expect(page).toHaveURL(/\/runs\/workflows\//, { timeout: 10000 });
  await connected(page);
  // Marks this document: a reload would drop it.
  await page.evaluate(() => { window.__noReload = true; });
  await expect(node(page, 'b')).toHaveClass(/status-running/, { timeout: 15000 });
  await expect(node(page, 'a')).toHaveClass(/status-succeeded/);
  await expect(page.locator('svg.dag g.dag-node.status-succeeded')).toHaveCount(4, { timeout: 15000 });
  await expect(page.locator('#workflow-run-status .badge')).toHaveText('succeeded');
  await expect(page.locator('svg.gantt rect.gantt-bar')).toHaveCount(4);
  await expect(page.locator('svg.gantt rect.gantt-bar.status-succeeded')).toHaveCount(4);
  await expect(page.locator('#steps tbody tr')).toHaveCount(4);
  await expect(page.locator('#steps tr[data-step="b"] .step-input')).toContainText('1200');
  await expect(page.locator('#steps tr[data-step="b"] a.step-job-run')).toHaveCount(1);
  await expect(page.locator('#workflow-run-parameters')).toContainText('ops');
  expect(await page.evaluate(() => window.__noReload)).toBe(true);
  expect(complaints).toEqual([]);
  await expect(page.locator('#cancel-workflow-run')).toBeDisabled();
  await expect(page.locator('#retry-workflow-run')).toBeDisabled();
  await page.screenshot({ path: 'test-results/workflow-run-succeeded.png', fullPage: true });

  // Rerun lands on a new run of the same workflow.
  const first = page.url();
  await page.click('#rerun-workflow-run');
  await expect(page).not.toHaveURL(first, { timeout: 10000 });
  await expect(page.locator('#workflow-run-title')).toContainText(slug);

  // The workflow page lists both runs and colours its graph by the latest one.
  await page.goto(`/workflows/${slug}`);
  await expect(page.locator('#workflow-runs tbody tr')).toHaveCount(2);
});

test('a workflow run on Temporal shows its graph and timeline live, like a native one', async ({ page, request }) => {
  const stamp = Date.now();
  const echo = `t-echo-${stamp}`;
  const nap = `t-nap-${stamp}`;
  const slug = `temporal-diamond-${stamp}`;
  await job(request, { slug: echo, name: 'Echo', entryPoint: 'builtin:noop' });
  await job(request, { slug: nap, name: 'Nap', entryPoint: 'builtin:sleep' });
  await workflow(request, {
    slug, name: 'Diamond on Temporal', provider: 'temporal',
    steps: [
      { id: 'a', jobSlug: echo },
      { id: 'b', jobSlug: nap, parameters: { durationMs: 1500 }, dependsOn: ['a'] },
      { id: 'c', jobSlug: echo, dependsOn: ['a'] },
      { id: 'd', jobSlug: echo, dependsOn: ['b', 'c'] },
    ],
  });
  await page.goto(`/workflows/${slug}`);
  await connected(page);
  await page.click('#launch-submit');
  await expect(page).toHaveURL(/\/runs\/workflows\//, { timeout: 10000 });
  await connected(page);
  await page.evaluate(() => { window.__noReload = true; });
  await expect(node(page, 'b')).toHaveClass(/status-running/, { timeout: 15000 });
  await expect(node(page, 'a')).toHaveClass(/status-succeeded/);
  await expect(page.locator('svg.dag g.dag-node.status-succeeded')).toHaveCount(4, { timeout: 20000 });
  await expect(page.locator('#workflow-run-status .badge')).toHaveText('succeeded');
  await expect(page.locator('svg.gantt rect.gantt-bar.status-succeeded')).toHaveCount(4);
  expect(await page.evaluate(() => window.__noReload)).toBe(true);
  // The engine and its execution, linked to the Temporal UI.
  await expect(page.locator('#workflow-run-provider')).toHaveText('temporal');
  const execution = page.locator('a#workflow-run-execution');
  await expect(execution).toHaveText(/^switchyard-/);
  await expect(execution).toHaveAttribute('href', /^http:\/\/127\.0\.0\.1:8233\/namespaces\/default\/workflows\/switchyard-/);
  await page.screenshot({ path: 'test-results/workflow-run-temporal.png', fullPage: true });
});

test('a failing step shows red in the graph with its error', async ({ page, request }) => {
  const stamp = Date.now();
  const ok = `ok-${stamp}`;
  const boom = `boom-${stamp}`;
  const slug = `fails-${stamp}`;
  await job(request, { slug: ok, name: 'Ok', entryPoint: 'builtin:noop' });
  await job(request, { slug: boom, name: 'Boom', entryPoint: 'builtin:fail', retryPolicy: { maxAttempts: 1, strategy: 'none' } });
  await workflow(request, {
    slug, name: 'Fails',
    steps: [
      { id: 'prepare', jobSlug: ok },
      { id: 'explode', jobSlug: boom, parameters: { message: 'disk on fire' }, dependsOn: ['prepare'] },
    ],
  });
  const run = await post(request, `/api/workflows/${slug}/run`, {}, 202);
  await page.goto(`/runs/workflows/${run.id}`);
  await connected(page);
  await expect(node(page, 'explode')).toHaveClass(/status-failed/, { timeout: 15000 });
  await expect(node(page, 'prepare')).toHaveClass(/status-succeeded/);
  await expect(page.locator('#workflow-run-status .badge')).toHaveText('failed', { timeout: 10000 });
  await expect(page.locator('#steps tr[data-step="explode"] .step-error')).toContainText('disk on fire');
  await expect(page.locator('svg.gantt rect.gantt-bar.status-failed')).toHaveCount(1);
  await expect(page.locator('#retry-workflow-run')).toBeEnabled();
  await expect(page.locator('#cancel-workflow-run')).toBeDisabled();
  await page.screenshot({ path: 'test-results/workflow-run-failed.png', fullPage: true });
});

test('cancel a running workflow from the UI', async ({ page, request }) => {
  const stamp = Date.now();
  const nap = `long-nap-${stamp}`;
  const slug = `sleepy-${stamp}`;
  await job(request, { slug: nap, name: 'Long nap', entryPoint: 'builtin:sleep' });
  await workflow(request, {
    slug, name: 'Sleepy',
    steps: [
      { id: 'sleep', jobSlug: nap, parameters: { durationMs: 20000 } },
      { id: 'after', jobSlug: nap, parameters: { durationMs: 1 }, dependsOn: ['sleep'] },
    ],
  });
  const run = await post(request, `/api/workflows/${slug}/run`, {}, 202);
  await page.goto(`/runs/workflows/${run.id}`);
  await connected(page);
  await expect(node(page, 'sleep')).toHaveClass(/status-running/, { timeout: 15000 });
  await expect(page.locator('#workflow-run-status .badge')).toHaveText('running');
  await expect(page.locator('#retry-workflow-run')).toBeDisabled();
  await page.click('#cancel-workflow-run');
  await expect(page.locator('#workflow-run-status .badge')).toHaveText('canceled', { timeout: 10000 });
  await expect(node(page, 'sleep')).toHaveClass(/status-canceled/, { timeout: 10000 });
  await expect(page.locator('#cancel-workflow-run')).toBeDisabled();
  await expect(page.locator('#retry-workflow-run')).toBeEnabled();
  const stored = await (await request.get(`/api/workflow-runs/${run.id}`)).json();
  expect(stored.data.status).toBe('canceled');
});
