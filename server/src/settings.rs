//! Settings: one typed struct per command, parsed once by clap with `SWITCHYARD_*` environment
//! fallbacks, then passed explicitly. Nothing else in the server reads the environment.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::egress::EgressPolicy;
use domain::{auth::OperatorTokens, hosts::HostName, secrets::EnvAllowList};

/// Switchyard: jobs and workflows orchestrator in one binary.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalSettings,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Settings every command shares.
#[derive(Debug, Clone, Args)]
pub struct GlobalSettings {
    /// Directory for the embedded database, checkouts and other state.
    #[arg(
        long,
        env = "SWITCHYARD_DATA_DIR",
        default_value = "data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Database URL: `postgres://...` for PostgreSQL, `sqlite://...` for a given SQLite file;
    /// unset means `<data-dir>/switchyard.db`.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Log output format.
    #[arg(
        long,
        env = "SWITCHYARD_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    /// Key of the secret store: 32 random bytes as 64 hex characters or base64 (prefer the
    /// environment variable over the flag). Unset: `<data-dir>/secret.key`, generated with mode
    /// 0600 at first start. Every `serve` and `worker` process of one database needs the same key.
    #[arg(
        long,
        env = "SWITCHYARD_SECRET_KEY",
        hide_env_values = true,
        global = true
    )]
    pub secret_key: Option<SecretKeyText>,
    /// A file holding the secret store's key (same format as `SWITCHYARD_SECRET_KEY`; surrounding
    /// whitespace is ignored). Preferred over the variable: a process's environment is easier to
    /// leak than a file only its user can read. Not together with `SWITCHYARD_SECRET_KEY`.
    #[arg(long, env = "SWITCHYARD_SECRET_KEY_FILE", global = true)]
    pub secret_key_file: Option<PathBuf>,
}

/// The secret store's key as given, still unchecked (`secrets::SecretCipher::load` validates it
/// with an error that never shows it). Opaque so `Debug` output and clap messages cannot leak it.
#[derive(Clone)]
pub struct SecretKeyText(String);

impl SecretKeyText {
    pub fn new(text: &str) -> Self {
        SecretKeyText(text.to_string())
    }

    /// The text itself, for decoding.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretKeyText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKeyText(***)")
    }
}

impl std::str::FromStr for SecretKeyText {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(SecretKeyText::new(s))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// API, event stream, pages and workers in one process.
    Serve(Box<ServeArgs>),
    /// Workers only, for scale-out on other machines sharing the database.
    Worker(Box<WorkerArgs>),
    /// Database migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Push no-op runs (or no-op workflows, `--workflows`) through the real API and workers and
    /// print throughput and latency.
    Bench(BenchArgs),
    /// Internal: runs one build command for a `serve` or `worker` process and makes sure nothing
    /// it started outlives it (see `supervisor.rs`). Not for people.
    #[command(hide = true)]
    BuildSupervisor(SupervisorArgs),
}

/// `switchyard build-supervisor --parent PID [--uid U --gid G] [--grace-ms N] -- PROGRAM ARGS...`;
/// the command's environment arrives on stdin (JSON), never through the supervisor's own.
#[derive(Debug, Clone, Args)]
pub struct SupervisorArgs {
    /// The server process that started it; the supervisor gives up if it is already gone.
    #[arg(long)]
    pub parent: i32,
    /// User id the command runs as (only when the supervisor runs as root).
    #[arg(long, requires = "gid")]
    pub uid: Option<u32>,
    /// Group id the command runs as (its only group).
    #[arg(long, requires = "uid")]
    pub gid: Option<u32>,
    /// Time between SIGTERM and SIGKILL when the command's processes are stopped.
    #[arg(long, default_value_t = 1000)]
    pub grace_ms: u64,
    /// The program and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    pub argv: Vec<std::ffi::OsString>,
}

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum MigrateAction {
    /// Apply all pending migrations.
    Up,
    /// Revert the last `steps` migrations.
    Down {
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
    /// List migrations and whether they are applied.
    Status,
}

/// How this process executes runs.
#[derive(Debug, Clone, Args)]
pub struct WorkerSettings {
    /// Number of apalis workers in this process; 0 serves without executing runs.
    #[arg(long, env = "SWITCHYARD_WORKERS", default_value_t = 2)]
    pub workers: usize,
    /// Runs one worker executes at the same time.
    #[arg(long, env = "SWITCHYARD_WORKER_CONCURRENCY", default_value_t = 32)]
    pub concurrency: usize,
    /// How long a worker's claim on a running run lasts without a heartbeat; after that the run
    /// is taken over by another worker as a new attempt.
    #[arg(long, env = "SWITCHYARD_LEASE_MS", default_value_t = 30_000)]
    pub lease_ms: u64,
    /// How often an idle worker looks for new tasks pushed by other processes.
    #[arg(long, env = "SWITCHYARD_POLL_MS", default_value_t = 200)]
    pub poll_ms: u64,
    /// On shutdown, how long in-flight runs may take to finish before they are handed back.
    #[arg(long, env = "SWITCHYARD_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,
    /// Environment variables that `{"secret": {"source": "env", ...}}` references may read
    /// (comma-separated names or `PREFIX*`; empty: none). SWITCHYARD_* and DATABASE_URL never.
    #[arg(long, env = "SWITCHYARD_SECRET_ENV_ALLOW", default_value = "",
        value_parser = EnvAllowList::parse)]
    pub secret_env_allow: EnvAllowList,
    /// Most bytes of output one run's log keeps (all attempts together); past it the log says
    /// it was cut, further output is dropped, and the run goes on.
    #[arg(long, env = "SWITCHYARD_MAX_LOG_BYTES_PER_RUN", default_value_t = DEFAULT_MAX_LOG_BYTES_PER_RUN,
          value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_log_bytes_per_run: u64,
    #[command(flatten)]
    pub build: BuildSettings,
    #[command(flatten)]
    pub providers: ProviderSettings,
}

