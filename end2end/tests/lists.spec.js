// Run lists: filters and keyset paging held in the URL, relative times, keyboard use.
const { test, expect } = require('@playwright/test');

async function job(request, slug, entryPoint) {
  const res = await request.post('/api/jobs', { data: { slug, name: `List probe ${slug}`, entryPoint } });
  expect(res.status()).toBe(201);
}

async function run(request, slug, parameters = {}) {
  const res = await request.post(`/api/jobs/${slug}/run`, { data: { parameters } });
  expect(res.status()).toBe(202);
  return (await res.json()).data;
}

test('runs page filters by job, status and text, and pages through older runs', async ({ page, request }) => {
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  const slug = `paged-${Date.now()}`;
  const failing = `${slug}-bad`;
  await job(request, slug, 'builtin:noop');
  await job(request, failing, 'builtin:fail');
  const ids = [];
  for (let i = 0; i < 27; i++) ids.push((await run(request, slug, { i })).id);
  const bad = await run(request, failing, { message: `${slug} gearbox seized` });

  await page.goto('/runs');
  await expect(page.locator('#live-status')).toHaveText('connected', { timeout: 20000 });
  await page.selectOption('#runs-job', slug);
  await expect(page).toHaveURL(new RegExp(`job=${slug}`));
  await expect(page.locator('#runs tbody tr')).toHaveCount(25);
  await expect(page.locator('.pager .count')).toHaveText('25 of 27 run(s)');
  // Newest first: the last run started is on top; times are relative with the exact one on hover.
  await expect(page.locator('#runs tbody tr').first()).toHaveAttribute('data-run-id', ids[26]);
  const when = page.locator('#runs tbody tr').first().locator('time');
  await expect(when).toHaveText(/just now|s ago/);
  await expect(when).toHaveAttribute('title', /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC$/);

  await page.click('.pager a.older');
  await expect(page).toHaveURL(/cursor=/);
  await expect(page.locator('#runs tbody tr')).toHaveCount(2);
  await expect(page.locator(`#runs tr[data-run-id="${ids[0]}"]`)).toBeVisible();
  // A run arriving now does not shift the older page.
  const late = await run(request, slug);
  await page.waitForTimeout(1500);
  await expect(page.locator('#runs tbody tr')).toHaveCount(2);
  await page.click('.pager a.newest');
  await expect(page.locator(`#runs tr[data-run-id="${late.id}"]`)).toBeVisible({ timeout: 10000 });

  // Search by error text (the job filter is kept; clear it first), then by status.
  await page.selectOption('#runs-job', '');
  await page.fill('#runs-search', 'GEARBOX seized');
  await page.press('#runs-search', 'Enter');
  await expect(page).toHaveURL(/q=GEARBOX/);
  await expect(page.locator(`#runs tr[data-run-id="${bad.id}"]`)).toBeVisible({ timeout: 10000 });
  await expect(page.locator('#runs tbody tr')).toHaveCount(1);
  await expect(page.locator('#runs tbody tr .error-cell')).toContainText('gearbox seized');
  await page.selectOption('#runs-status', 'succeeded');
  await expect(page.locator('.empty')).toContainText('No runs match these filters');
  await page.click('.empty a');
  await expect(page).toHaveURL(/\/runs$/);
  await page.screenshot({ path: 'test-results/runs-filtered.png', fullPage: true });
  expect(errors).toEqual([]);
});

test('job page shows its own run history with a status filter', async ({ page, request }) => {
  const slug = `history-${Date.now()}`;
  await job(request, slug, 'builtin:fail');
  const r = await run(request, slug, { message: 'history failure' });
  await page.goto(`/jobs/${slug}`);
  await expect(page).toHaveTitle(new RegExp(slug));
  await expect(page.locator('#live-status')).toHaveText('connected', { timeout: 20000 });
  const row = page.locator(`#job-runs tr[data-run-id="${r.id}"]`);
  await expect(row.locator('.badge')).toHaveText('failed', { timeout: 15000 });
  await page.selectOption('#job-runs-status', 'succeeded');
  await expect(page).toHaveURL(new RegExp(`/jobs/${slug}\\?status=succeeded`));
  await expect(row).toHaveCount(0);
  await expect(page.locator('.empty')).toContainText('No runs match');
  await page.selectOption('#job-runs-status', 'failed');
  await expect(row).toBeVisible();
  await page.screenshot({ path: 'test-results/job-history.png', fullPage: true });
});

test('keyboard: a skip link leads to the content and the nav marks the current page', async ({ page }) => {
  await page.goto('/runs');
  await expect(page.locator('#live-status')).toHaveText('connected', { timeout: 20000 });
  await page.keyboard.press('Tab');
  await expect(page.locator('.skip-link')).toBeFocused();
  await page.keyboard.press('Enter');
  await expect(page).toHaveURL(/#main$/);
  await expect(page.locator('nav a[aria-current="page"]')).toHaveText('Runs');
  // Every form control on the page has a label.
  const unlabeled = await page.$$eval('select, input:not([type=hidden])', (els) =>
    els.filter((e) => !e.closest('label') && !(e.id && document.querySelector(`label[for="${e.id}"]`))).length);
  expect(unlabeled).toBe(0);
});
