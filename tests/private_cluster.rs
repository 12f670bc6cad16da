//! The private cluster's socket directory: a long data path puts the socket
//! under the temp dir, in a directory calsync made (mode 0700, the server's
//! user); a directory someone else prepared at that name is refused before
//! anything starts.

use calsync::pg::{Cluster, ClusterOptions};
use sha2::Digest;
use std::os::unix::fs::PermissionsExt;

#[test]
fn a_prepared_socket_directory_is_refused_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    // Longer than a Unix socket path allows: the socket moves out.
    let root = tmp.path().join("d".repeat(100));
    let digest = hex::encode(&sha2::Sha256::digest(root.to_string_lossy().as_bytes())[..6]);
    let socket_dir = std::env::temp_dir().join(format!("calsync-sock-{digest}"));
    // Someone was there first: a directory anyone may enter and write.
    std::fs::create_dir_all(&socket_dir).unwrap();
    std::fs::set_permissions(&socket_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let started = Cluster::start(ClusterOptions::new(&root));
    let _ = std::fs::remove_dir_all(&socket_dir);
    let err = match started {
        Ok(_) => panic!("the cluster started with a socket directory it did not make"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("refusing to use"), "{err}");
    assert!(err.contains(&socket_dir.display().to_string()), "{err}");
    // Nothing was initialised.
    assert!(!root.join("data").join("PG_VERSION").exists());
}