/// The workflow engines besides the built-in one (README "Workflow engines").
#[derive(Debug, Clone, Args)]
pub struct ProviderSettings {
    /// A Temporal frontend (`host:port`): workflows with `"provider": "temporal"` run on it,
    /// and this process runs a Temporal worker for them. Unset: no Temporal.
    #[arg(long, env = "SWITCHYARD_TEMPORAL_ADDRESS")]
    pub temporal_address: Option<String>,
    /// The Temporal namespace.
    #[arg(long, env = "SWITCHYARD_TEMPORAL_NAMESPACE", default_value = "default")]
    pub temporal_namespace: String,
    /// The Temporal task queue Switchyard's workers poll.
    #[arg(
        long,
        env = "SWITCHYARD_TEMPORAL_TASK_QUEUE",
        default_value = "switchyard"
    )]
    pub temporal_task_queue: String,
    /// The Temporal web UI (`http://host:port`): run pages link their executions there.
    #[arg(long, env = "SWITCHYARD_TEMPORAL_UI_URL")]
    pub temporal_ui_url: Option<String>,
    /// Registers the in-memory engine (`"provider": "memory"`), for tests only: its
    /// executions do not survive the process.
    #[arg(long, env = "SWITCHYARD_ENABLE_MEMORY_PROVIDER", hide = true)]
    pub enable_memory_provider: bool,
}

impl Default for ProviderSettings {
    /// As the flags' defaults.
    fn default() -> Self {
        ProviderSettings {
            temporal_address: None,
            temporal_namespace: "default".into(),
            temporal_task_queue: "switchyard".into(),
            temporal_ui_url: None,
            enable_memory_provider: false,
        }
    }
}

/// A run's log keeps at most 10 MiB unless configured otherwise.
pub const DEFAULT_MAX_LOG_BYTES_PER_RUN: u64 = 10 * 1024 * 1024;

/// How `builtin:repository-build` commands are confined (README "Build isolation").
#[derive(Debug, Clone, Args)]
pub struct BuildSettings {
    /// When the server runs as root, builds run as this user (and its primary group only). It
    /// must exist and must not be root: `useradd --system --no-create-home --shell
    /// /usr/sbin/nologin switchyard-build` (scripts/install-deps.sh does it). Ignored when the
    /// server is not root: builds then run as the server's own user.
    #[arg(
        long,
        env = "SWITCHYARD_BUILD_USER",
        default_value = "switchyard-build"
    )]
    pub build_user: String,
    /// The `switchyard` executable that supervises each build (`build-supervisor`); default:
    /// the running executable.
    #[arg(long, env = "SWITCHYARD_BUILD_SUPERVISOR", hide = true)]
    pub build_supervisor: Option<PathBuf>,
}

impl Default for BuildSettings {
    fn default() -> Self {
        BuildSettings {
            build_user: "switchyard-build".to_string(),
            build_supervisor: None,
        }
    }
}

impl WorkerSettings {
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms.max(1000))
    }
    pub fn heartbeat(&self) -> Duration {
        self.lease() / 3
    }
    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.poll_ms.max(5))
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            workers: 2,
            concurrency: 32,
            lease_ms: 30_000,
            poll_ms: 200,
            shutdown_grace_ms: 10_000,
            secret_env_allow: EnvAllowList::default(),
            max_log_bytes_per_run: DEFAULT_MAX_LOG_BYTES_PER_RUN,
            build: BuildSettings::default(),
            providers: ProviderSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "SWITCHYARD_BIND", default_value = "127.0.0.1:3000")]
    pub bind: SocketAddr,
    /// Directory with the built site (pkg/, styles, public files).
    #[arg(long, env = "SWITCHYARD_SITE_ROOT", default_value = "target/site")]
    pub site_root: PathBuf,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "SWITCHYARD_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// How often registered services' `healthPath` is polled (failing ones back off, doubling
    /// up to 5 minutes); 0 turns polling off.
    #[arg(long, env = "SWITCHYARD_HEALTH_INTERVAL_MS", default_value_t = 15_000)]
    pub health_interval_ms: u64,
    #[command(flatten)]
    pub worker: WorkerSettings,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub alerts: AlertSettings,
    #[command(flatten)]
    pub egress: EgressArgs,
    #[command(flatten)]
    pub retention: RetentionSettings,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// What one `serve` process gives its clients at most (README "Limits"): every limit answers
