//! `builtin:repository-ingest` `{"repoUrl", "ref"?}`: brings a git repository (local path,
//! file:// or http(s) URL) into a checkout below the data directory and describes it. The same
//! logic prepares checkouts for `builtin:repository-build`.
//!
//! Checkouts are made with `init` + fetch from an anonymous remote rather than `clone`, so that
//! credentials in the URL never reach `.git/config` or the reflogs, where builds could read them.
//!
//! An http(s) remote passes the egress policy first ([`check_remote`]): libgit2 resolves and
//! connects by itself, so its host is resolved here and refused (a fatal error) when any of its
//! addresses is. libgit2 then fetches without a proxy and follows no redirect to another host.
use std::{
    collections::HashMap,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    sync::{Arc, LazyLock, Mutex, PoisonError},
};

use git2::{
    AutotagOption, Commit, ErrorClass, FetchOptions, ObjectType, ProxyOptions, RemoteCallbacks,
    RemoteRedirect, Repository, TreeWalkMode, TreeWalkResult, build::CheckoutBuilder,
};
use nix::{
    dir::{Dir, Type},
    errno::Errno,
    fcntl::{AT_FDCWD, AtFlags, OFlag, openat},
    sys::stat::Mode,
    unistd::{Gid, Uid, fchownat},
};
use serde_json::{Map, Value, json};
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};
use tokio_util::sync::CancellationToken;

use super::{
    EntryPoint, JobError, JobResult, JobRunContext, LogSink, Problem, REPOSITORY_INGEST,
    check_string, checked_params, field, redact_url,
};
use crate::sandbox::{BuildSandbox, CHECKOUTS_DIR};

/// File names recognised as build manifests (at the root and one directory down).
const MANIFESTS: [&str; 10] = [
    "Cargo.toml",
    "package.json",
    "Dockerfile",
    "Makefile",
    "go.mod",
    "pyproject.toml",
    "requirements.txt",
    "pom.xml",
    "build.gradle",
    "CMakeLists.txt",
];

/// Every branch and tag, force-updated so rewritten upstream history is followed.
const REFSPECS: [&str; 2] = [
    "+refs/heads/*:refs/remotes/origin/*",
    "+refs/tags/*:refs/tags/*",
];
const ORIGIN_HEAD: &str = "refs/remotes/origin/HEAD";
const ORIGIN_PREFIX: &str = "refs/remotes/origin/";

pub(super) struct Ingest {
    pub(super) sandbox: Arc<BuildSandbox>,
}

pub(super) fn check(params: &Map<String, Value>, problems: &mut Vec<Problem>) {
    check_string(params, "repoUrl", true, problems);
    check_string(params, "ref", false, problems);
}

#[async_trait::async_trait]
impl EntryPoint for Ingest {
    fn name(&self) -> &'static str {
        REPOSITORY_INGEST
    }

    fn default_definition(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({
            "slug": "repository-ingest", "name": "Repository ingestion", "version": 1, "type": "batch",
            "entryPoint": "builtin:repository-ingest",
            "parametersSchema": {"type": "object", "required": ["repoUrl"], "properties": {
                "repoUrl": {"type": "string", "description": "Local path, file:// or http(s) URL of a git repository"},
                "ref": {"type": "string", "description": "Branch, tag or commit (default: the remote's HEAD)"}}},
            "defaultParameters": {}, "timeoutMs": 600000,
            "retryPolicy": {"maxAttempts": 3, "strategy": "exponential", "initialDelayMs": 1000, "maxDelayMs": 60000, "jitter": "full"},
            "metadata": {"tags": ["ingest"], "seeded": true}
        }))
    }

    fn check(&self, params: &Map<String, Value>, problems: &mut Vec<Problem>) {
        check(params, problems)
    }

    async fn execute(&self, ctx: JobRunContext) -> JobResult {
        let params = checked_params(REPOSITORY_INGEST, &ctx.parameters)?;
        let repo_url = field(params, "repoUrl")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let git_ref = field(params, "ref").and_then(Value::as_str);
        let (checkout, _exclusive) = ingest(&ctx, &self.sandbox, repo_url, git_ref).await?;
        ctx.metrics.set("fileCount", checkout.file_count);
        Ok(checkout.to_json())
    }
}

