const { test, expect } = require('@playwright/test');

test('dashboard counts, chart and latest failures follow runs live', async ({ page, request }) => {
  await page.goto('/');
  await expect(page.locator('#hourly-chart')).toBeVisible();
  await expect(page.locator('#live-status')).toHaveText('connected', { timeout: 20000 });
  const failedBefore = Number(await page.locator('#counts li[data-status="failed"] strong').textContent());

  const slug = `dash-${Date.now()}`;
  expect((await request.post('/api/jobs', { data: { slug, name: 'Dash', entryPoint: 'builtin:fail' } })).status()).toBe(201);
  const res = await request.post(`/api/jobs/${slug}/run`, { data: { parameters: { message: 'dashboard drill' } } });
  expect(res.status()).toBe(202);

  await expect(page.locator('#counts li[data-status="failed"] strong')).toHaveText(String(failedBefore + 1), { timeout: 15000 });
  await expect(page.locator('#failures')).toContainText('dashboard drill');
  await expect(page.locator('#hourly-chart rect.fill-failed')).not.toHaveCount(0);
  await page.screenshot({ path: 'test-results/dashboard.png', fullPage: true });
});