/// with a clear status (429 for one client, 503 for the whole server) and `Retry-After`.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Event streams (`GET /api/events`) one client address may hold open (IPv6: per /64);
    /// beyond it 429 `rate_limited`.
    #[arg(long, env = "SWITCHYARD_MAX_SSE_PER_CLIENT", default_value_t = LimitSettings::default().sse_per_client,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sse_per_client: u32,
    /// Event streams open in total; beyond it 503 `overloaded`.
    #[arg(long, env = "SWITCHYARD_MAX_SSE_TOTAL", default_value_t = LimitSettings::default().sse_total,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sse_total: u32,
    /// Most events a reconnecting stream replays after its `Last-Event-ID`; when more were
    /// missed, the stream starts with a `stream.truncated` event (the client must reload its
    /// state) and replays only the newest ones.
    #[arg(long, env = "SWITCHYARD_MAX_REPLAY_EVENTS", default_value_t = LimitSettings::default().replay_events,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_replay_events: u64,
    /// Log follows (`GET /api/job-runs/:id/logs?follow=true`) one client address may hold
    /// open; beyond it 429 `rate_limited`.
    #[arg(long, env = "SWITCHYARD_MAX_LOG_FOLLOWERS_PER_CLIENT", default_value_t = LimitSettings::default().followers_per_client,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_log_followers_per_client: u32,
    /// Log follows open in total; beyond it 503 `overloaded`.
    #[arg(long, env = "SWITCHYARD_MAX_LOG_FOLLOWERS", default_value_t = LimitSettings::default().followers_total,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_log_followers: u32,
    /// Largest `offset` a list accepts; deeper pages are reached with `cursor`
    /// (`meta.nextCursor`), larger offsets get 400 `invalid_request`.
    #[arg(long, env = "SWITCHYARD_MAX_LIST_OFFSET", default_value_t = LimitSettings::default().max_offset)]
    pub max_list_offset: u64,
    /// How long a request may take until its response starts, in ms (streams then go on);
    /// beyond it 503 `timeout`.
    #[arg(long, env = "SWITCHYARD_REQUEST_TIMEOUT_MS", default_value_t = DEFAULT_REQUEST_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub request_timeout_ms: u64,
}

/// Requests get 30 s to start their response unless configured otherwise.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;

/// The limits of [`LimitArgs`], parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitSettings {
    pub sse_per_client: u32,
    pub sse_total: u32,
    pub replay_events: u64,
    pub followers_per_client: u32,
    pub followers_total: u32,
    pub max_offset: u64,
    pub request_timeout: Duration,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            sse_per_client: 64,
            sse_total: 1024,
            replay_events: 1000,
            followers_per_client: 32,
            followers_total: 128,
            max_offset: 10_000,
            request_timeout: Duration::from_millis(DEFAULT_REQUEST_TIMEOUT_MS),
        }
    }
}

impl LimitArgs {
    pub fn settings(&self) -> LimitSettings {
        LimitSettings {
            sse_per_client: self.max_sse_per_client,
            sse_total: self.max_sse_total,
            replay_events: self.max_replay_events,
            followers_per_client: self.max_log_followers_per_client,
            followers_total: self.max_log_followers,
            max_offset: self.max_list_offset,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
        }
    }
}

/// Operator tokens (api.md "Conventions"), sign-in sessions, and the hosts this server answers
/// to. With no tokens the server runs in open local mode and binds only loopback addresses.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// Operator tokens as JSON `[{"subject", "token", "scopes": [...]}]`, each token at least
    /// 32 characters. Unset (and no file): open local mode; set but empty (`''`, `[]`): an
    /// error.
    #[arg(long, env = "SWITCHYARD_OPERATOR_TOKENS", hide_env_values = true)]
    pub operator_tokens: Option<String>,
    /// A file holding the same JSON as `--operator-tokens`.
    #[arg(long, env = "SWITCHYARD_OPERATOR_TOKENS_FILE")]
    pub operator_tokens_file: Option<PathBuf>,
    /// Reads (GET endpoints, the event stream, logs, pages) need no token. Without it, when
    /// tokens are configured, every read needs a valid token (any scope). No effect in open
    /// local mode, where everything is open.
    #[arg(long, env = "SWITCHYARD_PUBLIC_READS", action = clap::ArgAction::Set,
        num_args = 0..=1, default_value_t = false, default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new())]
    pub public_reads: bool,
    /// Replaced by `--public-reads` (reads are protected by default now). `true` changes
    /// nothing; `false` is a start-up error that says to use `--public-reads`.
    #[arg(long, env = "SWITCHYARD_PROTECT_READS", action = clap::ArgAction::Set, hide = true,
        num_args = 0..=1, default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new())]
    pub protect_reads: Option<bool>,
    /// Host names this server answers to besides loopback (`localhost`, 127.0.0.0/8, `[::1]`),
    /// the bound address and the public URL's host; comma-separated, ports ignored. Requests
    /// naming any other `Host` are refused (421) before any handler runs (DNS rebinding).
    #[arg(long, env = "SWITCHYARD_ALLOWED_HOSTS")]
    pub allowed_hosts: Option<String>,
    /// The URL browsers reach this server at (e.g. `https://switchyard.example.com`, behind a
    /// TLS proxy): its host is allowed; an https URL makes the sign-in cookie `Secure` and
    /// `__Host-` prefixed.
    #[arg(long, env = "SWITCHYARD_PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<url::Url>,
    /// How long a sign-in session lasts, in ms (default 12 hours).
    #[arg(long, env = "SWITCHYARD_SESSION_TTL_MS", default_value_t = DEFAULT_SESSION_TTL_MS,
          value_parser = clap::value_parser!(u64).range(1000..=31_536_000_000))]
    pub session_ttl_ms: u64,
}

