//! Starting, stopping and connecting to one private PostgreSQL cluster.

use super::{find_bin_dir, PgBinaries, PgError};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{Gid, Pid, Uid, User};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

/// How much durability the cluster trades for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// PostgreSQL defaults (fsync on): for `serve`, the demo and benchmarks.
    Full,
    /// `fsync`, `synchronous_commit` and `full_page_writes` off: tests only.
    Fast,
}

/// How to stop the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Clean shutdown (SIGINT): active transactions are rolled back.
    Fast,
    /// Crash (SIGQUIT): no checkpoint; the next start runs crash recovery.
    Immediate,
}

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Directory that holds `data/`, the server log and (usually) the socket.
    pub root: PathBuf,
    pub durability: Durability,
    /// Port number; with a private socket directory it only names the socket.
    pub port: u16,
    /// Extra `-c name=value` server settings.
    pub settings: Vec<(String, String)>,
}

impl ClusterOptions {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ClusterOptions {
            root: root.into(),
            durability: Durability::Full,
            port: 5432,
            settings: vec![("max_connections".into(), "200".into())],
        }
    }
}

/// A running (or stopped) private PostgreSQL cluster.
pub struct Cluster {
    options: ClusterOptions,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_file: PathBuf,
    bins: PgBinaries,
    run_as: Option<(Uid, Gid)>,
    server: Mutex<Option<RunningServer>>,
    /// Removed when the cluster is dropped (temporary clusters only).
    remove_on_drop: Option<PathBuf>,
}

struct RunningServer {
    pid: Pid,
    exited: mpsc::Receiver<()>,
}

const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Unix socket paths are limited to 107 bytes; leave room for `/.s.PGSQL.NNNNN`.
const MAX_SOCKET_DIR_LEN: usize = 80;

impl Cluster {
    /// Initialises the cluster if its data directory is new, then starts it.
    pub fn start(options: ClusterOptions) -> Result<Cluster, PgError> {
        let bins = find_bin_dir()?;
        let run_as = unprivileged_user()?;
        let root = usable_root(&options.root, run_as)?;
        let data_dir = root.join("data");
        let log_file = root.join("postgres.log");
        let socket_dir = socket_dir_for(&root, run_as)?;
        let cluster = Cluster {
            options: ClusterOptions { root, ..options },
            data_dir,
            socket_dir,
            log_file,
            bins,
            run_as,
            server: Mutex::new(None),
            remove_on_drop: None,
        };
        cluster.init_if_new()?;
        cluster.start_server()?;
        Ok(cluster)
    }

