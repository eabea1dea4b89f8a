// The service registry and the workflow catalog, live.
const { test, expect } = require('@playwright/test');

test('a service registered through the API appears and its health changes live', async ({ page, request }) => {
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  const slug = `svc-${Date.now()}`;
  await page.goto('/services');
  await expect(page).toHaveTitle(/Services/);
  await expect(page.locator('#live-status')).toHaveText('connected', { timeout: 20000 });
  expect((await request.post('/api/services', {
    data: { slug, displayName: 'Probe service', kind: 'http', baseUrl: 'http://127.0.0.1:1' },
  })).status()).toBe(201);
  const row = page.locator(`#services tr[data-slug="${slug}"]`);
  await expect(row.locator('.badge')).toHaveText('unknown', { timeout: 15000 });
  expect((await request.patch(`/api/services/${slug}`, { data: { status: 'unhealthy' } })).status()).toBe(200);
  await expect(row.locator('.badge')).toHaveText('unhealthy', { timeout: 15000 });
  await expect(row.locator('.badge')).toHaveClass(/health-unhealthy/);
  await page.screenshot({ path: 'test-results/services.png', fullPage: true });

  await page.click('nav a[href="/workflows"]');
  await expect(page).toHaveTitle(/Workflows/);
  const wf = `wf-${Date.now()}`;
  expect((await request.post('/api/workflows', {
    data: { slug: wf, name: 'Probe flow', steps: [{ id: 'only', jobSlug: 'repository-ingest' }] },
  })).status()).toBe(201);
  await expect(page.locator(`#workflows tr[data-slug="${wf}"]`)).toContainText('1: only', { timeout: 15000 });
  expect(errors).toEqual([]);
});
