const { test, expect } = require('@playwright/test');

test('launch form is generated from the schema, validates, submits and lands on the run', async ({ page, request }) => {
  const slug = `form-${Date.now()}`;
  const created = await request.post('/api/jobs', {
    data: {
      slug, name: 'Form probe', entryPoint: 'builtin:noop',
      parametersSchema: {
        type: 'object', required: ['name', 'mode', 'git'],
        properties: {
          name: { type: 'string', description: 'who' },
          mode: { enum: ['fast', 'slow'] },
          count: { type: 'integer', minimum: 1, default: 2 },
          dry: { type: 'boolean' },
          tags: { type: 'array', items: { type: 'string' }, minItems: 1 },
          git: { type: 'object', required: ['url'], properties: { url: { type: 'string' } } },
        },
      },
      defaultParameters: { name: 'prefilled' },
    },
  });
  expect(created.status()).toBe(201);
  await page.goto(`/jobs/${slug}`);
  await expect(page.locator('#live-status')).toHaveText('connected', { timeout: 20000 });
  // Fields from the schema, defaults prefilled, required marks.
  await expect(page.locator('#param-name')).toHaveValue('prefilled');
  await expect(page.locator('#param-count')).toHaveValue('2');
  await expect(page.locator('#param-mode option')).toHaveCount(3);
  await expect(page.locator('#param-git-url')).toBeVisible();
  await expect(page.locator('label[for="param-git-url"] .required')).toHaveCount(1);

  // Invalid: count below its minimum, nested required url missing, no tags.
  await page.fill('#param-count', '0');
  await page.selectOption('#param-mode', 'slow');
  await page.click('#launch-submit');
  await expect(page.locator('#param-count-error')).toContainText('at least 1');
  await expect(page.locator('#param-git-url-error')).toContainText('required');
  await expect(page).toHaveURL(new RegExp(`/jobs/${slug}$`));

  await page.fill('#param-count', '3');
  await page.fill('#param-git-url', 'file:///tmp/repo');
  await page.fill('#param-tags', 'a\nb');
  await page.check('#param-dry');
  await page.click('#launch-submit');
  await expect(page).toHaveURL(/\/runs\/jobs\//, { timeout: 10000 });
  await expect(page.locator('#run-status .badge')).toHaveText('succeeded', { timeout: 15000 });
  const result = JSON.parse(await page.locator('#run-result').textContent());
  expect(result).toEqual({ name: 'prefilled', mode: 'slow', count: 3, dry: true, tags: ['a', 'b'], git: { url: 'file:///tmp/repo' } });
  await page.screenshot({ path: 'test-results/run-succeeded.png', fullPage: true });
});

test('server-side problems are shown next to their fields', async ({ page, request }) => {
  const slug = `srv-${Date.now()}`;
  // The schema says string; the entry point (builtin:sleep) needs an integer durationMs:
  // only the server knows, and its problem comes back to the field.
  expect((await request.post('/api/jobs', {
    data: { slug, name: 'Server check', entryPoint: 'builtin:sleep',
      parametersSchema: { type: 'object', properties: { durationMs: { type: 'string' } } } },
  })).status()).toBe(201);
  await page.goto(`/jobs/${slug}`);
  await expect(page.locator('#live-status')).toHaveText('connected', { timeout: 20000 });
  await page.fill('#param-durationMs', 'soon');
  await page.click('#launch-submit');
  await expect(page.locator('#param-durationMs-error')).not.toBeEmpty({ timeout: 10000 });
  await expect(page).toHaveURL(new RegExp(`/jobs/${slug}$`));
});
