//! `switchyard build-supervisor`: the process a `serve` or `worker` process starts for every
//! `builtin:repository-build` command instead of the command itself, so that nothing the command
//! starts outlives its run: not its background jobs, not processes that left its process group
//! with `setsid`, not grandchildren orphaned by a double fork.
//!
//! - It is a child subreaper (`PR_SET_CHILD_SUBREAPER`): every orphan below it is re-parented to
//!   it instead of to init, so the pid -> ppid tree in /proc below it is everything the command
//!   started.
//! - It dies with the server (`PR_SET_PDEATHSIG(SIGTERM)`, then a check that its parent is still
//!   the server) and then cleans up like on any other SIGTERM.
//! - It stays the server's user (root when the server is root: the build's user can neither
//!   signal nor trace it) and starts the command as the build user (`--uid`/`--gid`; std drops
//!   supplementary groups when root), with stdin null, its own stdout and stderr (the pipes the
//!   server reads), and exactly the environment the server sends on stdin. Its own environment
//!   is empty: the definition's `LD_PRELOAD` or `LD_LIBRARY_PATH` must not reach a root process.
//! - When the command exits, or on SIGTERM, SIGINT or SIGHUP: SIGTERM to its process group and
//!   every descendant, `--grace-ms` to exit, then SIGKILL to every descendant still there, again
//!   and again until `waitpid` reports no child is left. Then it exits with the command's status;
//!   a death by signal is re-raised on itself, so the server reports "killed by signal SIGKILL".
use std::{
    collections::HashMap,
    ffi::OsString,
    io::Read as _,
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use clap::Parser as _;
use nix::{
    errno::Errno,
    sys::{
        prctl,
        signal::{Signal, kill, killpg},
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::{Pid, getpgrp, getpid, getppid},
};
use serde::{Deserialize, Serialize};
use signal_hook::{
    consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM},
    iterator::Signals,
};

use crate::settings::SupervisorArgs;

/// The hidden subcommand's name.
pub const COMMAND: &str = "build-supervisor";

/// The supervisor could not do its job (bad input, the server already gone).
const EXIT_SUPERVISOR: i32 = 125;
/// The program exists but could not be started.
const EXIT_CANNOT_EXECUTE: i32 = 126;
/// The program does not exist (the server checks first, so this is a race).
const EXIT_NOT_FOUND: i32 = 127;

/// What the server writes to the supervisor's stdin (then closes it).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Spec {
    /// The command's whole environment, in order.
    pub env: Vec<(String, String)>,
}

/// The command line parsed without the settings' environment fallbacks: the supervisor must not
/// take settings from the environment it was given.
#[derive(Debug, clap::Parser)]
#[command(name = "switchyard build-supervisor")]
struct SupervisorCommand {
    #[command(flatten)]
    args: SupervisorArgs,
}

/// `main` for `switchyard build-supervisor ...` (`args` without the program name and the
/// subcommand). Never returns.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ! {
    let name = OsString::from(COMMAND);
    let command = SupervisorCommand::parse_from(std::iter::once(name).chain(args));
    run(&command.args)
}

/// Runs the command described by `args` and the spec on stdin; exits with its status.
pub fn run(args: &SupervisorArgs) -> ! {
    // Not dumpable: no core file when a command's crash is re-raised here, no tracing by others.
    let _ = prctl::set_dumpable(false);
    if let Err(e) = prctl::set_child_subreaper(true) {
        fail(
            EXIT_SUPERVISOR,
            &format!("cannot become a child subreaper: {e}"),
        );
    }
    if let Err(e) = prctl::set_pdeathsig(Signal::SIGTERM) {
        fail(
            EXIT_SUPERVISOR,
            &format!("cannot set a parent-death signal: {e}"),
        );
    }
    // The server may have died before the parent-death signal was armed.
    if getppid().as_raw() != args.parent {
        fail(
            EXIT_SUPERVISOR,
            "the server that started this build is gone",
        );
    }
    // Before the command starts, so neither its end nor a stop request can be missed.
    let mut signals = match Signals::new([SIGTERM, SIGINT, SIGHUP, SIGCHLD]) {
        Ok(signals) => signals,
        Err(e) => fail(EXIT_SUPERVISOR, &format!("cannot handle signals: {e}")),
    };
    let spec = read_spec();
    let Some((program, rest)) = args.argv.split_first() else {
        fail(EXIT_SUPERVISOR, "no command given");
    };
    let mut command = std::process::Command::new(program);
    command
        .args(rest)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    if let (Some(uid), Some(gid)) = (args.uid, args.gid) {
        command.uid(uid).gid(gid);
    }
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                EXIT_NOT_FOUND
            } else {
                EXIT_CANNOT_EXECUTE
            };
            fail(
                code,
                &format!("cannot start {}: {e}", program.to_string_lossy()),
            );
        }
    };
    let leader = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    // Reaped below with waitpid(-1): the std handle is not used again.
    drop(child);

    let mut status = None;
    'running: for signal in signals.forever() {
        if signal == SIGCHLD {
            reap(leader, &mut status);
            if status.is_some() {
                break 'running;
            }
        } else {
            // SIGTERM, SIGINT, SIGHUP: the server stops the build (cancel, timeout, shutdown)
            // or died.
            break 'running;
        }
    }
    stop_everything(leader, &mut status, Duration::from_millis(args.grace_ms));
    // `signals` stays registered until here: the SIGTERM sent to our own group must not kill us.
    drop(signals);
    exit_like(status)
}