/// A checked-out repository, as reported in the ingest result.
#[derive(Debug, Clone)]
pub(super) struct Checkout {
    pub path: PathBuf,
    pub head_commit: String,
    pub branch: Option<String>,
    pub requested_ref: Option<String>,
    pub file_count: usize,
    pub manifests: Vec<String>,
}

impl Checkout {
    fn to_json(&self) -> Value {
        json!({
            "checkout": self.path.to_string_lossy(),
            "headCommit": self.head_commit,
            "branch": self.branch,
            "ref": self.requested_ref,
            "fileCount": self.file_count,
            "manifests": self.manifests,
        })
    }
}

/// Where a repository comes from.
struct Source {
    /// What libgit2 fetches from (may hold credentials).
    url: String,
    /// The same without credentials, for logs, errors and `.git/config`.
    shown: String,
    /// Network failures are worth a retry; a missing local repository is not.
    remote: bool,
}

impl Source {
    fn parse(repo_url: &str) -> Result<Source, JobError> {
        let repo_url = repo_url.trim();
        let shown = redact_url(repo_url);
        let Some((scheme, _)) = repo_url.split_once("://") else {
            let path = std::path::absolute(repo_url)
                .map_err(|e| JobError::Fatal(format!("invalid repository path {shown}: {e}")))?;
            if !path.exists() {
                return Err(JobError::Fatal(format!(
                    "repository {} not found",
                    path.display()
                )));
            }
            let url = path.to_string_lossy().into_owned();
            return Ok(Source {
                shown: url.clone(),
                url,
                remote: false,
            });
        };
        let remote = match scheme.to_ascii_lowercase().as_str() {
            "http" | "https" => true,
            "file" => false,
            other => {
                return Err(JobError::Fatal(format!(
                    "unsupported repository URL scheme '{other}' in {shown} (use a path, file:// or http(s))"
                )));
            }
        };
        Ok(Source {
            url: repo_url.to_string(),
            shown,
            remote,
        })
    }

    /// A git error as a job error, with the credential-bearing URL scrubbed from its message.
    fn error(&self, doing: &str, error: &git2::Error) -> JobError {
        let mut message = error.message().to_string();
        if self.url != self.shown {
            message = message.replace(&self.url, &self.shown);
        }
        JobError::Fatal(format!("{doing} {} failed: {message}", self.shown))
    }

    /// Like `error`, but transport trouble with a remote server is retryable.
    fn fetch_error(&self, error: &git2::Error) -> JobError {
        let transient = match error.class() {
            ErrorClass::Net | ErrorClass::Os | ErrorClass::Ssl => true,
            ErrorClass::Http => error.message().contains("status code: 5"),
            _ => false,
        };
        match self.error("fetching", error) {
            JobError::Fatal(message) if self.remote && transient => JobError::Retryable(message),
            other => other,
        }
    }
}

/// Clones or updates the checkout for `repo_url`, checks out `git_ref` (default: the remote's
/// default branch), hands it to the build user and describes the result. Returns with the
/// checkout's lock held exclusively: the caller drops it (an ingest) or downgrades it to shared
/// for the command it runs there (a build), so no other ingest can slip in between.
pub(super) async fn ingest(
    ctx: &JobRunContext,
    sandbox: &BuildSandbox,
    repo_url: &str,
    git_ref: Option<&str>,
) -> Result<(Checkout, OwnedRwLockWriteGuard<()>), JobError> {
    if ctx.cancel.is_cancelled() {
        return Err(JobError::Canceled);
    }
    let source = Source::parse(repo_url)?;
    if source.remote {
        check_remote(ctx.http.policy(), &source).await?;
    }
    let dir = checkouts_root(&ctx.data_dir)?.join(checkout_name(&source.shown, &source.url));
    let guard = lock_exclusive(ctx, &dir).await?;
    let (log, cancel) = (ctx.log.clone(), ctx.cancel.clone());
    let git_ref = git_ref.map(str::to_string);
    let owner = sandbox.user.as_ref().map(|u| (u.uid, u.gid));
    // libgit2 blocks.
    let checkout = tokio::task::spawn_blocking(move || {
        let hand_over = |uid, gid, to: &str| {
            chown_tree(&dir, uid, gid).map_err(|e| {
                JobError::Retryable(format!("handing {} to {to} failed: {e}", dir.display()))
            })
        };
        // A checkout a build could write in is taken back first: libgit2 refuses repositories
        // another user owns, and no build (of another checkout, as the same user) can change
        // what the server is writing while it fetches and checks out.
        if owner.is_some() && dir.exists() {
            hand_over(Uid::effective(), Gid::effective(), "the server")?;
        }
        let checkout = sync_checkout(&source, &dir, git_ref.as_deref(), &log, &cancel)?;
        // The build writes in its checkout as the build user.
        if let Some((uid, gid)) = owner {
            hand_over(uid, gid, "the build user")?;
        }
        Ok(checkout)
    })
    .await
    .map_err(|e| JobError::Fatal(format!("repository ingest stopped unexpectedly: {e}")))??;
    Ok((checkout, guard))
}

