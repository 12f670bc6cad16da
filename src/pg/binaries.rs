//! Finding the PostgreSQL server binaries on this machine.

use super::PgError;
use std::path::{Path, PathBuf};

/// Paths of the server programs the private cluster needs.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    pub initdb: PathBuf,
    pub postgres: PathBuf,
}

impl PgBinaries {
    pub fn in_dir(dir: &Path) -> Option<Self> {
        let initdb = dir.join("initdb");
        let postgres = dir.join("postgres");
        (initdb.is_file() && postgres.is_file()).then_some(PgBinaries { initdb, postgres })
    }
}

/// Looks on `PATH` first, then under `/usr/lib/postgresql/*/bin` (Debian and
/// Ubuntu keep server binaries off `PATH`), newest major version first.
pub fn find_bin_dir() -> Result<PgBinaries, PgError> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if let Some(found) = PgBinaries::in_dir(&dir) {
                return Ok(found);
            }
        }
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    versions
        .iter()
        .find_map(|(_, dir)| PgBinaries::in_dir(dir))
        .ok_or_else(|| PgError::BinariesNotFound {
            searched: "/usr/lib/postgresql/*/bin".to_string(),
        })
}
