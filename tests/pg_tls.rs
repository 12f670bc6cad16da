//! TLS to PostgreSQL against a real TLS-enabled server: a private cluster
//! started with `ssl=on` and a certificate made here with the openssl CLI
//! (signed by a test CA, for the name `localhost` only). Every `sslmode`,
//! `sslrootcert`, and a wrong CA refused with an error that says so.

use calsync::pg::tls::DbConnect;
use calsync::pg::{Cluster, ClusterOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`{name}.crt`) and, for `ca`, a server certificate for `localhost`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
        ],
    );
}

fn make_certificates(dir: &Path) {
    make_ca(dir, "ca");
    make_ca(dir, "other-ca");
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
    // PostgreSQL wants its key private and its own.
    use std::os::unix::fs::PermissionsExt;
    let key = dir.join("server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    if nix::unistd::Uid::effective().is_root() {
        let pg = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        nix::unistd::chown(&key, Some(pg.uid), Some(pg.gid)).unwrap();
    }
}

struct TlsCluster {
    cluster: Cluster,
    port: u16,
    certs: PathBuf,
    _dir: tempfile::TempDir,
}

async fn tls_cluster() -> TlsCluster {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    make_certificates(&certs);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut options = ClusterOptions::new(dir.path().join("pg"));
    options.port = port;
    options.durability = calsync::pg::Durability::Fast;
    for (k, v) in [
        ("ssl", "on".to_string()),
        (
            "ssl_cert_file",
            certs.join("server.crt").display().to_string(),
        ),
        (
            "ssl_key_file",
            certs.join("server.key").display().to_string(),
        ),
        ("listen_addresses", "127.0.0.1".to_string()),
    ] {
        options.settings.push((k.into(), v));
    }
    let cluster = tokio::task::spawn_blocking(move || Cluster::start(options))
        .await
        .unwrap()
        .expect("the TLS cluster starts");
    TlsCluster {
        cluster,
        port,
        certs,
        _dir: dir,
    }
}

impl TlsCluster {
    /// A TCP connection string to `host` (always reached at 127.0.0.1).
    fn url(&self, host: &str, tls: &str) -> String {
        format!(
            "host={host} hostaddr=127.0.0.1 port={} user=postgres dbname=postgres {tls}",
            self.port
        )
    }

    fn root(&self, ca: &str) -> String {
        format!("sslrootcert={}", self.certs.join(ca).display())
    }
}

/// Connects and says whether the session is encrypted.
async fn encrypted(url: &str) -> Result<bool, String> {
    let connect = DbConnect::from_url(url).map_err(|e| e.to_string())?;
    let client = connect.connect().await.map_err(|e| e.to_string())?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sslmode_against_a_tls_enabled_postgresql() {
    let c = tls_cluster().await;
    let ca = c.root("ca.crt");
    let wrong = c.root("other-ca.crt");
    // Plain text only when asked.
    assert_eq!(
        encrypted(&c.url("localhost", "sslmode=disable")).await,
        Ok(false)
    );
    // The default (prefer) and require encrypt without a root certificate.
    assert_eq!(encrypted(&c.url("localhost", "")).await, Ok(true));
    assert_eq!(
        encrypted(&c.url("localhost", "sslmode=prefer")).await,
        Ok(true)
    );
    assert_eq!(
        encrypted(&c.url("127.0.0.1", "sslmode=require")).await,
        Ok(true)
    );
    // verify-ca: the chain, not the name (the certificate is for localhost).
    let verify_ca = format!("sslmode=verify-ca {ca}");
    assert_eq!(encrypted(&c.url("127.0.0.1", &verify_ca)).await, Ok(true));
    // verify-full: the chain and the name.
    let verify_full = format!("sslmode=verify-full {ca}");
    assert_eq!(encrypted(&c.url("localhost", &verify_full)).await, Ok(true));
    let err = encrypted(&c.url("127.0.0.1", &verify_full))
        .await
        .unwrap_err();
    assert!(err.contains("not valid for name"), "{err}");
    // The wrong CA is refused in both verifying modes, and the error names
    // the settings and the cause.
    for mode in ["verify-ca", "verify-full"] {
        let err = encrypted(&c.url("localhost", &format!("sslmode={mode} {wrong}")))
            .await
            .unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{mode}: {err}");
        assert!(err.contains(&format!("sslmode={mode}")), "{err}");
        assert!(err.contains("other-ca.crt"), "{err}");
    }
    // libpq: require with a root certificate checks the chain too.
    let err = encrypted(&c.url("localhost", &format!("sslmode=require {wrong}")))
        .await
        .unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    // No TLS on the Unix socket: require fails, prefer falls back.
    let socket = c.cluster.connection_string("postgres");
    let err = encrypted(&format!("{socket} sslmode=require"))
        .await
        .unwrap_err();
    assert!(err.contains("server does not support TLS"), "{err}");
    assert_eq!(
        encrypted(&format!("{socket} sslmode=prefer")).await,
        Ok(false)
    );
    // verify-* without a root certificate is a configuration error.
    let err = encrypted(&c.url("localhost", "sslmode=verify-full"))
        .await
        .unwrap_err();
    assert!(err.contains("sslrootcert"), "{err}");

    // calsync itself honours DATABASE_URL's TLS: migrate succeeds with the
    // right CA and fails clearly with the wrong one.
    let migrate = |url: String| {
        Command::new(env!("CARGO_BIN_EXE_calsync"))
            .arg("migrate")
            .env("DATABASE_URL", url)
            .env_remove("CALSYNC_CONFIG")
            .output()
            .unwrap()
    };
    let ok = migrate(c.url("localhost", &verify_full));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = migrate(c.url("localhost", &format!("sslmode=verify-full {wrong}")));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        stderr.contains("UnknownIssuer") && stderr.contains("sslmode=verify-full"),
        "{stderr}"
    );
}