/// Refuses an http(s) remote whose host the egress policy refuses: an IP address host that is
/// refused, or a name with any refused address among those it resolves to (libgit2 may connect
/// to any of them).
///
/// Time-of-check gap: libgit2 resolves the name again when it connects. A DNS answer that
/// changes between the two lookups (rebinding with a short TTL) can still send it to an address
/// that was not checked. Closing that would take a git transport that connects to the checked
/// address itself; `builtin:http` and service steps have no such gap (their client connects only
/// to the addresses its resolver admitted).
async fn check_remote(
    policy: &crate::egress::EgressPolicy,
    source: &Source,
) -> Result<(), JobError> {
    let url = reqwest::Url::parse(&source.url)
        .map_err(|e| JobError::Fatal(format!("invalid repository URL {}: {e}", source.shown)))?;
    let refused =
        |r: crate::egress::Refused| JobError::Fatal(format!("fetching {}: {r}", source.shown));
    let host = match url.host() {
        Some(url::Host::Domain(host)) => host.to_string(),
        Some(url::Host::Ipv4(ip)) => {
            return policy.check_ip(&ip.to_string(), ip.into()).map_err(refused);
        }
        Some(url::Host::Ipv6(ip)) => {
            return policy.check_ip(&ip.to_string(), ip.into()).map_err(refused);
        }
        None => {
            return Err(JobError::Fatal(format!(
                "repository URL {} has no host",
                source.shown
            )));
        }
    };
    let port = url.port_or_known_default().unwrap_or(443);
    // A name that does not resolve now is not fetched: libgit2's own lookup must not be the
    // only one.
    let addresses = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| {
            JobError::Retryable(format!("resolving {host} for {} failed: {e}", source.shown))
        })?;
    policy
        .check_host(&host, addresses.map(|a| a.ip()))
        .map_err(refused)
}

/// `<data-dir>/checkouts`, created when missing, with symlinks resolved: the one directory
/// builds may run in (below it), and the prefix of every checkout lock's key.
pub(super) fn checkouts_root(data_dir: &Path) -> Result<PathBuf, JobError> {
    let root = data_dir.join(CHECKOUTS_DIR);
    std::fs::create_dir_all(&root)
        .and_then(|()| root.canonicalize())
        .map_err(|e| JobError::Retryable(format!("preparing {} failed: {e}", root.display())))
}

/// One lock per checkout directory, in this process only (another `serve` or `worker` process
/// on the same data directory does not see it): builds hold it shared while their command runs,
/// ingests exclusively while they update the checkout.
type CheckoutLocks = HashMap<PathBuf, Arc<RwLock<()>>>;

fn checkout_lock(dir: &Path) -> Arc<RwLock<()>> {
    static LOCKS: LazyLock<Mutex<CheckoutLocks>> = LazyLock::new(|| Mutex::new(HashMap::new()));
    let mut locks = LOCKS.lock().unwrap_or_else(PoisonError::into_inner);
    // Forget the locks nobody holds or waits for.
    locks.retain(|_, lock| Arc::strong_count(lock) > 1);
    locks.entry(dir.to_path_buf()).or_default().clone()
}

