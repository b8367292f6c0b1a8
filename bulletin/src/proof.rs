//! Proof of LAN membership without sending the secret.
//!
//! `verifier = HKDF-Expand(HKDF-Extract("vmvpn/1 lan", secret), "vmvpn/1 bulletin verifier")`,
//! the same root vmvpn derives its data-plane keys from, expanded with another label. So
//! the bulletin, which holds only verifiers, can check proofs but can derive no key that
//! opens frames. A proof is `HMAC-SHA256(verifier, "vmvpn/1 bulletin proof" ‖ nonce ‖
//! host id ‖ LAN name)` over the bulletin's nonce, fresh per connection, so a recorded
//! proof is worthless on the next connection.

use base64::Engine as _;
use ring::{hkdf, hmac};

/// What the bulletin keeps per LAN.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier(pub [u8; 32]);

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(..)")
    }
}

struct Len32;
impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

impl Verifier {
    /// Derive a LAN's verifier from its secret.
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        let root = hkdf::Salt::new(hkdf::HKDF_SHA256, b"vmvpn/1 lan").extract(secret);
        let mut out = [0u8; 32];
        // Invariant: 32 bytes is far below HKDF-SHA256's output limit, so this cannot fail.
        if let Ok(okm) = root.expand(&[b"vmvpn/1 bulletin verifier"], Len32) {
            let _ = okm.fill(&mut out);
        }
        Verifier(out)
    }

    /// Parse the base64 form (as `vmvpn verifier` prints it).
    pub fn from_base64(text: &str) -> Result<Self, String> {
        let b = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| {
                "not base64: expected the 44 characters `vmvpn verifier` prints".to_string()
            })?;
        let a: [u8; 32] = b
            .try_into()
            .map_err(|b: Vec<u8>| format!("decodes to {} bytes, expected 32", b.len()))?;
        Ok(Verifier(a))
    }

    /// The base64 form.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    fn message(nonce: &[u8; 32], host_id: u32, lan: &str) -> Vec<u8> {
        let mut m = Vec::with_capacity(22 + 32 + 4 + lan.len());
        m.extend_from_slice(b"vmvpn/1 bulletin proof");
        m.extend_from_slice(nonce);
        m.extend_from_slice(&host_id.to_be_bytes());
        m.extend_from_slice(lan.as_bytes());
        m
    }

    fn key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.0)
    }

    /// The proof a host sends for `lan` over the bulletin's `nonce`.
    pub fn prove(&self, nonce: &[u8; 32], host_id: u32, lan: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(&self.key(), &Self::message(nonce, host_id, lan)).as_ref());
        out
    }

    /// Check a proof (constant time).
    pub fn verify(&self, nonce: &[u8; 32], host_id: u32, lan: &str, proof: &[u8; 32]) -> bool {
        hmac::verify(&self.key(), &Self::message(nonce, host_id, lan), proof).is_ok()
    }

    /// The operator's proof over `nonce`, with the verifier of the operator token. Its own
    /// label, so it can never pass as a LAN proof nor a LAN proof as it.
    pub fn prove_operator(&self, nonce: &[u8; 32]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(&self.key(), &Self::operator_message(nonce)).as_ref());
        out
    }

    /// Check an operator proof (constant time).
    pub fn verify_operator(&self, nonce: &[u8; 32], proof: &[u8; 32]) -> bool {
        hmac::verify(&self.key(), &Self::operator_message(nonce), proof).is_ok()
    }

    fn operator_message(nonce: &[u8; 32]) -> Vec<u8> {
        let mut m = Vec::with_capacity(25 + 32);
        m.extend_from_slice(b"vmvpn/1 bulletin operator");
        m.extend_from_slice(nonce);
        m
    }
}

/// Largest secret file read: a secret is one line of 44 characters; comments or a
/// trailing newline fit easily, a device or a log file does not.
pub const MAX_SECRET_FILE: u64 = 4096;