/// Sign-in sessions last 12 hours unless configured otherwise.
pub const DEFAULT_SESSION_TTL_MS: u64 = 12 * 60 * 60 * 1000;

impl Default for AuthArgs {
    /// Nothing configured: open local mode, loopback hosts only, 12-hour sessions.
    fn default() -> Self {
        AuthArgs {
            operator_tokens: None,
            operator_tokens_file: None,
            public_reads: false,
            protect_reads: None,
            allowed_hosts: None,
            public_url: None,
            session_ttl_ms: DEFAULT_SESSION_TTL_MS,
        }
    }
}

impl AuthArgs {
    /// Reads and parses the configured tokens and hosts; a clear error for a bad configuration.
    /// Unset tokens mean open local mode; tokens that are set but empty (`''`, whitespace,
    /// `[]`, or a file holding that) are an error: an empty list must not silently open the
    /// server.
    pub fn load(&self) -> anyhow::Result<AuthSettings> {
        let (source, json) = match (&self.operator_tokens, &self.operator_tokens_file) {
            (Some(_), Some(_)) => anyhow::bail!(
                "operator tokens: give SWITCHYARD_OPERATOR_TOKENS or --operator-tokens-file, not both"
            ),
            (Some(json), None) => ("SWITCHYARD_OPERATOR_TOKENS".to_string(), Some(json.clone())),
            (None, Some(path)) => (
                format!("operator tokens file {}", path.display()),
                Some(std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("cannot read operator tokens file {}: {e}", path.display())
                })?),
            ),
            (None, None) => (String::new(), None),
        };
        if self.protect_reads == Some(false) && !self.public_reads {
            anyhow::bail!(
                "SWITCHYARD_PROTECT_READS=false (--protect-reads=false) no longer opens reads: reads need a token by default when tokens are configured; to open them, set SWITCHYARD_PUBLIC_READS=true (--public-reads) and unset SWITCHYARD_PROTECT_READS"
            );
        }
        let tokens = match json {
            None => OperatorTokens::default(),
            Some(json) if json.trim().is_empty() => anyhow::bail!(
                "invalid operator tokens in {source}: it is set but empty; configure at least one token, or unset it for open local mode (loopback only)"
            ),
            Some(json) => OperatorTokens::parse(&json).map_err(|problems| {
                let list = problems
                    .into_vec()
                    .iter()
                    .map(|d| {
                        format!(
                            "{}: {}",
                            if d.path.is_empty() {
                                "/"
                            } else {
                                d.path.as_str()
                            },
                            d.message
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                anyhow::anyhow!("invalid operator tokens in {source}: {list}")
            })?,
        };
        let mut allowed_hosts = Vec::new();
        let mut bad = Vec::new();
        for entry in self
            .allowed_hosts
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            match HostName::parse(entry) {
                Some(h) => allowed_hosts.push(h),
                None => bad.push(format!("{entry:?}")),
            }
        }
        if !bad.is_empty() {
            anyhow::bail!(
                "invalid --allowed-hosts (SWITCHYARD_ALLOWED_HOSTS): {} (expected host names or IP addresses, comma-separated, e.g. switchyard.example.com,10.0.0.5)",
                bad.join(", ")
            );
        }
        Ok(AuthSettings {
            tokens,
            public_reads: self.public_reads,
            allowed_hosts,
            public_url: self.public_url.clone(),
            session_ttl: Duration::from_millis(self.session_ttl_ms),
        })
    }
}

fn parse_public_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme must be http or https, not {}",
            url.scheme()
        ));
    }
    if url.host().is_none() {
        return Err("the URL has no host".into());
    }
    Ok(url)
}

