//! The certificate and key behind `--tls-cert`/`--tls-key`: read, checked
//! and turned into the rustls server config that new connections use;
//! read again on SIGHUP (PROTOCOL section 10).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, crypto::CryptoProvider};

use super::ALPN_HTTP11;

/// The crypto provider: ring (see README for why not aws-lc-rs).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate and key files and the server config built from them;
/// reloaded on SIGHUP.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    cert_path: PathBuf,
    key_path: PathBuf,
    config: Arc<ServerConfig>,
}

impl TlsSettings {
    /// Reads and checks `--tls-cert` and `--tls-key`. The error is one line
    /// naming the flag and the file (the caller prints it and exits 2).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<TlsSettings, String> {
        let config = build_config(cert_path, key_path)?;
        Ok(TlsSettings {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            config,
        })
    }

    /// The config for a new connection ([`super::TlsTransport::new`]).
    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }

    /// Reads both files again (SIGHUP). On success later connections use
    /// the new pair; on error nothing changes. Open connections hold their
    /// own `Arc` and are never touched.
    pub fn reload(&mut self) -> Result<(), String> {
        self.config = build_config(&self.cert_path, &self.key_path)?;
        Ok(())
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    pub fn key_path(&self) -> &Path {
        &self.key_path
    }
}

fn build_config(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, String> {
    let certs = read_certs(cert_path)?;
    let key = read_key(key_path)?;
    let provider = provider();
    let signing_key = provider.key_provider.load_private_key(key).map_err(|err| {
        format!(
            "--tls-key {}: unusable private key: {err}",
            key_path.display()
        )
    })?;
    let certified = CertifiedKey::new(certs, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        // The provider cannot tell for this key type; rustls accepts that.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(err) => {
            return Err(format!(
                "--tls-key {}: does not match the certificate in {}: {err}",
                key_path.display(),
                cert_path.display()
            ));
        }
    }
    let resolver = Arc::new(rustls::sign::SingleCertAndKey::from(certified));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|err| format!("TLS configuration: {err}"))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    // rustls refuses (alert no_application_protocol) a client whose ALPN
    // list lacks every protocol here, as PROTOCOL section 10 asks.
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

fn read_file(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|err| format!("{flag} {}: {err}", path.display()))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_file("--tls-cert", path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("--tls-cert {}: bad PEM: {err}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--tls-cert {}: no PEM certificate in the file",
            path.display()
        ));
    }
    // Parse the end-entity certificate now, so a corrupt one fails at start
    // and not at the first handshake.
    if let Some(first) = certs.first() {
        rustls::server::ParsedCertificate::try_from(first)
            .map_err(|err| format!("--tls-cert {}: invalid certificate: {err}", path.display()))?;
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_file("--tls-key", path)?;
    // PKCS#8, PKCS#1 (RSA) and SEC1 (EC) sections are all accepted.
    PrivateKeyDer::from_pem_slice(&pem).map_err(|err| {
        format!(
            "--tls-key {}: no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {err}",
            path.display()
        )
    })
}