/// Read a secret file (LAN secret or operator token): a regular file of at most
/// [`MAX_SECRET_FILE`] bytes, opened without blocking (a FIFO never hangs the caller, and
/// `/dev/zero` is refused before a byte is read). The error says what is wrong, not where.
pub fn read_secret_file(path: &std::path::Path) -> Result<[u8; 32], String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!(
            "{} is not a regular file: a secret file holds one line from `vmvpn keygen`",
            path.display()
        ));
    }
    if meta.len() > MAX_SECRET_FILE {
        return Err(format!(
            "{} has {} bytes, more than a secret file's {MAX_SECRET_FILE}: expected one line from `vmvpn keygen`",
            path.display(),
            meta.len()
        ));
    }
    let mut text = String::new();
    f.take(MAX_SECRET_FILE)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_secret(&text).map_err(|m| format!("{}: {m}", path.display()))
}

/// Parse a LAN secret file (base64 of 32 bytes, as `vmvpn keygen` prints).
pub fn parse_secret(text: &str) -> Result<[u8; 32], String> {
    let b = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| {
            "not base64: expected one line of 44 base64 characters, as `vmvpn keygen` prints"
                .to_string()
        })?;
    b.try_into().map_err(|b: Vec<u8>| {
        format!(
            "decodes to {} bytes, expected 32 (use `vmvpn keygen`)",
            b.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn right_secret_verifies_wrong_secret_and_replays_do_not() {
        let v = Verifier::from_secret(&[1; 32]);
        let nonce = [7; 32];
        let p = v.prove(&nonce, 42, "lan1");
        assert!(v.verify(&nonce, 42, "lan1", &p));
        // Wrong secret.
        let other = Verifier::from_secret(&[2; 32]).prove(&nonce, 42, "lan1");
        assert!(!v.verify(&nonce, 42, "lan1", &other));
        // Replayed on a new connection (new nonce), or for another host or LAN.
        assert!(!v.verify(&[8; 32], 42, "lan1", &p));
        assert!(!v.verify(&nonce, 43, "lan1", &p));
        assert!(!v.verify(&nonce, 42, "lan2", &p));
    }

    #[test]
    fn operator_and_lan_proofs_never_pass_for_each_other() {
        let v = Verifier::from_secret(&[1; 32]);
        let nonce = [7; 32];
        let op = v.prove_operator(&nonce);
        assert!(v.verify_operator(&nonce, &op));
        assert!(!v.verify_operator(&[8; 32], &op));
        assert!(!Verifier::from_secret(&[2; 32]).verify_operator(&nonce, &op));
        for lan in ["", "lan1"] {
            assert!(!v.verify(&nonce, 0, lan, &op));
            assert!(!v.verify_operator(&nonce, &v.prove(&nonce, 0, lan)));
        }
    }

    #[test]
    fn secret_files_must_be_small_regular_files() {
        let dir = std::env::temp_dir().join(format!("bulletin-secret-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let good = dir.join("good.key");
        let text = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        std::fs::write(&good, format!("{text}\n")).expect("write");
        assert_eq!(read_secret_file(&good), Ok([9u8; 32]));
        let big = dir.join("big.key");
        std::fs::write(&big, vec![b'A'; 5000]).expect("write");
        assert!(read_secret_file(&big).unwrap_err().contains("5000 bytes"));
        let e = read_secret_file(std::path::Path::new("/dev/zero")).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).expect("path");
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_secret_file(&fifo).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        assert!(
            read_secret_file(&dir)
                .unwrap_err()
                .contains("not a regular file")
        );
        assert!(
            read_secret_file(&dir.join("missing"))
                .unwrap_err()
                .contains("cannot read")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn base64_round_trip_and_errors() {
        let v = Verifier::from_secret(&[3; 32]);
        assert_eq!(Verifier::from_base64(&v.to_base64()).expect("parse"), v);
        assert!(Verifier::from_base64("!!").is_err());
        assert!(
            Verifier::from_base64("AAAA")
                .unwrap_err()
                .contains("3 bytes")
        );
    }

    #[test]
    fn the_verifier_is_not_the_secret_or_a_data_key() {
        let secret = [5u8; 32];
        let v = Verifier::from_secret(&secret);
        assert_ne!(v.0, secret);
        // Stable across builds: changing the derivation locks every host out.
        assert_eq!(v, Verifier::from_secret(&secret));
    }
}