    /// A throwaway cluster in a fresh directory under the system temp dir,
    /// deleted when dropped. Leftovers of crashed processes are swept first.
    pub fn start_temporary(durability: Durability) -> Result<Cluster, PgError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        sweep_stale_temporaries();
        let root = std::env::temp_dir().join(format!(
            "calsync-pg-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        let mut options = ClusterOptions::new(&root);
        options.durability = durability;
        let mut cluster = Cluster::start(options)?;
        cluster.remove_on_drop = Some(root);
        Ok(cluster)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn port(&self) -> u16 {
        self.options.port
    }

    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// A libpq-style connection string for `dbname` on this cluster.
    pub fn connection_string(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={}",
            self.socket_dir.display(),
            self.options.port,
            dbname
        )
    }

    /// A `postgresql://` URL for `dbname` (for `DATABASE_URL` and psql).
    pub fn url(&self, dbname: &str) -> String {
        let host: String = self
            .socket_dir
            .display()
            .to_string()
            .replace('%', "%25")
            .replace('/', "%2F");
        format!(
            "postgresql://postgres@{host}:{}/{dbname}",
            self.options.port
        )
    }

    pub fn is_running(&self) -> bool {
        self.lock_server().is_some()
    }

    /// Stops the server and waits for it to exit.
    pub fn stop(&self, mode: StopMode) -> Result<(), PgError> {
        let Some(server) = self.lock_server().take() else {
            return Ok(());
        };
        let signal = match mode {
            StopMode::Fast => Signal::SIGINT,
            StopMode::Immediate => Signal::SIGQUIT,
        };
        let _ = kill(server.pid, signal);
        if server.exited.recv_timeout(READY_TIMEOUT).is_err() {
            let _ = kill(server.pid, Signal::SIGKILL);
            let _ = server.exited.recv_timeout(Duration::from_secs(5));
        }
        Ok(())
    }

    /// Starts the server again on the same data directory (after `stop`).
    pub fn restart(&self) -> Result<(), PgError> {
        self.stop(StopMode::Fast)?;
        self.start_server()
    }

    fn lock_server(&self) -> std::sync::MutexGuard<'_, Option<RunningServer>> {
        // A poisoned lock only means another thread panicked while holding
        // it; the Option inside is still meaningful.
        self.server.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn init_if_new(&self) -> Result<(), PgError> {
        if self.data_dir.join("PG_VERSION").is_file() {
            return Ok(());
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
        let mut cmd = Command::new(&self.bins.initdb);
        cmd.arg("-D").arg(&self.data_dir).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        if self.options.durability == Durability::Fast {
            cmd.arg("--no-sync");
        }
        self.as_server_user(&mut cmd);
        let out = cmd.output().map_err(|e| PgError::Command {
            step: format!("running {}", self.bins.initdb.display()),
            detail: e.to_string(),
        })?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&self.data_dir);
            return Err(PgError::Command {
                step: "initdb".into(),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(())
    }

    fn start_server(&self) -> Result<(), PgError> {
        let mut guard = self.lock_server();
        if guard.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .map_err(|source| PgError::Io {
                path: self.log_file.clone(),
                source,
            })?;
        let log_err = log.try_clone().map_err(|source| PgError::Io {
            path: self.log_file.clone(),
            source,
        })?;
        let mut cmd = Command::new(&self.bins.postgres);
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-k")
            .arg(&self.socket_dir)
            .args(["-p", &self.options.port.to_string()])
            .args(["-c", "listen_addresses="])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if self.options.durability == Durability::Fast {
            for s in [
                "fsync=off",
                "synchronous_commit=off",
                "full_page_writes=off",
            ] {
                cmd.args(["-c", s]);
            }
        }
        for (name, value) in &self.options.settings {
            cmd.arg("-c").arg(format!("{name}={value}"));
        }
        self.as_server_user(&mut cmd);
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        // The server gets SIGQUIT (immediate shutdown) when the thread that
        // spawned it dies, i.e. when calsync exits for any reason.
        unsafe {
            cmd.pre_exec(|| {
                if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGQUIT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let server = spawn_kept(cmd).map_err(|e| PgError::Command {
            step: format!("starting {}", self.bins.postgres.display()),
            detail: e.to_string(),
        })?;
        let started = Instant::now();
        loop {
            if server.exited.try_recv().is_ok() {
                return Err(self.not_ready(started));
            }
            if self.postmaster_ready(server.pid) {
                break;
            }
            if started.elapsed() > READY_TIMEOUT {
                let _ = kill(server.pid, Signal::SIGQUIT);
                return Err(self.not_ready(started));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        *guard = Some(server);
        Ok(())
    }

    /// PostgreSQL writes "ready" as the 8th line of `postmaster.pid` once it
    /// accepts connections.
    fn postmaster_ready(&self, pid: Pid) -> bool {
        let Ok(text) = std::fs::read_to_string(self.data_dir.join("postmaster.pid")) else {
            return false;
        };
        let mut lines = text.lines();
        let pid_matches = lines.next().map(str::trim) == Some(&pid.to_string());
        pid_matches && lines.nth(6).map(str::trim) == Some("ready")
    }

    fn not_ready(&self, started: Instant) -> PgError {
        let log = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        PgError::NotReady {
            seconds: started.elapsed().as_secs(),
            log: self.log_file.clone(),
            tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        }
    }

    fn as_server_user(&self, cmd: &mut Command) {
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
        cmd.env_remove("PGDATA").env("LC_ALL", "C");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop(StopMode::Fast);
        if let Some(root) = &self.remove_on_drop {
            let _ = std::fs::remove_dir_all(root);
            if !self.socket_dir.starts_with(root) {
                let _ = std::fs::remove_dir_all(&self.socket_dir);
            }
        }
    }
}

/// Spawns the server from a thread that lives exactly as long as the server:
/// the parent-death signal fires when the *spawning thread* ends, so the
/// spawner must not be a short-lived test or runtime thread.
fn spawn_kept(mut cmd: Command) -> std::io::Result<RunningServer> {
    let (pid_tx, pid_rx) = mpsc::channel();
    let (exit_tx, exit_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("postgres-keeper".into())
        .spawn(move || match cmd.spawn() {
            Ok(mut child) => {
                let _ = pid_tx.send(Ok(child.id()));
                let _ = child.wait();
                let _ = exit_tx.send(());
            }
            Err(e) => {
                let _ = pid_tx.send(Err(e));
            }
        })?;
    let pid = pid_rx
        .recv()
        .map_err(|_| std::io::Error::other("postgres keeper thread died"))??;
    Ok(RunningServer {
        pid: Pid::from_raw(pid as i32),
        exited: exit_rx,
    })
}

/// As root, the OS user to run the server as; otherwise `None`.
fn unprivileged_user() -> Result<Option<(Uid, Gid)>, PgError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    match User::from_name("postgres") {
        Ok(Some(user)) => Ok(Some((user.uid, user.gid))),
        _ => Err(PgError::NoUnprivilegedUser {
            user: "postgres".into(),
        }),
    }
}

/// Creates `root` and hands it to the server user. If that user cannot reach
/// `root` (for example a project under `/root`), uses a directory under
/// `/var/tmp` named after `root` instead, and says so.
fn usable_root(root: &Path, run_as: Option<(Uid, Gid)>) -> Result<PathBuf, PgError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PgError::Io { path, source }
    };
    let absolute = std::path::absolute(root).map_err(io(root))?;
    let chosen = match run_as {
        Some((uid, _)) if !traversable_by(&absolute, uid) => {
            let digest = hex::encode(&sha2_digest(absolute.to_string_lossy().as_bytes())[..6]);
            let fallback = PathBuf::from(format!("/var/tmp/calsync-pg-{digest}"));
            tracing::warn!(
                requested = %absolute.display(),
                using = %fallback.display(),
                "the postgres OS user cannot reach the requested data directory; using another"
            );
            // A shared directory: the name must be one calsync made.
            private_dir(&fallback, run_as)?;
            fallback
        }
        _ => absolute,
    };
    std::fs::create_dir_all(&chosen).map_err(io(&chosen))?;
    if let Some((uid, gid)) = run_as {
        nix::unistd::chown(&chosen, Some(uid), Some(gid)).map_err(|e| PgError::Io {
            path: chosen.clone(),
            source: e.into(),
        })?;
    }
    std::fs::set_permissions(&chosen, std::fs::Permissions::from_mode(0o700))
        .map_err(io(&chosen))?;
    Ok(chosen)
}

fn sha2_digest(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

/// True if every ancestor of `path` lets `uid` pass through (others-execute
/// bit, or owned by `uid`).
fn traversable_by(path: &Path, uid: Uid) -> bool {
    use std::os::unix::fs::MetadataExt;
    path.ancestors()
        .skip(1)
        .all(|dir| match std::fs::metadata(dir) {
            Ok(meta) => meta.mode() & 0o001 != 0 || meta.uid() == uid.as_raw(),
            Err(_) => true, // does not exist yet: we are about to create it
        })
}

/// The socket directory: the cluster's root when its path is short enough,
/// else a directory under the temp dir named after the root, which must be
/// one calsync made (see [`private_dir`]): anyone can create a name under
/// `/tmp` first and wait for the server's socket to appear in it.
fn socket_dir_for(root: &Path, run_as: Option<(Uid, Gid)>) -> Result<PathBuf, PgError> {
    let preferred = root.to_path_buf();
    if preferred.as_os_str().len() <= MAX_SOCKET_DIR_LEN {
        return Ok(preferred);
    }
    let digest = hex::encode(&sha2_digest(root.to_string_lossy().as_bytes())[..6]);
    let dir = std::env::temp_dir().join(format!("calsync-sock-{digest}"));
    private_dir(&dir, run_as)?;
    Ok(dir)
}

/// Makes `dir` (mode 0700, owned by the server's user: `run_as`, or this
/// process's user), or accepts it if it already is exactly that: a real
/// directory (no symlink), owned by that user, with no group or other
/// permissions. Anything else is refused with [`PgError::UnsafeDirectory`].
pub fn private_dir(dir: &Path, run_as: Option<(Uid, Gid)>) -> Result<(), PgError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let io = |source| PgError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let owner = run_as.map_or_else(Uid::effective, |(uid, _)| uid);
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {
            if let Some((uid, gid)) = run_as {
                nix::unistd::chown(dir, Some(uid), Some(gid)).map_err(|e| io(e.into()))?;
            }
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::symlink_metadata(dir).map_err(io)?;
            let found = Found {
                symlink: meta.file_type().is_symlink(),
                directory: meta.is_dir(),
                uid: meta.uid(),
                mode: meta.mode() & 0o7777,
            };
            judge_existing(found, owner.as_raw()).map_err(|reason| PgError::UnsafeDirectory {
                path: dir.to_path_buf(),
                reason,
            })
        }
        Err(e) => Err(io(e)),
    }
}

/// What was found at a private directory's path.
#[derive(Debug, Clone, Copy)]
struct Found {
    symlink: bool,
    directory: bool,
    uid: u32,
    mode: u32,
}

/// Whether an existing path is a private directory of `owner`.
fn judge_existing(found: Found, owner: u32) -> Result<(), String> {
    if found.symlink {
        return Err("it is a symbolic link".into());
    }
    if !found.directory {
        return Err("it is not a directory".into());
    }
    if found.uid != owner {
        return Err(format!(
            "it is owned by uid {}, not by uid {owner}",
            found.uid
        ));
    }
    if found.mode & 0o077 != 0 {
        return Err(format!(
            "its mode is {:o}: others may enter or write it",
            found.mode
        ));
    }
    Ok(())
}

/// Removes `calsync-pg-<pid>-<n>` temp directories whose process is gone
/// (their servers died with it through the parent-death signal).
fn sweep_stale_temporaries() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("calsync-pg-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let alive = kill(Pid::from_raw(pid), None).is_ok();
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_private_directory_of_the_servers_user_is_accepted() {
        let ok = Found {
            symlink: false,
            directory: true,
            uid: 70,
            mode: 0o700,
        };
        assert!(judge_existing(ok, 70).is_ok());
        for (found, says) in [
            (Found { uid: 0, ..ok }, "owned by uid 0"),
            (Found { mode: 0o755, ..ok }, "mode is 755"),
            (Found { mode: 0o1777, ..ok }, "mode is 1777"),
            (
                Found {
                    symlink: true,
                    ..ok
                },
                "symbolic link",
            ),
            (
                Found {
                    directory: false,
                    ..ok
                },
                "not a directory",
            ),
        ] {
            let reason = judge_existing(found, 70).unwrap_err();
            assert!(reason.contains(says), "{found:?}: {reason}");
        }
    }

    #[test]
    fn a_private_directory_is_made_0700_and_a_foreign_one_refused() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sock");
        private_dir(&dir, None).unwrap();
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);
        assert_eq!(meta.uid(), Uid::effective().as_raw());
        // Made by calsync: accepted again on the next start.
        private_dir(&dir, None).unwrap();
        // Someone else's (here: the server would run as another uid) is
        // refused, with the reason.
        let other = Some((
            Uid::from_raw(Uid::effective().as_raw() + 1),
            Gid::effective(),
        ));
        let err = private_dir(&dir, other).unwrap_err().to_string();
        assert!(
            err.contains("refusing to use") && err.contains("owned by uid"),
            "{err}"
        );
        // Opened to others: refused.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(private_dir(&dir, None).is_err());
        // A symlink to a private directory: refused.
        let real = tmp.path().join("real");
        private_dir(&real, None).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(private_dir(&link, None)
            .unwrap_err()
            .to_string()
            .contains("symbolic link"));
    }
}