/// Parsed operator tokens (hashes only), whether reads are public, the hosts this server
/// answers to and the sign-in sessions' lifetime.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub tokens: OperatorTokens,
    /// `--public-reads`: reads need no token even when tokens are configured.
    pub public_reads: bool,
    /// `--allowed-hosts`.
    pub allowed_hosts: Vec<HostName>,
    /// `--public-url`: its host is allowed; https means sign-in cookies are `Secure`.
    pub public_url: Option<url::Url>,
    pub session_ttl: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            tokens: OperatorTokens::default(),
            public_reads: false,
            allowed_hosts: Vec::new(),
            public_url: None,
            session_ttl: Duration::from_millis(DEFAULT_SESSION_TTL_MS),
        }
    }
}

impl AuthSettings {
    /// No tokens: open local mode (everything allowed, subject `local`, loopback only).
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Whether reads need a token: tokens are configured and `--public-reads` is not given.
    pub fn protects_reads(&self) -> bool {
        !self.is_open() && !self.public_reads
    }

    /// The hosts allowed besides loopback and the bound address: `--allowed-hosts` and the
    /// public URL's host.
    pub fn extra_hosts(&self) -> Vec<HostName> {
        let mut hosts = self.allowed_hosts.clone();
        if let Some(host) = self.public_host() {
            hosts.push(host);
        }
        hosts
    }

    /// The host of an `https` public URL: requests naming it came through the TLS proxy.
    pub fn https_public_host(&self) -> Option<HostName> {
        self.public_url
            .as_ref()
            .filter(|u| u.scheme() == "https")
            .and_then(|_| self.public_host())
    }

    fn public_host(&self) -> Option<HostName> {
        let url = self.public_url.as_ref()?;
        match url.host()? {
            url::Host::Domain(d) => HostName::parse(d),
            url::Host::Ipv4(ip) => Some(HostName::Ip(ip.into())),
            url::Host::Ipv6(ip) => Some(HostName::Ip(ip.into())),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub worker: WorkerSettings,
    #[command(flatten)]
    pub egress: EgressArgs,
}

/// Where outbound calls (`builtin:http`, service steps, health checks, alert webhooks, git
/// fetches over http(s)) may connect: `egress.rs`.
#[derive(Debug, Clone, Default, Args)]
pub struct EgressArgs {
    /// Addresses outbound calls may not reach: comma-separated CIDR ranges or addresses.
    /// Unset: 169.254.0.0/16, fe80::/10 and fd00:ec2::254 (link-local and cloud metadata).
    /// Given, it replaces that list; empty denies nothing.
    #[arg(long, env = "SWITCHYARD_EGRESS_DENY", value_name = "CIDRS",
          value_parser = parse_egress_deny)]
    pub egress_deny: Option<EgressList>,
    /// When set, outbound calls may reach only these ranges or addresses (comma-separated),
    /// and the deny list still applies.
    #[arg(long, env = "SWITCHYARD_EGRESS_ALLOW", value_name = "CIDRS",
          value_parser = parse_egress_allow)]
    pub egress_allow: Option<EgressList>,
}

impl EgressArgs {
    pub fn policy(&self) -> EgressPolicy {
        EgressPolicy::new(
            self.egress_deny.as_ref().map(|l| l.0.clone()),
            self.egress_allow.as_ref().map(|l| l.0.clone()),
        )
    }
}

/// A parsed `--egress-deny` or `--egress-allow` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressList(pub Vec<ipnet::IpNet>);

fn parse_egress_deny(text: &str) -> Result<EgressList, String> {
    crate::egress::parse_list(text).map(EgressList)
}

