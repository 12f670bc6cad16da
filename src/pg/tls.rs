//! TLS to an external PostgreSQL, with rustls (on ring), honouring the
//! `sslmode` and `sslrootcert` of `DATABASE_URL` as libpq does
//! (`crate::core::pg_tls` reads them): `disable` is plain text; `prefer`
//! (the default) and `require` encrypt without checking the certificate
//! unless a root certificate is given; `verify-ca` checks that the server's
//! certificate chains to `sslrootcert`; `verify-full` also that it names
//! the host connected to.

use crate::core::pg_tls::{self, PgTls, SslMode, Verify};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use std::str::FromStr;
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("DATABASE_URL: {0}")]
    Url(String),
    #[error("DATABASE_URL is not a valid connection string: {0}")]
    Parse(#[from] tokio_postgres::Error),
    #[error("sslrootcert {path}: {reason}")]
    RootCert { path: String, reason: String },
    #[error("TLS set-up: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A connection string with its TLS resolved.
#[derive(Clone)]
pub struct DbConnect {
    pub config: tokio_postgres::Config,
    /// `None`: plain text (`sslmode=disable`, or the private cluster's
    /// Unix socket).
    pub tls: Option<MakeRustlsConnect>,
    pub policy: PgTls,
}

impl DbConnect {
    /// Plain text, for the private cluster (a Unix socket: PostgreSQL does
    /// not speak TLS there).
    pub fn plain(config: tokio_postgres::Config) -> Self {
        DbConnect {
            config,
            tls: None,
            policy: PgTls {
                mode: SslMode::Disable,
                verify: None,
            },
        }
    }

    /// Reads `url`'s `sslmode` and `sslrootcert` (see the module doc).
    pub fn from_url(url: &str) -> Result<Self, TlsConfigError> {
        let (rest, policy) = pg_tls::split(url).map_err(TlsConfigError::Url)?;
        let mut config = tokio_postgres::Config::from_str(&rest)?;
        config.ssl_mode(match policy.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        let tls = match &policy.verify {
            None => None,
            Some(verify) => Some(MakeRustlsConnect::new(client_config(verify)?)),
        };
        Ok(DbConnect {
            config,
            tls,
            policy,
        })
    }

    /// One connection (its driver runs on a task of its own).
    pub async fn connect(&self) -> Result<tokio_postgres::Client, ConnectError> {
        let result = match &self.tls {
            None => self
                .config
                .connect(tokio_postgres::NoTls)
                .await
                .map(|(c, conn)| {
                    tokio::spawn(conn);
                    c
                }),
            Some(tls) => self.config.connect(tls.clone()).await.map(|(c, conn)| {
                tokio::spawn(conn);
                c
            }),
        };
        result.map_err(|source| ConnectError {
            tls: self.describe(),
            detail: chain(&source),
            source,
        })
    }

    /// `sslmode=… [sslrootcert=…]`, for errors and logs.
    pub fn describe(&self) -> String {
        match &self.policy.verify {
            Some(Verify::Chain { root } | Verify::ChainAndName { root }) => format!(
                "sslmode={} sslrootcert={}",
                self.policy.mode.as_str(),
                root.display()
            ),
            _ => format!("sslmode={}", self.policy.mode.as_str()),
        }
    }
}

/// A connection that failed, with the TLS settings in force and every
/// cause (a wrong CA reads "invalid peer certificate: UnknownIssuer").
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to PostgreSQL ({tls}): {detail}")]
pub struct ConnectError {
    pub tls: String,
    pub detail: String,
    #[source]
    pub source: tokio_postgres::Error,
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(verify: &Verify) -> Result<ClientConfig, TlsConfigError> {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = match verify {
        Verify::Nothing => Arc::new(Unchecked(provider.clone())),
        Verify::Chain { root } => Arc::new(ChainOnly(webpki(root, provider.clone())?)),
        Verify::ChainAndName { root } => webpki(root, provider.clone())?,
    };
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

fn webpki(
    root: &std::path::Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, TlsConfigError> {
    let bad = |reason: String| TlsConfigError::RootCert {
        path: root.display().to_string(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(root).map_err(|e| bad(e.to_string()))? {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| bad(e.to_string()))
}

/// `prefer` / `require` without a root certificate: encrypted, and the
/// handshake's signatures are checked, but not who signed the certificate
/// (libpq's behaviour; use `verify-full` against an active attacker).
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to the root certificate; the name in
/// the certificate is not compared with the host.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
