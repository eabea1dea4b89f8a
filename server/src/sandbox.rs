//! Build isolation, the parts decided at start (README "Build isolation"): which user builds
//! run as, which executable supervises them, the modes that keep the data directory's secrets
//! from that user, and the process flag that keeps this process's memory and environment from
//! other processes of its own user.
//!
//! The rest lives with the build itself: `handlers/build.rs` (working directory confinement,
//! environment, spawning the supervisor, stopping it), `handlers/repository.rs` (checkout locks,
//! handing checkouts to the build user) and `supervisor.rs` (the process that runs the command
//! and kills whatever it leaves behind).
use std::{
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use nix::unistd::{Gid, Uid, User};

use crate::settings::BuildSettings;

/// The directory below the data directory that holds checkouts (the only place builds run).
pub const CHECKOUTS_DIR: &str = "checkouts";

/// The unprivileged user builds run as (when the server runs as root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildUser {
    pub name: String,
    pub uid: Uid,
    /// The user's primary group: the build's only group.
    pub gid: Gid,
}

/// How builds of this process are started.
#[derive(Debug, Clone)]
pub struct BuildSandbox {
    /// `None` when the server is not root: builds run as the server's own user.
    pub user: Option<BuildUser>,
    /// The executable started as `build-supervisor` for every build.
    pub supervisor: PathBuf,
}

impl BuildSandbox {
    /// Resolves the settings at start: the build user must exist and must not be root when this
    /// process is root; the supervisor executable must exist.
    pub fn resolve(settings: &BuildSettings) -> anyhow::Result<BuildSandbox> {
        let supervisor = match &settings.build_supervisor {
            Some(path) => path.clone(),
            None => {
                std::env::current_exe().context("finding this executable (it supervises builds)")?
            }
        };
        if !supervisor.is_file() {
            anyhow::bail!(
                "the build supervisor {} is not a file (set --build-supervisor to the switchyard executable)",
                supervisor.display()
            );
        }
        let user = if Uid::effective().is_root() {
            Some(build_user(&settings.build_user)?)
        } else {
            let uid = Uid::effective();
            let name = User::from_uid(uid)
                .ok()
                .flatten()
                .map_or_else(|| uid.to_string(), |u| u.name);
            tracing::warn!(
                user = %name,
                uid = uid.as_raw(),
                "not running as root: builds run as this server's own user, so they can read \
                 what it can read (the data directory, the secret key file and the database); \
                 run the server as root with --build-user to isolate builds"
            );
            None
        };
        Ok(BuildSandbox { user, supervisor })
    }

    /// Builds would run as the server's user with a supervisor that does not exist: for
    /// processes that execute no runs (`--workers 0`) and unit tests, which start no build.
    pub fn unconfined() -> BuildSandbox {
        BuildSandbox {
            user: None,
            supervisor: PathBuf::from("/nonexistent/switchyard"),
        }
    }
}

/// Looks the build user up; an error that says how to create it when it is missing.
fn build_user(name: &str) -> anyhow::Result<BuildUser> {
    let create = format!(
        "create it with `useradd --system --no-create-home --shell /usr/sbin/nologin {name}` \
         (scripts/install-deps.sh does), or name another unprivileged user with --build-user / \
         SWITCHYARD_BUILD_USER"
    );
    let user = User::from_name(name)
        .with_context(|| format!("looking up the build user {name}"))?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the build user {name} does not exist; this server runs as root and will not \
                 run builds as root: {create}"
            )
        })?;
    if user.uid.is_root() {
        anyhow::bail!("the build user {name} has uid 0: builds must not run as root; {create}",);
    }
    tracing::info!(user = %user.name, uid = user.uid.as_raw(), gid = user.gid.as_raw(), "builds run as the build user");
    Ok(BuildUser {
        name: user.name,
        uid: user.uid,
        gid: user.gid,
    })
}

/// Gives the data directory the modes that keep its secrets from builds running as another user:
/// the directory itself 0711 (others may pass through to the checkouts, not list it), the
/// checkouts directory 0755. The key file and the SQLite files are made 0600 where they are
/// opened (`secrets.rs`, `db.rs`).
pub fn protect_data_dir(data_dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    set_mode(data_dir, 0o711)?;
    let checkouts = data_dir.join(CHECKOUTS_DIR);
    std::fs::create_dir_all(&checkouts)
        .with_context(|| format!("creating {}", checkouts.display()))?;
    set_mode(&checkouts, 0o755)
}

/// Creates `path` empty with mode 0600 unless it exists, and makes it (and SQLite's `-wal` and
/// `-shm` beside it, when present) 0600.
pub fn private_database_files(path: &Path) -> anyhow::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(e).with_context(|| format!("creating the database {}", path.display()));
        }
    }
    set_mode(path, 0o600)?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let side = PathBuf::from(side);
        if side.exists() {
            set_mode(&side, 0o600)?;
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    let current = std::fs::metadata(path)
        .with_context(|| format!("reading the mode of {}", path.display()))?
        .permissions()
        .mode()
        & 0o7777;
    if current != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("making {} mode {mode:o}", path.display()))?;
    }
    Ok(())
}

/// `serve` and `worker` (not tests, which share their process with the test harness): the
/// process becomes non-dumpable, so other processes of the same user (builds, when the server is
/// not root) cannot read its `/proc/<pid>/environ` or memory, or attach a debugger. Another
/// user cannot anyway. No core dumps either.
pub fn harden_process() -> anyhow::Result<()> {
    nix::sys::prctl::set_dumpable(false).context("prctl(PR_SET_DUMPABLE, 0)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_user_must_exist_and_must_not_be_root() {
        let missing = build_user("switchyard-no-such-user")
            .unwrap_err()
            .to_string();
        assert!(missing.contains("does not exist"), "{missing}");
        assert!(
            missing.contains("useradd --system --no-create-home --shell /usr/sbin/nologin switchyard-no-such-user"),
            "{missing}"
        );
        let root = build_user("root").unwrap_err().to_string();
        assert!(root.contains("uid 0"), "{root}");
    }

    #[test]
    fn the_data_directory_keeps_its_secrets_to_itself() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        protect_data_dir(&data).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&data), 0o711);
        assert_eq!(mode(&data.join(CHECKOUTS_DIR)), 0o755);

        // A new database file is created private; existing ones (and their -wal) are fixed.
        let db = data.join("switchyard.db");
        private_database_files(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        let wal = data.join("switchyard.db-wal");
        std::fs::write(&wal, "").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o644)).unwrap();
        private_database_files(&db).unwrap();
        assert_eq!((mode(&db), mode(&wal)), (0o600, 0o600));
    }
}