/// An empty allow list would refuse every call: more likely an empty variable than intended.
fn parse_egress_allow(text: &str) -> Result<EgressList, String> {
    let list = crate::egress::parse_list(text)?;
    if list.is_empty() {
        return Err(
            "empty: give the ranges outbound calls may reach, or leave it unset (to refuse every \
             destination, use --egress-deny 0.0.0.0/0,::/0)"
                .to_string(),
        );
    }
    Ok(EgressList(list))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchDatabase {
    Sqlite,
    Postgres,
    Both,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Runs to push per measurement.
    #[arg(long, default_value_t = 2000)]
    pub runs: usize,
    /// Which database(s) to measure; Postgres uses `DATABASE_URL` (or the local default).
    #[arg(long, value_enum, default_value = "both")]
    pub database: BenchDatabase,
    /// Concurrent HTTP clients pushing runs.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Measure the list pages instead: store this many finished runs (20 jobs, 7 days of
    /// history), then time the run lists, the job catalog, the dashboard and the rendered pages.
    #[arg(long, conflicts_with = "workflows")]
    pub pages: Option<u64>,
    /// Measure workflow runs instead: a 10-step linear chain of no-op steps (sequential runs,
    /// then concurrent ones) and a 1 -> 50 -> 1 fan-out/fan-in; prints run durations
    /// (createdAt -> completedAt), the engine overhead per step and runs/s.
    #[arg(long)]
    pub workflows: bool,
    /// With `--workflows`: sequential runs of the 10-step chain.
    #[arg(long, default_value_t = 20)]
    pub chain_runs: usize,
    /// With `--workflows`: chain runs started at once for the concurrent variant (0 skips it).
    #[arg(long, default_value_t = 20)]
    pub concurrent_chains: usize,
    /// With `--workflows`: sequential runs of the 1 -> 50 -> 1 fan-out/fan-in.
    #[arg(long, default_value_t = 10)]
    pub fanout_runs: usize,
    /// With `--workflows`: the workflow engines to measure, one after the other, with the same
    /// workloads (`native`, `temporal` or `native,temporal`).
    #[arg(long, value_delimiter = ',', default_value = "native")]
    pub provider: Vec<String>,
    /// With `--provider temporal`: the Temporal frontend to use; unset, the bench starts
    /// `temporal server start-dev` (from `.temporal-venv`, which `make deps` installs).
    #[arg(long)]
    pub temporal_address: Option<String>,
}

/// Everything `Application::build` needs (the `serve` command, or a test).
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub bind: SocketAddr,
    pub site_root: PathBuf,
    pub max_body_bytes: usize,
    /// Zero: no health polling.
    pub health_interval: Duration,
    pub worker: WorkerSettings,
    /// Operator tokens and read protection.
    pub auth: AuthSettings,
    /// `None` (and no `secret_key_file`): the key file in the data directory.
    pub secret_key: Option<SecretKeyText>,
    /// `--secret-key-file`: a file holding the key (an error together with `secret_key`).
    pub secret_key_file: Option<PathBuf>,
    pub alerts: AlertSettings,
    /// Where outbound calls may connect.
    pub egress: EgressPolicy,
    /// How long finished runs, events and audit entries are kept.
    pub retention: RetentionSettings,
    /// Event streams, replays, log followers, list offsets, request time.
    pub limits: LimitSettings,
}

impl Settings {
    pub fn from_serve(global: &GlobalSettings, serve: &ServeArgs) -> anyhow::Result<Self> {
        Ok(Settings {
            data_dir: global.data_dir.clone(),
            database_url: global.database_url.clone(),
            bind: serve.bind,
            site_root: serve.site_root.clone(),
            max_body_bytes: serve.max_body_bytes,
            health_interval: match serve.health_interval_ms {
                0 => Duration::ZERO,
                ms => Duration::from_millis(ms.max(100)),
            },
            worker: serve.worker.clone(),
            auth: serve.auth.load()?,
            secret_key: global.secret_key.clone(),
            secret_key_file: global.secret_key_file.clone(),
            alerts: serve.alerts.clone(),
            egress: serve.egress.policy(),
            retention: serve.retention.clone(),
            limits: serve.limits.settings(),
        })
    }

    /// Settings for an app on a free loopback port with the given storage (tests, bench).
    pub fn local(data_dir: PathBuf, database_url: Option<String>) -> Self {
        Settings {
            data_dir,
            database_url,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            site_root: PathBuf::from("target/site"),
            max_body_bytes: 1024 * 1024,
            health_interval: Duration::from_secs(15),
            worker: WorkerSettings::default(),
            auth: AuthSettings::default(),
            secret_key: None,
            secret_key_file: None,
            alerts: AlertSettings::default(),
            egress: EgressPolicy::default(),
            limits: LimitSettings::default(),
            retention: RetentionSettings::default(),
        }
    }
}

/// How long finished runs, events and audit entries are kept (README "Retention"). One `serve`
/// process of a cluster prunes at a time (`retention.rs`); give every `serve` the same values.
#[derive(Debug, Clone, Args)]
pub struct RetentionSettings {
    /// Finished job runs (with their logs) and finished workflow runs (with their steps and
    /// their steps' job runs) are deleted this many days after they ended; 0 keeps them.
    #[arg(long, env = "SWITCHYARD_RETAIN_RUNS_DAYS", default_value_t = 30)]
    pub retain_runs_days: u32,
    /// Keeps at most this many finished runs of each job (runs of no workflow) and of each
    /// workflow, the newest, whatever their age; 0: no such limit.
    #[arg(
        long,
        env = "SWITCHYARD_RETAIN_RUNS_PER_DEFINITION",
        default_value_t = 0
    )]
    pub retain_runs_per_definition: u64,
    /// Events (the replay log of /api/events and of Last-Event-ID) are deleted after this many
    /// days; 0 keeps them.
    #[arg(long, env = "SWITCHYARD_RETAIN_EVENTS_DAYS", default_value_t = 7)]
    pub retain_events_days: u32,
    /// Audit entries are deleted after this many days; 0 keeps them.
    #[arg(long, env = "SWITCHYARD_RETAIN_AUDIT_DAYS", default_value_t = 365)]
    pub retain_audit_days: u32,
    /// How often the pruner looks for what retention no longer keeps, in ms (0: never).
    #[arg(long, env = "SWITCHYARD_PRUNE_INTERVAL_MS", default_value_t = 600_000)]
    pub prune_interval_ms: u64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            retain_runs_days: 30,
            retain_runs_per_definition: 0,
            retain_events_days: 7,
            retain_audit_days: 365,
            prune_interval_ms: 600_000,
        }
    }
}