/// The checkout's lock for an ingest; says in the run log when it has to wait.
async fn lock_exclusive(
    ctx: &JobRunContext,
    dir: &Path,
) -> Result<OwnedRwLockWriteGuard<()>, JobError> {
    let lock = checkout_lock(dir);
    if let Ok(guard) = lock.clone().try_write_owned() {
        return Ok(guard);
    }
    ctx.log.info(format!(
        "waiting for {}: a build or another ingest is using it",
        dir.display()
    ));
    tokio::select! {
        guard = lock.write_owned() => Ok(guard),
        () = ctx.cancel.cancelled() => Err(JobError::Canceled),
    }
}

/// The checkout's lock for a build's command (several builds may share a checkout).
pub(super) async fn lock_shared(
    ctx: &JobRunContext,
    dir: &Path,
) -> Result<OwnedRwLockReadGuard<()>, JobError> {
    let lock = checkout_lock(dir);
    if let Ok(guard) = lock.clone().try_read_owned() {
        return Ok(guard);
    }
    ctx.log.info(format!(
        "waiting for {}: an ingest is updating it",
        dir.display()
    ));
    tokio::select! {
        guard = lock.read_owned() => Ok(guard),
        () = ctx.cancel.cancelled() => Err(JobError::Canceled),
    }
}

