const { test, expect } = require('@playwright/test');

async function finishedRun(request, slug, parameters) {
  const res = await request.post(`/api/jobs/${slug}/run`, { data: { parameters } });
  expect(res.status()).toBe(202);
  const id = (await res.json()).data.id;
  await expect.poll(async () => (await (await request.get(`/api/job-runs/${id}`)).json()).data.status,
    { timeout: 15000 }).toMatch(/succeeded|failed/);
  return id;
}

test('metrics page charts runs by status, failure rates, durations and queue depth, live', async ({ page, request }) => {
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  const slug = `metrics-${Date.now()}`;
  expect((await request.post('/api/jobs', {
    data: { slug, name: 'Metrics drill', entryPoint: 'builtin:fail', retryPolicy: { maxAttempts: 1, strategy: 'none' } },
  })).status()).toBe(201);
  await finishedRun(request, slug, { message: 'metrics drill' });

  await page.goto('/');
  await page.locator('nav a[href="/metrics"]').click();
  await expect(page).toHaveURL(/\/metrics$/);
  await expect(page.getByRole('heading', { name: 'Metrics', exact: true })).toBeVisible();
  for (const id of ['#failure-rates', '#jobs-by-status', '#workflows-by-status', '#queue-depth', '#durations-job-runs']) {
    await expect(page.locator(id)).toBeVisible();
  }
  const row = page.locator(`#jobs-table tr[data-slug="${slug}"]`);
  await expect(row).toBeVisible();
  await expect(page.locator('#jobs-failure-rate')).not.toHaveAttribute('data-rate', '0');

  // Straight to the page (server-rendered), then live: a second failure shows without a reload.
  await page.goto('/metrics');
  await expect(page.locator('#live-status')).toHaveText('connected', { timeout: 20000 });
  const failed = page.locator('#jobs-by-status g[data-name="failed"]');
  const before = Number(await failed.getAttribute('data-value'));
  await finishedRun(request, slug, { message: 'metrics drill 2' });
  await expect(failed).toHaveAttribute('data-value', String(before + 1), { timeout: 15000 });
  await expect(page.locator('#durations-job-runs rect[data-count]:not([data-count="0"])')).not.toHaveCount(0);
  await page.screenshot({ path: 'test-results/metrics.png', fullPage: true });

  // The same path without a browser's Accept header is the Prometheus text.
  const text = await request.get('/metrics');
  expect(text.headers()['content-type']).toContain('text/plain');
  expect(await text.text()).toContain(`switchyard_job_runs_total{job="${slug}",status="failed"}`);
  expect(errors).toEqual([]);
});