/// Workflow failure alerts (evaluated by every `serve` process, sent once per crossing).
#[derive(Debug, Clone, Args)]
pub struct AlertSettings {
    /// Failures of one workflow within the window that raise an alert.
    #[arg(long, env = "SWITCHYARD_ALERT_THRESHOLD", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub alert_threshold: u32,
    /// The window in which failures are counted, in ms.
    #[arg(long, env = "SWITCHYARD_ALERT_WINDOW_MS", default_value_t = 900_000,
          value_parser = clap::value_parser!(u64).range(1000..=2_592_000_000))]
    pub alert_window_ms: u64,
    /// Where alerts are POSTed; unset: alerts are only logged (and recorded as `skipped`).
    #[arg(long, env = "SWITCHYARD_ALERT_WEBHOOK_URL", value_parser = parse_webhook_url)]
    pub alert_webhook_url: Option<url::Url>,
    /// Delivery attempts per alert (the first included).
    #[arg(long, env = "SWITCHYARD_ALERT_MAX_ATTEMPTS", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=20))]
    pub alert_max_attempts: u32,
    /// Delay before the second attempt, in ms; it doubles for each further one (at most 5 min).
    #[arg(long, env = "SWITCHYARD_ALERT_BACKOFF_MS", default_value_t = 1000)]
    pub alert_backoff_ms: u64,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            alert_threshold: 3,
            alert_window_ms: 900_000,
            alert_webhook_url: None,
            alert_max_attempts: 5,
            alert_backoff_ms: 1000,
        }
    }
}

