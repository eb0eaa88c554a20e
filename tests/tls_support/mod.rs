//! Test certificates made by the real `openssl` command, and rustls clients
//! that trust them. Shared by the TLS and proxy tests (`mod tls_support;`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// A private temporary directory, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("wschat-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Fails the test with the install command when a program is missing.
pub fn require(program: &str, package: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"] {
        let candidate = Path::new(dir).join(program);
        if candidate.exists() {
            return candidate;
        }
    }
    panic!("{program} is missing: install it with `apt-get install -y {package}`");
}

fn openssl(dir: &Path, args: &[&str]) {
    let openssl = require("openssl", "openssl");
    let out = Command::new(openssl)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA and a server certificate it signed for `localhost` and
/// 127.0.0.1, in PEM files under `dir`.
pub struct TestPki {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    /// The server key as PKCS#8 (`BEGIN PRIVATE KEY`).
    pub key: PathBuf,
}

/// Key algorithms for the server key.
#[derive(Clone, Copy, Debug)]
pub enum KeyKind {
    EcP256,
    Rsa2048,
}

impl TestPki {
    /// Makes a CA and a server certificate in `dir`; `name` prefixes the
    /// server files so that several pairs can live in one directory.
    pub fn make(dir: &Path, name: &str, kind: KeyKind) -> TestPki {
        let ca_key = format!("{name}-ca.key");
        let ca_cert = format!("{name}-ca.pem");
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let cert = format!("{name}.pem");
        let ext = format!("{name}.ext");
        let key_args: &[&str] = match kind {
            KeyKind::EcP256 => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
            KeyKind::Rsa2048 => &["-newkey", "rsa:2048"],
        };
        let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
        args.extend_from_slice(key_args);
        args.extend_from_slice(&[
            "-keyout",
            &ca_key,
            "-out",
            &ca_cert,
            "-subj",
            "/CN=wschat test CA",
        ]);
        openssl(dir, &args);
        let mut args = vec!["req", "-nodes"];
        args.extend_from_slice(key_args);
        args.extend_from_slice(&["-keyout", &key, "-out", &csr, "-subj", "/CN=localhost"]);
        openssl(dir, &args);
        std::fs::write(
            dir.join(&ext),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n\
             basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\n",
        )
        .expect("write ext file");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_cert,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &cert,
            ],
        );
        TestPki {
            ca_cert: dir.join(ca_cert),
            cert: dir.join(cert),
            key: dir.join(key),
        }
    }

    /// The server key rewritten in its algorithm's traditional form:
    /// PKCS#1 (`BEGIN RSA PRIVATE KEY`) or SEC1 (`BEGIN EC PRIVATE KEY`).
    pub fn traditional_key(&self, kind: KeyKind) -> PathBuf {
        let dir = self.key.parent().expect("key dir");
        let out = self.key.with_extension("trad.key");
        let out_name = out.to_string_lossy().into_owned();
        let in_name = self.key.to_string_lossy().into_owned();
        match kind {
            KeyKind::Rsa2048 => openssl(
                dir,
                &["rsa", "-traditional", "-in", &in_name, "-out", &out_name],
            ),
            KeyKind::EcP256 => openssl(dir, &["ec", "-in", &in_name, "-out", &out_name]),
        }
        out
    }

    /// A rustls client config trusting this CA, with the given versions
    /// and ALPN offer.
    pub fn client_config(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ca_cert).expect("read CA") {
            roots.add(cert.expect("CA PEM")).expect("add CA");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("client versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

pub fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("server name")
}
