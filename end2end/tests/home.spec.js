const { test, expect } = require('@playwright/test');

test('home page hydrates and shows a run started through the API live', async ({ page, request }) => {
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto('/');
  await expect(page).toHaveTitle(/Switchyard/);
  // Server-rendered before any script runs.
  await expect(page.getByRole('heading', { name: 'Live activity' })).toBeVisible();
  // The EventSource is opened by an effect, which runs only once the page has hydrated.
  await expect(page.locator('#feed-status')).toHaveText('connected', { timeout: 20000 });

  const slug = `e2e-${Date.now()}`;
  const created = await request.post('/api/jobs', {
    data: { slug, name: 'E2E no-op', entryPoint: 'builtin:noop' },
  });
  expect(created.status()).toBe(201);
  const started = await request.post(`/api/jobs/${slug}/run`, { data: { parameters: { from: 'playwright' } } });
  expect(started.status()).toBe(202);
  const run = (await started.json()).data;

  // No reload: the feed receives the run's events over SSE.
  const feed = page.locator('#feed');
  await expect(feed).toContainText(`job ${slug}`);
  await expect(feed.locator('li', { hasText: run.id }).filter({ hasText: 'job.run.succeeded' })).toHaveCount(1, { timeout: 15000 });
  await page.screenshot({ path: 'test-results/home.png', fullPage: true });
  expect(errors).toEqual([]);
});