/// Gives `dir` and everything below it to `uid`:`gid` without following a symlink anywhere:
/// every step is relative to a directory opened with `O_NOFOLLOW`, and every entry is changed
/// with `AT_SYMLINK_NOFOLLOW`, so a symlink a build left (or swaps in meanwhile) cannot point
/// the walk outside the checkout.
fn chown_tree(dir: &Path, uid: Uid, gid: Gid) -> nix::Result<()> {
    // `dir` sits directly in the checkouts directory, which only root can change.
    fchownat(
        AT_FDCWD,
        dir,
        Some(uid),
        Some(gid),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )?;
    let fd = openat(AT_FDCWD, dir, DIR_FLAGS, Mode::empty())?;
    chown_below(fd, uid, gid)
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

fn chown_below(fd: OwnedFd, uid: Uid, gid: Gid) -> nix::Result<()> {
    let mut subdirs = Vec::new();
    {
        let mut entries = Dir::from_fd(fd.try_clone().map_err(|_| Errno::EMFILE)?)?;
        for entry in entries.iter() {
            let entry = entry?;
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            fchownat(
                &fd,
                name,
                Some(uid),
                Some(gid),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
            if entry.file_type() == Some(Type::Directory) {
                subdirs.push(name.to_owned());
            }
        }
    }
    for name in subdirs {
        match openat(&fd, name.as_c_str(), DIR_FLAGS, Mode::empty()) {
            Ok(sub) => chown_below(sub, uid, gid)?,
            // Replaced by a symlink or removed meanwhile: nothing of ours to hand over.
            Err(Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `<slug>-<hash>`: readable, yet distinct for URLs that slug alike. The slug comes from the
/// redacted URL so no credential becomes a directory name; the hash covers the full URL.
fn checkout_name(shown: &str, url: &str) -> String {
    let mut slug = String::new();
    for c in shown.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let mut slug: String = slug.trim_matches('-').chars().take(80).collect();
    slug.truncate(slug.trim_end_matches('-').len());
    if slug.is_empty() {
        slug.push_str("repo");
    }
    let hash = format!("{:016x}", fnv1a(url.as_bytes()));
    format!("{slug}-{}", &hash[..12])
}

/// FNV-1a: stable across Rust releases (unlike `DefaultHasher`), so checkouts keep their names.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn sync_checkout(
    source: &Source,
    dir: &Path,
    git_ref: Option<&str>,
    log: &LogSink,
    cancel: &CancellationToken,
) -> Result<Checkout, JobError> {
    let canceled = || {
        if cancel.is_cancelled() {
            Err(JobError::Canceled)
        } else {
            Ok(())
        }
    };
    canceled()?;
    let repo = open_or_init(source, dir, log)?;
    canceled()?;
    fetch(&repo, source, cancel)?;
    canceled()?;

    let (commit, branch) = resolve(&repo, git_ref, source)?;
    let mut force = CheckoutBuilder::new();
    force.force();
    // Checkout before moving HEAD: the old HEAD is the baseline that tells libgit2 which files
    // to delete.
    repo.checkout_tree(commit.as_object(), Some(&mut force))
        .and_then(|()| repo.set_head_detached(commit.id()))
        .map_err(|e| {
            JobError::Retryable(format!(
                "checking out {} failed: {}",
                commit.id(),
                e.message()
            ))
        })?;
    let head_commit = commit.id().to_string();
    log.info(format!(
        "checked out {head_commit} ({})",
        branch.as_deref().or(git_ref).unwrap_or("detached")
    ));

    let tree = commit.tree().map_err(|e| source.error("reading", &e))?;
    let (file_count, manifests) =
        describe(&repo, &tree).map_err(|e| source.error("reading", &e))?;
    log.info(format!(
        "{file_count} files; manifests: {}",
        if manifests.is_empty() {
            "none".to_string()
        } else {
            manifests.join(", ")
        }
    ));
    Ok(Checkout {
        path: dir.to_path_buf(),
        head_commit,
        branch,
        requested_ref: git_ref.map(str::to_string),
        file_count,
        manifests,
    })
}

/// The existing checkout, or a fresh repository when there is none (or it is broken: a
/// checkout is only a cache of the remote).
fn open_or_init(source: &Source, dir: &Path, log: &LogSink) -> Result<Repository, JobError> {
    if let Ok(repo) = Repository::open(dir) {
        log.info(format!("fetching {} into {}", source.shown, dir.display()));
        return Ok(repo);
    }
    log.info(format!("cloning {} into {}", source.shown, dir.display()));
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| {
            JobError::Retryable(format!(
                "removing broken checkout {} failed: {e}",
                dir.display()
            ))
        })?;
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        JobError::Retryable(format!("creating checkout {} failed: {e}", dir.display()))
    })?;
    let repo = Repository::init(dir).map_err(|e| source.error("initialising a checkout of", &e))?;
    repo.remote("origin", &source.shown)
        .map_err(|e| source.error("configuring", &e))?;
    Ok(repo)
}

/// Fetches every branch and tag, then points `origin/HEAD` at the remote's default branch.
fn fetch(repo: &Repository, source: &Source, cancel: &CancellationToken) -> Result<(), JobError> {
    let mut callbacks = RemoteCallbacks::new();
    // Returning false aborts the transfer, so a cancel does not wait for a big download.
    callbacks.transfer_progress(|_| !cancel.is_cancelled());
    let mut options = FetchOptions::new();
    options
        .remote_callbacks(callbacks)
        .download_tags(AutotagOption::All)
        // The egress check was made for this host: no proxy, no redirect to another host.
        .proxy_options(ProxyOptions::new())
        .follow_redirects(RemoteRedirect::None);

    let mut remote = repo
        .remote_anonymous(&source.url)
        .map_err(|e| source.fetch_error(&e))?;
    // An explicit reflog message: the default one would record the URL, credentials and all.
    let fetched = remote.fetch(&REFSPECS, Some(&mut options), Some("switchyard: fetch"));
    if cancel.is_cancelled() {
        return Err(JobError::Canceled);
    }
    fetched.map_err(|e| source.fetch_error(&e))?;

    // Unknown for an empty repository; an explicit ref still works then.
    if let Ok(default) = remote.default_branch()
        && let Some(branch) = default.as_str().and_then(|b| b.strip_prefix("refs/heads/"))
    {
        repo.reference_symbolic(
            ORIGIN_HEAD,
            &format!("{ORIGIN_PREFIX}{branch}"),
            true,
            "switchyard: remote HEAD",
        )
        .map_err(|e| source.error("recording the default branch of", &e))?;
    }
    Ok(())
}

/// The commit to check out and the branch it is on (None for tags and commits).
fn resolve<'r>(
    repo: &'r Repository,
    git_ref: Option<&str>,
    source: &Source,
) -> Result<(Commit<'r>, Option<String>), JobError> {
    let not_a_commit = |name: &str, e: git2::Error| {
        JobError::Fatal(format!(
            "ref '{name}' in {} is not a commit: {}",
            source.shown,
            e.message()
        ))
    };
    let Some(name) = git_ref.filter(|r| !r.is_empty() && *r != "HEAD") else {
        let head = repo.find_reference(ORIGIN_HEAD).map_err(|_| {
            JobError::Fatal(format!(
                "{} has no default branch (is it empty?); pass a ref",
                source.shown
            ))
        })?;
        let branch = head
            .symbolic_target()
            .and_then(|target| target.strip_prefix(ORIGIN_PREFIX))
            .map(str::to_string);
        let commit = head.peel_to_commit().map_err(|e| not_a_commit("HEAD", e))?;
        return Ok((commit, branch));
    };

    // Remote branches first: local branches in a checkout are never updated by fetches.
    if let Ok((object, reference)) = repo.revparse_ext(&format!("origin/{name}")) {
        let full_name = format!("{ORIGIN_PREFIX}{name}");
        let branch = reference
            .as_ref()
            .and_then(|r| r.name())
            .filter(|n| *n == full_name)
            .map(|_| name.to_string());
        let commit = object.peel_to_commit().map_err(|e| not_a_commit(name, e))?;
        return Ok((commit, branch));
    }
    let object = repo
        .revparse_single(name)
        .map_err(|_| JobError::Fatal(format!("ref '{name}' not found in {}", source.shown)))?;
    let commit = object.peel_to_commit().map_err(|e| not_a_commit(name, e))?;
    Ok((commit, None))
}

/// Blob count of the whole tree and the manifests at the root and one level down.
fn describe(repo: &Repository, tree: &git2::Tree<'_>) -> Result<(usize, Vec<String>), git2::Error> {
    let mut file_count = 0;
    tree.walk(TreeWalkMode::PreOrder, |_, entry| {
        if entry.kind() == Some(ObjectType::Blob) {
            file_count += 1;
        }
        TreeWalkResult::Ok
    })?;

    let mut manifests = Vec::new();
    for entry in tree.iter() {
        let Some(name) = entry.name() else { continue };
        if is_manifest(&entry) {
            manifests.push(name.to_string());
        } else if entry.kind() == Some(ObjectType::Tree) {
            for child in repo.find_tree(entry.id())?.iter() {
                if is_manifest(&child)
                    && let Some(child_name) = child.name()
                {
                    manifests.push(format!("{name}/{child_name}"));
                }
            }
        }
    }
    manifests.sort();
    Ok((file_count, manifests))
}

fn is_manifest(entry: &git2::TreeEntry<'_>) -> bool {
    entry.kind() == Some(ObjectType::Blob) && entry.name().is_some_and(|n| MANIFESTS.contains(&n))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::entrypoints::{drain_log, test_ctx};
    use git2::{IndexAddOption, Oid, Signature};

    /// Writes `files` into the repository at `dir` (creating it) and commits them.
    pub(in crate::entrypoints) fn commit_files(
        dir: &Path,
        files: &[(&str, &str)],
        message: &str,
    ) -> Oid {
        let repo = Repository::open(dir)
            .or_else(|_| Repository::init(dir))
            .expect("repository");
        for (path, content) in files {
            let full = dir.join(path);
            std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
            std::fs::write(full, content).expect("write");
        }
        let mut index = repo.index().expect("index");
        index
            .add_all(["*"], IndexAddOption::DEFAULT, None)
            .expect("add");
        index.write().expect("write index");
        let tree = repo
            .find_tree(index.write_tree().expect("tree"))
            .expect("find tree");
        let signature = Signature::now("Test", "test@example.com").expect("signature");
        let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&Commit<'_>> = parent.iter().collect();
        repo.commit(
            Some("HEAD"),
            &signature,
            &signature,
            message,
            &tree,
            &parents,
        )
        .expect("commit")
    }

    fn current_branch(dir: &Path) -> String {
        let repo = Repository::open(dir).expect("open");
        let head = repo.head().expect("head");
        head.shorthand().expect("branch").to_string()
    }

    async fn run(params: Value, data_dir: &Path) -> (JobResult, Vec<String>) {
        let (ctx, mut rx) = test_ctx(params, data_dir);
        let ingest = Ingest {
            sandbox: Arc::new(BuildSandbox::unconfined()),
        };
        let result = ingest.execute(ctx).await;
        let log = drain_log(&mut rx).into_iter().map(|l| l.message).collect();
        (result, log)
    }

    #[tokio::test]
    async fn ingests_paths_and_file_urls_then_fetches_and_honours_tags() {
        let source = tempfile::TempDir::new().expect("tempdir");
        let data = tempfile::TempDir::new().expect("tempdir");
        let first = commit_files(
            source.path(),
            &[
                ("Cargo.toml", "[package]\nname = \"x\"\n"),
                ("README.md", "hello\n"),
                ("src/main.rs", "fn main() {}\n"),
                ("sub/package.json", "{}\n"),
                ("deep/a/Makefile", "all:\n"),
            ],
            "first",
        );
        {
            let repo = Repository::open(source.path()).expect("open");
            let object = repo.find_object(first, None).expect("object");
            repo.tag_lightweight("v1", &object, false).expect("tag");
        }
        let second = commit_files(source.path(), &[("Dockerfile", "FROM scratch\n")], "second");
        let branch = current_branch(source.path());
        let path = source.path().to_string_lossy().into_owned();

        let (result, log) = run(json!({"repoUrl": path}), data.path()).await;
        let result = result.expect("ingest by path");
        assert_eq!(result["headCommit"], json!(second.to_string()));
        assert_eq!(result["branch"], json!(branch));
        assert_eq!(result["ref"], Value::Null);
        assert_eq!(result["fileCount"], json!(6));
        assert_eq!(
            result["manifests"],
            json!(["Cargo.toml", "Dockerfile", "sub/package.json"])
        );
        let checkout = PathBuf::from(result["checkout"].as_str().expect("checkout"));
        assert!(checkout.starts_with(data.path().join("checkouts")));
        assert!(checkout.join("sub/package.json").is_file());
        assert!(log.iter().any(|l| l.starts_with("cloning")));

        let file_url = format!("file://{path}");
        let (by_url, _) = run(json!({"repoUrl": file_url}), data.path()).await;
        let by_url = by_url.expect("ingest by file:// URL");
        assert_eq!(by_url["headCommit"], json!(second.to_string()));
        assert_ne!(by_url["checkout"], result["checkout"]);

        // A new upstream commit arrives through a fetch into the same checkout.
        let third = commit_files(source.path(), &[("README.md", "changed\n")], "third");
        let (again, log) = run(json!({"repoUrl": path}), data.path()).await;
        let again = again.expect("second ingest");
        assert_eq!(again["checkout"], result["checkout"]);
        assert_eq!(again["headCommit"], json!(third.to_string()));
        assert!(log.iter().any(|l| l.starts_with("fetching")));
        assert_eq!(
            std::fs::read_to_string(checkout.join("README.md")).expect("read"),
            "changed\n"
        );

        let (tagged, _) = run(json!({"repoUrl": path, "ref": "v1"}), data.path()).await;
        let tagged = tagged.expect("ingest of a tag");
        assert_eq!(tagged["headCommit"], json!(first.to_string()));
        assert_eq!(tagged["branch"], Value::Null);
        assert_eq!(tagged["ref"], json!("v1"));
        assert_eq!(tagged["fileCount"], json!(5));
        // Files of later commits are gone from the working tree.
        assert!(!checkout.join("Dockerfile").exists());

        let (by_branch, _) = run(json!({"repoUrl": path, "ref": branch}), data.path()).await;
        let by_branch = by_branch.expect("ingest of a branch");
        assert_eq!(by_branch["headCommit"], json!(third.to_string()));
        assert_eq!(by_branch["branch"], json!(branch));

        let (missing_ref, _) = run(json!({"repoUrl": path, "ref": "nope"}), data.path()).await;
        assert!(matches!(missing_ref, Err(JobError::Fatal(m)) if m.contains("nope")));
    }

    #[tokio::test]
    async fn missing_repositories_are_fatal() {
        let data = tempfile::TempDir::new().expect("tempdir");
        let missing = data.path().join("no-such-repo");
        let shown = missing.to_string_lossy().into_owned();
        let (result, _) = run(json!({"repoUrl": shown}), data.path()).await;
        assert!(
            matches!(&result, Err(JobError::Fatal(m)) if m.contains(&shown)),
            "{result:?}"
        );

        let url = format!("file://{shown}");
        let (result, _) = run(json!({"repoUrl": url}), data.path()).await;
        assert!(
            matches!(&result, Err(JobError::Fatal(m)) if m.contains(&shown)),
            "{result:?}"
        );

        let (result, _) = run(
            json!({"repoUrl": "ssh://git@example.com/r.git"}),
            data.path(),
        )
        .await;
        assert!(matches!(result, Err(JobError::Fatal(_))));
    }

    #[test]
    fn checkouts_are_handed_over_without_following_symlinks() {
        use std::os::unix::fs::MetadataExt as _;
        if !Uid::effective().is_root() {
            return; // only root can give files away
        }
        let outside = tempfile::TempDir::new().expect("tempdir");
        let target = outside.path().join("target");
        std::fs::write(&target, "not the build's").expect("write");
        let dir = tempfile::TempDir::new().expect("tempdir");
        let root = dir.path().join("checkout");
        std::fs::create_dir_all(root.join("a/b")).expect("mkdir");
        std::fs::write(root.join("a/b/file"), "x").expect("write");
        std::os::unix::fs::symlink(&target, root.join("link")).expect("symlink");
        std::os::unix::fs::symlink(outside.path(), root.join("a/dirlink")).expect("symlink");

        let (uid, gid) = (Uid::from_raw(54_321), Gid::from_raw(54_322));
        chown_tree(&root, uid, gid).expect("chown");
        for path in ["", "a", "a/b", "a/b/file", "link", "a/dirlink"] {
            let meta = std::fs::symlink_metadata(root.join(path)).expect("metadata");
            assert_eq!((meta.uid(), meta.gid()), (54_321, 54_322), "{path}");
        }
        // What the symlinks point at is untouched.
        for path in [&target, &outside.path().to_path_buf()] {
            let meta = std::fs::metadata(path).expect("metadata");
            assert_eq!((meta.uid(), meta.gid()), (0, 0), "{}", path.display());
        }
    }

    #[tokio::test]
    async fn an_ingest_waits_while_a_build_holds_the_checkout() {
        let data = tempfile::TempDir::new().expect("tempdir");
        let dir = checkouts_root(data.path()).expect("root").join("repo");
        let (ctx, mut rx) = test_ctx(json!({}), data.path());
        let shared = lock_shared(&ctx, &dir).await.expect("shared");
        // Builds share it.
        let other = lock_shared(&ctx, &dir).await.expect("shared again");
        drop(other);
        let waiting = {
            let (ctx, dir) = (ctx.clone(), dir.clone());
            tokio::spawn(async move { lock_exclusive(&ctx, &dir).await.map(drop) })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the ingest did not wait");
        drop(shared);
        waiting.await.expect("task").expect("exclusive");
        let log: Vec<String> = drain_log(&mut rx).into_iter().map(|l| l.message).collect();
        assert!(log.iter().any(|l| l.starts_with("waiting for")), "{log:?}");

        // A waiting ingest gives up when its run is canceled.
        let held = lock_exclusive(&ctx, &dir).await.expect("exclusive");
        let (other_ctx, _rx) = test_ctx(json!({}), data.path());
        other_ctx.cancel.cancel();
        assert_eq!(
            lock_exclusive(&other_ctx, &dir).await.map(drop),
            Err(JobError::Canceled)
        );
        // Downgraded, it admits builds but no ingest.
        let downgraded = held.downgrade();
        lock_shared(&ctx, &dir)
            .await
            .expect("shared after a downgrade");
        assert!(checkout_lock(&dir).try_write_owned().is_err());
        drop(downgraded);
        assert!(checkout_lock(&dir).try_write_owned().is_ok());
    }

    #[test]
    fn checkout_names_are_slugged_and_free_of_credentials() {
        let url = "https://user:token@Example.com/Org/Repo.git";
        let name = checkout_name(&redact_url(url), url);
        assert!(
            name.starts_with("https-example-com-org-repo-git-"),
            "{name}"
        );
        assert!(!name.contains("token"));
        assert_eq!(name.len(), "https-example-com-org-repo-git-".len() + 12);
        let long = "x".repeat(200);
        assert_eq!(checkout_name(&long, &long).len(), 80 + 1 + 12);
        assert_ne!(checkout_name("a", "a"), checkout_name("a", "b"));
    }
}
