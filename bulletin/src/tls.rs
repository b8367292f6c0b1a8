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
    /// The state directory holds an identity that cannot be used as it is.
    #[error("{message}")]
    Identity {
        /// What is wrong, the files named, and how to recover.
        message: String,
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
    /// Load from `dir`, generating on first use. Never replaces any part of an identity:
    /// hosts pin the certificate, so a new one would lock every one of them out. A
    /// certificate without its key (or the reverse), or a pair that does not match, is
    /// refused with the files named and how to recover.
    pub fn load_or_create(dir: &Path) -> Result<Self, TlsError> {
        let (cp, kp) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        finish_interrupted_create(dir)?;
        match (cp.exists(), kp.exists()) {
            (true, true) => {
                let cert = std::fs::read(&cp).map_err(io("cannot read", &cp))?;
                let key = std::fs::read(&kp).map_err(io("cannot read", &kp))?;
                let id = Identity {
                    cert: CertificateDer::from(cert),
                    key: PrivatePkcs8KeyDer::from(key),
                };
                // Parse both and check they belong together, naming the files on failure.
                id.server_config().map_err(|e| TlsError::Identity {
                    message: format!(
                        "{} and {} are not a usable certificate and key ({e}); restore both from \
                         a backup, or remove both to create a new identity (then give every host \
                         the new `bulletin fingerprint`)",
                        cp.display(),
                        kp.display()
                    ),
                })?;
                Ok(id)
            }
            (false, false) => create(dir, &cp, &kp),
            (has_cert, _) => {
                let (present, missing) = if has_cert { (&cp, &kp) } else { (&kp, &cp) };
                Err(TlsError::Identity {
                    message: format!(
                        "{} exists but {} is missing: the bulletin's identity is incomplete and \
                         is never replaced on its own (hosts pin its certificate). Restore {} \
                         from a backup; or, to start a new identity, remove {} and give every \
                         host the new `bulletin fingerprint`",
                        present.display(),
                        missing.display(),
                        missing.display(),
                        present.display()
                    ),
                })
            }
        }
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

    /// The HTTPS server configuration of the dashboard: the same certificate, TLS 1.3
    /// only (as the QUIC side; every current browser and curl speak it), ALPN `http/1.1`.
    pub fn https_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        Ok(Arc::new(self.tls13(b"http/1.1")?))
    }

    /// TLS 1.3 with this certificate and ring, no client certificates: both servers'.
    fn tls13(&self, alpn: &[u8]) -> Result<rustls::ServerConfig, TlsError> {
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
        tls.alpn_protocols = vec![alpn.to_vec()];
        Ok(tls)
    }

    /// The QUIC server configuration.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, TlsError> {
        let tls = self.tls13(ALPN)?;
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(quinn::ServerConfig::with_crypto(Arc::new(quic)))
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + use<> {
    let path = path.to_path_buf();
    move |cause| TlsError::Io { what, path, cause }
}

/// Where a new identity is written before it is renamed into place.
fn staged(final_path: &Path) -> PathBuf {
    final_path.with_extension("der.new")
}

/// A new identity: both files are written and synced aside, then renamed key first,
/// certificate last. A crash leaves either nothing in place, or staged files that
/// [`finish_interrupted_create`] completes on the next start; never a half that is
/// mistaken for a whole.
fn create(dir: &Path, cp: &Path, kp: &Path) -> Result<Identity, TlsError> {
    std::fs::create_dir_all(dir).map_err(io("cannot create state directory", dir))?;
    let ck = rcgen::generate_simple_self_signed(vec!["vmvpn-bulletin".into()])
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let key = ck.signing_key.serialize_der();
    let (kn, cn) = (staged(kp), staged(cp));
    write_synced(&kn, &key, 0o600).map_err(io("cannot write", &kn))?;
    write_synced(&cn, ck.cert.der(), 0o644).map_err(io("cannot write", &cn))?;
    std::fs::rename(&kn, kp).map_err(io("cannot write", kp))?;
    std::fs::rename(&cn, cp).map_err(io("cannot write", cp))?;
    sync_dir(dir);
    Ok(Identity {
        cert: ck.cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(key),
    })
}

/// Complete a creation that stopped between its renames: the staged certificate is there
/// and the key is either staged or already in place.
fn finish_interrupted_create(dir: &Path) -> Result<(), TlsError> {
    let (cp, kp) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
    let (cn, kn) = (staged(&cp), staged(&kp));
    if cp.exists() || !cn.exists() {
        return Ok(());
    }
    if kn.exists() && !kp.exists() {
        std::fs::rename(&kn, &kp).map_err(io("cannot write", &kp))?;
    }
    if kp.exists() && !kn.exists() {
        std::fs::rename(&cn, &cp).map_err(io("cannot write", &cp))?;
        sync_dir(dir);
    }
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn sync_dir(dir: &Path) {
    // Best effort: the renames are durable once the directory is synced.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
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
        assert!(!staged(&dir.join(CERT_FILE)).exists());
        assert!(!staged(&dir.join(KEY_FILE)).exists());
        // A certificate file caught empty (a writer elsewhere) is no fingerprint.
        std::fs::write(dir.join(CERT_FILE), b"").expect("truncate");
        assert!(matches!(
            Identity::fingerprint_in(&dir),
            Err(TlsError::NoCertificate { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn fresh_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bulletin-id-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_partial_identity_is_refused_and_never_replaced() {
        for missing in [KEY_FILE, CERT_FILE] {
            let dir = fresh_dir(missing);
            let a = Identity::load_or_create(&dir).expect("create");
            let kept = if missing == KEY_FILE {
                CERT_FILE
            } else {
                KEY_FILE
            };
            let before = std::fs::read(dir.join(kept)).expect("read");
            std::fs::remove_file(dir.join(missing)).expect("rm");
            let e = Identity::load_or_create(&dir)
                .err()
                .expect("refused")
                .to_string();
            assert!(
                e.contains(&dir.join(missing).display().to_string())
                    && e.contains("is missing")
                    && e.contains("Restore"),
                "{e}"
            );
            assert_eq!(
                std::fs::read(dir.join(kept)).expect("read"),
                before,
                "untouched"
            );
            assert!(!dir.join(missing).exists(), "nothing regenerated");
            drop(a);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn a_mismatched_or_corrupt_identity_names_its_files() {
        let (d1, d2) = (fresh_dir("m1"), fresh_dir("m2"));
        Identity::load_or_create(&d1).expect("create");
        Identity::load_or_create(&d2).expect("create");
        std::fs::copy(d2.join(KEY_FILE), d1.join(KEY_FILE)).expect("copy");
        let e = Identity::load_or_create(&d1)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            e.contains("cert.der") && e.contains("key.der") && e.contains("restore"),
            "{e}"
        );
        std::fs::write(d2.join(KEY_FILE), b"garbage").expect("write");
        let e = Identity::load_or_create(&d2)
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("key.der"), "{e}");
        let _ = std::fs::remove_dir_all(&d1);
        let _ = std::fs::remove_dir_all(&d2);
    }

    #[test]
    fn an_interrupted_creation_is_completed() {
        let dir = fresh_dir("int");
        let a = Identity::load_or_create(&dir).expect("create");
        // As if stopped after writing both staged files, before any rename.
        std::fs::rename(dir.join(KEY_FILE), staged(&dir.join(KEY_FILE))).expect("mv");
        std::fs::rename(dir.join(CERT_FILE), staged(&dir.join(CERT_FILE))).expect("mv");
        let b = Identity::load_or_create(&dir).expect("completed");
        assert_eq!(a.fingerprint(), b.fingerprint());
        // As if stopped between the two renames.
        std::fs::rename(dir.join(CERT_FILE), staged(&dir.join(CERT_FILE))).expect("mv");
        let c = Identity::load_or_create(&dir).expect("completed");
        assert_eq!(a.fingerprint(), c.fingerprint());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
