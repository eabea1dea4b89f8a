const { test, expect } = require('@playwright/test');


test('catalog lists a job created through the API, live, with search and type filter', async ({ page, request }) => {
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto('/jobs');
  await expect(page).toHaveTitle(/Jobs/);
  // Server-rendered rows: the seeded definitions.
  await expect(page.locator('#jobs tr[data-slug="repository-ingest"]')).toBeVisible();
  // Live only once hydrated: the EventSource is opened by an effect.
  await expect(page.locator('#live-status')).toHaveText('connected', { timeout: 20000 });
  const slug = `catalog-${Date.now()}`;
  const created = await request.post('/api/jobs', {
    data: { slug, name: 'Catalog probe', type: 'manual', entryPoint: 'builtin:noop' },
  });
  expect(created.status()).toBe(201);
  const row = page.locator(`#jobs tr[data-slug="${slug}"]`);
  await expect(row).toBeVisible({ timeout: 15000 }); // arrives over SSE, no reload
  await expect(row).toContainText('never run');
  await expect(row).toContainText('builtin:noop');

  await page.fill('#job-search', 'catalog-');
  await expect(page.locator('#jobs tbody tr')).toHaveCount(1);
  await page.fill('#job-search', '');
  await page.selectOption('#job-type', 'batch');
  await expect(row).toHaveCount(0);
  await expect(page.locator('#jobs tr[data-slug="repository-build"]')).toBeVisible();
  await page.selectOption('#job-type', 'manual');
  await expect(row).toBeVisible();
  await page.screenshot({ path: 'test-results/jobs.png', fullPage: true });
  expect(errors).toEqual([]);
});

test('a run started through the API appears in the open run list and turns succeeded', async ({ page, request }) => {
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  const slug = `runs-${Date.now()}`;
  expect((await request.post('/api/jobs', {
    data: { slug, name: 'Runs probe', entryPoint: 'builtin:sleep' },
  })).status()).toBe(201);
  await page.goto('/runs');
  await expect(page).toHaveTitle(/Runs/);
  await expect(page.locator('.legend .status-expired')).toBeVisible();
  await expect(page.locator('#live-status')).toHaveText('connected', { timeout: 20000 });

  const started = await request.post(`/api/jobs/${slug}/run`, { data: { parameters: { durationMs: 1500 } } });
  expect(started.status()).toBe(202);
  const run = (await started.json()).data;
  const row = page.locator(`#runs tr[data-run-id="${run.id}"]`);
  await expect(row).toBeVisible({ timeout: 15000 });
  await expect(row.locator('.badge')).toHaveText('running', { timeout: 15000 });
  await expect(row.locator('.badge')).toHaveText('succeeded', { timeout: 15000 });
  await page.selectOption('#runs-status', 'failed');
  await expect(row).toHaveCount(0);
  await page.selectOption('#runs-status', 'succeeded');
  await expect(row).toBeVisible();
  await page.screenshot({ path: 'test-results/runs.png', fullPage: true });
  expect(errors).toEqual([]);
});