fn fail(code: i32, message: &str) -> ! {
    eprintln!("[switchyard build-supervisor] {message}");
    std::process::exit(code)
}

fn read_spec() -> Spec {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        fail(
            EXIT_SUPERVISOR,
            &format!("cannot read the build's spec: {e}"),
        );
    }
    match serde_json::from_slice(&input) {
        Ok(spec) => spec,
        Err(e) => fail(EXIT_SUPERVISOR, &format!("invalid build spec: {e}")),
    }
}

/// Reaps every child that has ended (the command and orphans re-parented here); records the
/// command's status. True when no child is left at all.
fn reap(leader: Pid, status: &mut Option<ExitStatus>) -> bool {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return false,
            Ok(WaitStatus::Exited(pid, code)) => {
                if pid == leader {
                    *status = Some(ExitStatus::from_raw((code & 0xff) << 8));
                }
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) => {
                if pid == leader {
                    *status = Some(ExitStatus::from_raw(signal as i32));
                }
            }
            Ok(_) => {}
            Err(Errno::EINTR) => {}
            // ECHILD: nothing left to wait for.
            Err(_) => return true,
        }
    }
}

/// SIGTERM to the group and every descendant, up to `grace` for them to go, then SIGKILL until
/// no child is left.
fn stop_everything(leader: Pid, status: &mut Option<ExitStatus>, grace: Duration) {
    // Our own group holds the command and whatever it did not move out; we ignore the SIGTERM
    // (it is caught above).
    let _ = killpg(getpgrp(), Signal::SIGTERM);
    for pid in descendants() {
        let _ = kill(pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if reap(leader, status) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // A process that forks while we scan is found by the next scan; a killed one forks no more.
    loop {
        for pid in descendants() {
            let _ = kill(pid, Signal::SIGKILL);
        }
        if reap(leader, status) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Exits with `status`: the same code, or death by the same signal.
fn exit_like(status: Option<ExitStatus>) -> ! {
    let Some(status) = status else {
        fail(EXIT_SUPERVISOR, "the command's status was lost");
    };
    if let Some(code) = status.code() {
        std::process::exit(code);
    }
    if let Some(signal) = status.signal() {
        // Restores the default action, unblocks and raises it: we die the way the command did.
        let _ = signal_hook::low_level::emulate_default_handler(signal);
        std::process::exit(128 + signal);
    }
    std::process::exit(EXIT_SUPERVISOR)
}

/// Every live or zombie process below this one, from /proc's pid -> ppid links.
fn descendants() -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let links: Vec<(i32, i32)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, parent_of(&stat)?))
        })
        .collect();
    descendants_of(getpid().as_raw(), &links)
        .into_iter()
        .map(Pid::from_raw)
        .collect()
}

/// The ppid field of a `/proc/<pid>/stat` line (`pid (comm) state ppid ...`; comm may hold
/// spaces and parentheses, so the fields start after the last `)`).
fn parent_of(stat: &str) -> Option<i32> {
    let (_, fields) = stat.rsplit_once(')')?;
    fields.split_whitespace().nth(1)?.parse().ok()
}

/// The pids below `root` in a list of (pid, ppid) links.
fn descendants_of(root: i32, links: &[(i32, i32)]) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for &(pid, ppid) in links {
        children.entry(ppid).or_default().push(pid);
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(parent) = queue.pop() {
        for &child in children.get(&parent).map(Vec::as_slice).unwrap_or_default() {
            if child != root && !found.contains(&child) {
                found.push(child);
                queue.push(child);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_is_read_after_the_command_name() {
        assert_eq!(parent_of("42 (sh) S 7 42 42 0 -1"), Some(7));
        assert_eq!(parent_of("42 (a) b (c) R 9 1 1"), Some(9));
        assert_eq!(parent_of("garbage"), None);
    }

    #[test]
    fn descendants_are_the_whole_subtree_and_nothing_else() {
        // 10 is the supervisor; 11 its command; 12 and 13 below it; 14 an orphan re-parented
        // to 10; 20 and 21 belong to someone else.
        let links = [
            (10, 1),
            (11, 10),
            (12, 11),
            (13, 12),
            (14, 10),
            (20, 1),
            (21, 20),
        ];
        let mut found = descendants_of(10, &links);
        found.sort_unstable();
        assert_eq!(found, vec![11, 12, 13, 14]);
        assert!(descendants_of(13, &links).is_empty());
    }
}