fn parse_webhook_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(format!("scheme must be http or https, not {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress_of(args: &[&str]) -> Result<EgressPolicy, String> {
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        Ok(match cli.command {
            Command::Serve(serve) => serve.egress.policy(),
            Command::Worker(worker) => worker.egress.policy(),
            _ => unreachable!("only serve and worker take egress settings"),
        })
    }

    #[test]
    fn serve_and_worker_take_the_egress_lists() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        for command in ["serve", "worker"] {
            let default = egress_of(&["switchyard", command]).unwrap();
            assert_eq!(default, EgressPolicy::default());
            let given = egress_of(&[
                "switchyard",
                command,
                "--egress-deny",
                "10.0.0.0/8",
                "--egress-allow",
                "10.0.0.0/8,192.168.0.0/16",
            ])
            .unwrap();
            assert!(given.decide(ip("10.0.0.1")).is_err());
            assert_eq!(given.decide(ip("192.168.1.1")), Ok(()));
            assert!(given.decide(ip("127.0.0.1")).is_err());
            // Replaced: the default list no longer applies.
            let open = egress_of(&["switchyard", command, "--egress-deny", ""]).unwrap();
            assert_eq!(open.decide(ip("169.254.169.254")), Ok(()));
            let bad = egress_of(&["switchyard", command, "--egress-deny", "10.0.0.0/8,nope"])
                .unwrap_err();
            assert!(bad.contains("'nope'"), "{bad}");
            let empty = egress_of(&["switchyard", command, "--egress-allow", " "]).unwrap_err();
            assert!(empty.contains("empty"), "{empty}");
        }
    }

    const TOKEN: &str = "a-token-of-at-least-32-characters-0123";

    fn tokens(json: &str) -> AuthArgs {
        AuthArgs {
            operator_tokens: Some(json.to_string()),
            ..AuthArgs::default()
        }
    }

    #[test]
    fn unset_tokens_mean_open_local_mode() {
        let auth = AuthArgs::default().load().unwrap();
        assert!(auth.is_open());
        assert_eq!(
            auth.session_ttl,
            Duration::from_millis(DEFAULT_SESSION_TTL_MS)
        );
        let json = format!(r#"[{{"subject": "a", "token": "{TOKEN}", "scopes": ["admin"]}}]"#);
        let auth = tokens(&json).load().unwrap();
        assert!(!auth.is_open());
        assert_eq!(auth.tokens.len(), 1);
    }

    #[test]
    fn an_empty_token_list_is_an_error_not_open_mode() {
        for empty in ["", "   ", "\n", "[]", " [ ]\n"] {
            let err = tokens(empty).load().unwrap_err().to_string();
            assert!(
                err.contains("SWITCHYARD_OPERATOR_TOKENS")
                    && (err.contains("set but empty") || err.contains("empty list"))
                    && err.contains("open local mode"),
                "{empty:?}: {err}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in [("empty.json", ""), ("list.json", "[]\n")] {
            let file = dir.path().join(name);
            std::fs::write(&file, content).unwrap();
            let args = AuthArgs {
                operator_tokens_file: Some(file),
                ..AuthArgs::default()
            };
            let err = args.load().unwrap_err().to_string();
            assert!(err.contains(name) && err.contains("empty"), "{err}");
        }
    }

    #[test]
    fn allowed_hosts_and_the_public_url() {
        let args = AuthArgs {
            allowed_hosts: Some(" Switchyard.Example:8080, 10.0.0.5 ,,[::1]".into()),
            public_url: Some(parse_public_url("https://ops.example.com/switchyard").unwrap()),
            ..AuthArgs::default()
        };
        let auth = args.load().unwrap();
        let hosts: Vec<String> = auth.extra_hosts().iter().map(|h| h.to_string()).collect();
        assert_eq!(
            hosts,
            ["switchyard.example", "10.0.0.5", "[::1]", "ops.example.com"]
        );
        assert_eq!(auth.https_public_host(), HostName::parse("ops.example.com"));
        let args = AuthArgs {
            allowed_hosts: Some("good.example,bad host,http://x".into()),
            ..AuthArgs::default()
        };
        let err = args.load().unwrap_err().to_string();
        assert!(
            err.contains("\"bad host\"") && err.contains("\"http://x\"") && !err.contains("good"),
            "{err}"
        );
        assert!(parse_public_url("ftp://x.example").is_err());
        assert!(parse_public_url("switchyard.example").is_err());
        let plain = AuthArgs {
            public_url: Some(parse_public_url("http://ops.example.com").unwrap()),
            ..AuthArgs::default()
        };
        assert_eq!(plain.load().unwrap().https_public_host(), None);
    }

    fn serve_settings(args: &[&str]) -> Result<Settings, String> {
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        match cli.command {
            Command::Serve(serve) => {
                Settings::from_serve(&cli.global, &serve).map_err(|e| e.to_string())
            }
            _ => unreachable!("serve only"),
        }
    }

    #[test]
    fn with_tokens_reads_need_one_unless_public_reads() {
        let json = format!(r#"[{{"subject": "a", "token": "{TOKEN}", "scopes": ["admin"]}}]"#);
        let with = |extra: &[&str]| {
            let mut args = vec!["switchyard", "serve", "--operator-tokens", json.as_str()];
            args.extend_from_slice(extra);
            serve_settings(&args)
        };
        assert!(with(&[]).unwrap().auth.protects_reads());
        assert!(!with(&["--public-reads"]).unwrap().auth.protects_reads());
        assert!(
            !with(&["--public-reads=true"])
                .unwrap()
                .auth
                .protects_reads()
        );
        assert!(
            with(&["--public-reads=false"])
                .unwrap()
                .auth
                .protects_reads()
        );
        // The old switch: `true` is the default now, `false` says what to do instead.
        assert!(with(&["--protect-reads"]).unwrap().auth.protects_reads());
        let err = with(&["--protect-reads=false"]).unwrap_err();
        assert!(err.contains("--public-reads"), "{err}");
        // Open local mode stays open, whatever the switch says.
        let open = serve_settings(&["switchyard", "serve"]).unwrap();
        assert!(open.auth.is_open() && !open.auth.protects_reads());
    }

    #[test]
    fn limits_have_defaults_and_flags() {
        let defaults = serve_settings(&["switchyard", "serve"]).unwrap();
        assert_eq!(defaults.limits, LimitSettings::default());
        assert_eq!(defaults.limits.request_timeout, Duration::from_secs(30));
        assert_eq!(defaults.worker.max_log_bytes_per_run, 10 * 1024 * 1024);
        let given = serve_settings(&[
            "switchyard",
            "serve",
            "--max-sse-per-client",
            "3",
            "--max-sse-total",
            "30",
            "--max-replay-events",
            "7",
            "--max-log-followers-per-client",
            "2",
            "--max-log-followers",
            "20",
            "--max-list-offset",
            "500",
            "--request-timeout-ms",
            "1500",
            "--max-log-bytes-per-run",
            "2048",
        ])
        .unwrap();
        assert_eq!(
            given.limits,
            LimitSettings {
                sse_per_client: 3,
                sse_total: 30,
                replay_events: 7,
                followers_per_client: 2,
                followers_total: 20,
                max_offset: 500,
                request_timeout: Duration::from_millis(1500),
            }
        );
        assert_eq!(given.worker.max_log_bytes_per_run, 2048);
        let worker =
            Cli::try_parse_from(["switchyard", "worker", "--max-log-bytes-per-run", "4096"])
                .unwrap();
        match worker.command {
            Command::Worker(w) => assert_eq!(w.worker.max_log_bytes_per_run, 4096),
            _ => unreachable!(),
        }
        for bad in [
            &["--max-sse-total", "0"][..],
            &["--request-timeout-ms", "5"],
            &["--max-log-bytes-per-run", "10"],
        ] {
            let mut args = vec!["switchyard", "serve"];
            args.extend_from_slice(bad);
            assert!(serve_settings(&args).is_err(), "{bad:?}");
        }
    }
}
