// Browser tests against a real `switchyard serve` on a free port with a fresh SQLite data dir.
// BASE_URL points at an already running server instead (then nothing is started here).
const { defineConfig } = require('@playwright/test');
const fs = require('fs');
const os = require('os');
const path = require('path');

function freePortSync() {
  // Playwright wants the URL up front; ask the OS for a free port in a child process.
  const { execFileSync } = require('child_process');
  return Number(execFileSync(process.execPath, ['-e',
    "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"]).toString().trim());
}

const external = process.env.BASE_URL;
const port = external ? null : (process.env.SWITCHYARD_E2E_PORT ? Number(process.env.SWITCHYARD_E2E_PORT) : freePortSync());
if (!external && !process.env.SWITCHYARD_E2E_PORT) process.env.SWITCHYARD_E2E_PORT = String(port); // workers re-read the config
const baseURL = external || `http://127.0.0.1:${port}`;
const repo = path.resolve(__dirname, '..');
const targetDir = process.env.CARGO_TARGET_DIR || path.join(repo, 'target');
const binary = process.env.SWITCHYARD_BIN || path.join(targetDir, 'debug', 'switchyard');
const dataDir = process.env.SWITCHYARD_E2E_DATA || fs.mkdtempSync(path.join(os.tmpdir(), 'switchyard-e2e-'));
process.env.SWITCHYARD_E2E_DATA = dataDir;
// A throw-away Temporal dev server (scripts/install-deps.sh installs the CLI) for workflows with
// "provider": "temporal"; started before switchyard, which connects to it at start-up.
function envPort(name) {
  if (!process.env[name]) process.env[name] = String(freePortSync());
  return Number(process.env[name]);
}
const temporalPort = external ? null : envPort('SWITCHYARD_E2E_TEMPORAL_PORT');
const temporalHttp = external ? null : envPort('SWITCHYARD_E2E_TEMPORAL_HTTP_PORT');
const temporalMetrics = external ? null : envPort('SWITCHYARD_E2E_TEMPORAL_METRICS_PORT');
const temporalCli = path.join(repo, '.temporal-venv', 'bin', 'temporal');

module.exports = defineConfig({
  testDir: './tests',
  timeout: 30000,
  workers: 1,
  outputDir: 'test-results',
  reporter: [['list']],
  use: {
    baseURL,
    screenshot: 'only-on-failure',
    launchOptions: {
      executablePath: '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    },
  },
  webServer: external ? undefined : [{
    command: `"${temporalCli}" server start-dev --headless --port ${temporalPort} --http-port ${temporalHttp} --metrics-port ${temporalMetrics} --db-filename "${path.join(dataDir, 'temporal.db')}" --log-level error`,
    url: `http://127.0.0.1:${temporalHttp}/api/v1/namespaces/default`,
    cwd: repo,
    timeout: 60000,
    reuseExistingServer: false,
  }, {
    command: `"${binary}" --data-dir "${dataDir}" serve --bind 127.0.0.1:${port} --site-root "${path.join(repo, 'target', 'site')}" --temporal-address 127.0.0.1:${temporalPort} --temporal-ui-url http://127.0.0.1:8233`,
    url: `${baseURL}/api/ready`,
    cwd: repo,
    timeout: 60000,
    reuseExistingServer: false,
    // The browser suite runs on the embedded database, whatever the caller's environment says.
    env: Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'DATABASE_URL')),
  }],
});
