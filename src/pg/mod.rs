//! A private PostgreSQL cluster, started from the machine's PostgreSQL
//! binaries when no `DATABASE_URL` is configured.
//!
//! `calsync serve`, `calsync demo`, the tests, the drills and the benchmarks
//! all use this one implementation. The server runs as a child process that
//! dies with calsync (Linux parent-death signal), so nothing is left running
//! after a crash or a finished test run. As root, the server runs as the
//! unprivileged `postgres` OS user because PostgreSQL refuses to run as root.

mod binaries;
mod cluster;
pub mod tls;

pub use binaries::{find_bin_dir, PgBinaries};
pub use cluster::{Cluster, ClusterOptions, Durability, StopMode};

use std::path::PathBuf;

/// Why the private cluster could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(
        "no PostgreSQL server binaries found (looked for initdb and postgres on PATH and in {searched}). \
         Install them, for example `apt-get install postgresql` on Debian/Ubuntu, \
         or set DATABASE_URL to use an existing server"
    )]
    BinariesNotFound { searched: String },
    #[error(
        "running as root, but there is no unprivileged `{user}` OS user to run PostgreSQL as \
         (PostgreSQL refuses to run as root). Create it (`useradd --system {user}`), \
         run calsync as a normal user, or set DATABASE_URL"
    )]
    NoUnprivilegedUser { user: String },
    #[error("{step} failed: {detail}")]
    Command { step: String, detail: String },
    #[error(
        "PostgreSQL did not become ready within {seconds} s; its log ({log}) ends with:\n{tail}"
    )]
    NotReady {
        seconds: u64,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "refusing to use {path} as a private PostgreSQL directory: {reason}. \
         calsync only uses a directory it created itself (mode 0700, owned by the server's user); \
         remove it, or choose a shorter --pg-dir so the socket lives inside it"
    )]
    UnsafeDirectory { path: PathBuf, reason: String },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
