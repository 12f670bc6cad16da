//! The demo's database: `DATABASE_URL` if set, otherwise a private
//! cluster with full durability, wiped at the start of every run and
//! guarded by a lock so two demos never share (or wipe) one directory.

use super::DemoError;
use crate::config::{DatabaseSource, GlobalArgs};
use crate::database::Database;
use std::path::{Path, PathBuf};

/// Where the demo's private cluster lives. Fixed (not `--pg-dir`), because
/// the demo wipes it on every run and must never wipe `serve`'s cluster.
pub const DEMO_PG_DIR: &str = ".calsync/demo-pg";

/// `DATABASE_URL` (or the config file's URL) if set; otherwise a fresh
/// private cluster in [`DEMO_PG_DIR`].
pub async fn open_database(
    global: &GlobalArgs,
) -> anyhow::Result<(Database, String, Option<Lock>)> {
    let file = global.file()?;
    let mut settings = global.settings_with(&file)?;
    if let DatabaseSource::Url(_) = &settings.database {
        let (db, _) = Database::open(&settings).await?;
        let note = format!(
            "DATABASE_URL is set: using that database ({}); the demo's rows are new connections beside whatever is there",
            db.location
        );
        return Ok((db, note, None));
    }
    let root = PathBuf::from(DEMO_PG_DIR);
    let lock = lock_demo_dir(&root)?;
    refuse_if_running(&root)?;
    remove_dir(&root)?;
    settings.database = DatabaseSource::Private(root.clone());
    let (mut db, _) = Database::open(&settings).await?;
    // As root, PostgreSQL runs as `postgres`; when that user cannot reach
    // the requested directory the cluster lives in a fallback directory,
    // which the removal above did not touch. Start that one over too.
    if let Some(cluster) = db.cluster.clone() {
        let requested = std::path::absolute(&root)?;
        if !cluster.data_dir().starts_with(&requested) && !is_empty(&db).await? {
            let fallback = cluster.data_dir().parent().map(Path::to_path_buf);
            drop(db);
            tokio::task::spawn_blocking(move || cluster.stop(crate::pg::StopMode::Fast)).await??;
            if let Some(dir) = fallback {
                remove_dir(&dir)?;
            }
            db = Database::open(&settings).await?.0;
        }
    }
    let where_ = db
        .cluster
        .as_ref()
        .map(|c| c.data_dir().display().to_string())
        .unwrap_or_else(|| db.location.clone());
    let note = format!("private PostgreSQL, full durability (fsync on), fresh in {where_}");
    Ok((db, note, Some(lock)))
}

pub type Lock = nix::fcntl::Flock<std::fs::File>;

/// Takes `<root>.lock` (beside the directory, which is wiped) exclusively,
/// or says that another demo has it.
fn lock_demo_dir(root: &Path) -> Result<Lock, DemoError> {
    let path = root.with_extension("lock");
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| DemoError::Cleanup {
            dir: parent.to_path_buf(),
            source,
        })?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| DemoError::Cleanup {
            dir: path.clone(),
            source,
        })?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| {
        DemoError::AlreadyRunning {
            dir: root.to_path_buf(),
            pid: None,
        }
    })
}

/// A demo still running with `--keep-running` owns the directory: wiping it
/// under a live server would corrupt it.
fn refuse_if_running(root: &Path) -> Result<(), DemoError> {
    let pid_file = root.join("data").join("postmaster.pid");
    let Ok(text) = std::fs::read_to_string(&pid_file) else {
        return Ok(());
    };
    let pid = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok());
    if let Some(pid) = pid {
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        if alive {
            return Err(DemoError::AlreadyRunning {
                dir: root.to_path_buf(),
                pid: Some(pid),
            });
        }
    }
    Ok(())
}

fn remove_dir(dir: &Path) -> Result<(), DemoError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DemoError::Cleanup {
            dir: dir.to_path_buf(),
            source,
        }),
    }
}

async fn is_empty(db: &Database) -> anyhow::Result<bool> {
    let client = db.pool.get().await?;
    let row = client
        .query_one("SELECT NOT EXISTS (SELECT 1 FROM events)", &[])
        .await?;
    Ok(row.get(0))
}
