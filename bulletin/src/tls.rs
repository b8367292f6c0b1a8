//! The bulletin's certificate and how hosts pin it.
//!
//! On first start `bulletin serve` generates a self-signed certificate and key into its
//! state directory and reuses them afterwards. Hosts pin the SHA-256 of the certificate
//! (`fingerprint = "sha256:…"`): the verifier accepts exactly that certificate, whatever
//! its name or dates, and still checks the handshake signature, so only the holder of the
//! key can be the bulletin. There is no fallback to anything else.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ring::digest;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use thiserror::Error;

use crate::proto::ALPN;

/// File names in the state directory.
const CERT_FILE: &str = "cert.der";
const KEY_FILE: &str = "key.der";

/// Certificate and TLS setup errors.
#[derive(Debug, Error)]
pub enum TlsError {
    /// Reading or writing the state directory failed.
    #[error("{what} {path}: {cause}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// OS error.
        cause: std::io::Error,
    },
    /// `bulletin fingerprint` found no certificate.
    #[error("no certificate at {path}: {cause} (has `bulletin serve` run with this --state-dir?)")]
    NoCertificate {
        /// The certificate file.
        path: PathBuf,
        /// OS error.
        cause: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("cannot generate the bulletin certificate: {0}")]
    Generate(String),
    /// rustls or quinn refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// A fingerprint string that is not `sha256:` and 64 hex digits.
    #[error(
        "bad fingerprint {0:?}: expected sha256: followed by 64 hex digits, as `bulletin fingerprint` prints"
    )]
    BadFingerprint(String),
}

/// The bulletin's certificate and key.
pub struct Identity {
    /// DER certificate.
    pub cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Identity {
    /// Load from `dir`, generating on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self, TlsError> {
        fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + use<> {
            let path = path.to_path_buf();
            move |cause| TlsError::Io { what, path, cause }
        }
        let (cp, kp) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        if cp.exists() && kp.exists() {
            let cert = std::fs::read(&cp).map_err(io("cannot read", &cp))?;
            let key = std::fs::read(&kp).map_err(io("cannot read", &kp))?;
            return Ok(Identity {
                cert: CertificateDer::from(cert),
                key: PrivatePkcs8KeyDer::from(key),
            });
        }
        std::fs::create_dir_all(dir).map_err(io("cannot create state directory", dir))?;
        let ck = rcgen::generate_simple_self_signed(vec!["vmvpn-bulletin".into()])
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        let key = ck.signing_key.serialize_der();
        write_private(&kp, &key).map_err(io("cannot write", &kp))?;
        // Written aside and renamed: a concurrent `bulletin fingerprint` sees no certificate
        // or the whole one, never a partial file (the key is complete before either).
        let tmp = cp.with_extension("tmp");
        std::fs::write(&tmp, ck.cert.der()).map_err(io("cannot write", &tmp))?;
        std::fs::rename(&tmp, &cp).map_err(io("cannot write", &cp))?;
        Ok(Identity {
            cert: ck.cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key),
        })
    }

    /// Load without creating (for `bulletin fingerprint`).
    pub fn fingerprint_in(dir: &Path) -> Result<String, TlsError> {
        let path = dir.join(CERT_FILE);
        let cert = std::fs::read(&path).map_err(|cause| TlsError::NoCertificate {
            path: path.clone(),
            cause,
        })?;
        if cert.is_empty() {
            return Err(TlsError::NoCertificate {
                path,
                cause: std::io::Error::other("the file is empty"),
            });
        }
        Ok(fingerprint(&cert))
    }

    /// `sha256:` + hex of the certificate's SHA-256.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert)
    }

    /// The QUIC server configuration.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(
                vec![self.cert.clone()],
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )
            .map_err(|e| TlsError::Config(e.to_string()))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(quinn::ServerConfig::with_crypto(Arc::new(quic)))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// `sha256:` + hex of SHA-256(der).
pub fn fingerprint(der: &[u8]) -> String {
    let d = digest::digest(&digest::SHA256, der);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Parse `sha256:<64 hex>` into the digest.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], TlsError> {
    let bad = || TlsError::BadFingerprint(s.to_string());
    let hex = s.trim().strip_prefix("sha256:").ok_or_else(bad)?;
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(out)
}

/// Accepts exactly one certificate, by its SHA-256; remembers what it saw on mismatch.
#[derive(Debug)]
pub struct PinnedVerifier {
    expected: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
    /// The fingerprint the server presented, when it did not match.
    pub mismatch: Mutex<Option<String>>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let d = digest::digest(&digest::SHA256, end_entity);
        if d.as_ref() == self.expected {
            return Ok(ServerCertVerified::assertion());
        }
        if let Ok(mut m) = self.mismatch.lock() {
            *m = Some(fingerprint(end_entity));
        }
        Err(rustls::Error::General(
            "bulletin certificate fingerprint mismatch".into(),
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A QUIC client configuration that trusts only the certificate with this fingerprint.
pub fn client_config(
    fingerprint: &str,
) -> Result<(quinn::ClientConfig, Arc<PinnedVerifier>), TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinnedVerifier {
        expected: parse_fingerprint(fingerprint)?,
        algorithms: provider.signature_verification_algorithms,
        mismatch: Mutex::new(None),
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok((quinn::ClientConfig::new(Arc::new(quic)), verifier))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_and_reject_garbage() {
        let f = fingerprint(b"certificate");
        assert!(f.starts_with("sha256:") && f.len() == 71);
        let d = parse_fingerprint(&f).expect("parse");
        assert_eq!(
            fingerprint(b"certificate"),
            format!(
                "sha256:{}",
                d.iter().map(|b| format!("{b:02x}")).collect::<String>()
            )
        );
        for bad in [
            "",
            "sha256:",
            "md5:00",
            &f[..70],
            &f.replace('a', "g"),
            &f[7..],
        ] {
            assert!(parse_fingerprint(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn identity_is_generated_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("bulletin-tls-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = Identity::load_or_create(&dir).expect("create");
        let b = Identity::load_or_create(&dir).expect("load");
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(Identity::fingerprint_in(&dir).expect("fp"), a.fingerprint());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(KEY_FILE))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key is private");
        assert!(a.server_config().is_ok());
        assert!(!dir.join(CERT_FILE).with_extension("tmp").exists());
        // A certificate file caught empty (a writer elsewhere) is no fingerprint.
        std::fs::write(dir.join(CERT_FILE), b"").expect("truncate");
        assert!(matches!(
            Identity::fingerprint_in(&dir),
            Err(TlsError::NoCertificate { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
