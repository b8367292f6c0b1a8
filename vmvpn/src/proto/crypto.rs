//! Key schedule and AEAD for the data plane.
//!
//! The LAN secret (32 random bytes) is only the root: `root = HKDF-Extract("vmvpn/1 lan",
//! secret)`. From it:
//! - `hello key = HKDF-Expand(root, "vmvpn/1 hello")`, an HMAC-SHA256 key that
//!   authenticates hellos (proof of holding the LAN secret, without sending it);
//! - per tunnel, `HKDF(salt = root, ikm = X25519(my ephemeral, peer ephemeral), info =
//!   "vmvpn/1 session" ‖ LAN id ‖ low id ‖ high id ‖ low public ‖ high public)` gives 64
//!   bytes: the key for low→high, then high→low. Ephemerals are fresh at every start, so a
//!   restart on either side yields new keys, and every receiver has its own;
//! - per sender and start, the group key for flooded frames: `HKDF-Expand(root,
//!   "vmvpn/1 group" ‖ LAN id ‖ sender id ‖ sender public)`.
//!
//! The AEAD nonce is 4 zero bytes ‖ the 64-bit sequence number, which the sender never
//! reuses under one key (see `forward.rs`).

use ring::{aead, digest, hkdf, hmac};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::proto::{HEADER_LEN, TAG_LEN};

/// A LAN secret: 32 random bytes, kept in a file as base64.
#[derive(Clone)]
pub struct LanSecret(pub [u8; 32]);

impl std::fmt::Debug for LanSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LanSecret(..)")
    }
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand<const N: usize>(prk: &hkdf::Prk, info: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    // Invariant: N <= 255 * 32, so expand and fill cannot fail.
    if let Ok(okm) = prk.expand(info, Len(N)) {
        let _ = okm.fill(&mut out);
    }
    out
}

/// How a LAN's frames are protected on the wire (`[[lan]] cipher`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cipher {
    /// AES-256-GCM: encrypted and authenticated (the default).
    #[default]
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
    /// Neither encrypted nor authenticated: for trusted underlays and for measuring the
    /// cost of the cipher. The handshake is still authenticated by the LAN secret, and the
    /// choice is bound into it, so hosts with different ciphers never pair up.
    None,
}

impl Cipher {
    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes256Gcm => "aes-256-gcm",
            Cipher::None => "none",
        }
    }
}

/// Keys derived from one LAN's secret.
pub struct LanKeys {
    root: hkdf::Prk,
    hello: hmac::Key,
    root_salt: [u8; 32],
}

impl LanKeys {
    /// Derive the LAN's keys from its secret.
    pub fn new(secret: &LanSecret) -> Self {
        Self::with_cipher(secret, Cipher::Aes256Gcm)
    }

    /// Derive the LAN's keys for a cipher: the hello key differs per cipher, so a host
    /// configured with another cipher fails the handshake (counted) instead of pairing.
    pub fn with_cipher(secret: &LanSecret, cipher: Cipher) -> Self {
        let root = hkdf::Salt::new(hkdf::HKDF_SHA256, b"vmvpn/1 lan").extract(&secret.0);
        let hello_bytes: [u8; 32] = match cipher {
            Cipher::Aes256Gcm => expand(&root, &[b"vmvpn/1 hello"]),
            Cipher::None => expand(&root, &[b"vmvpn/1 hello", b" cipher none"]),
        };
        let root_salt: [u8; 32] = expand(&root, &[b"vmvpn/1 session salt"]);
        LanKeys {
            root,
            hello: hmac::Key::new(hmac::HMAC_SHA256, &hello_bytes),
            root_salt,
        }
    }

    /// HMAC over a hello's header and signed body.
    pub fn hello_mac(&self, header: &[u8; HEADER_LEN], body: &[u8]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.hello);
        ctx.update(header);
        ctx.update(body);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// Constant-time check of a hello MAC.
    pub fn verify_hello(&self, header: &[u8], body: &[u8], mac: &[u8; 32]) -> bool {
        let mut msg = [0u8; HEADER_LEN + 96];
        let n = header.len() + body.len();
        if n > msg.len() {
            return false;
        }
        msg[..header.len()].copy_from_slice(header);
        msg[header.len()..n].copy_from_slice(body);
        hmac::verify(&self.hello, &msg[..n], mac).is_ok()
    }

    /// The two directional keys of a tunnel, as (mine → peer, peer → mine).
    ///
    /// Returns `None` when the peer's public key is a low-order point (no shared secret).
    pub fn session_keys(
        &self,
        lan: u32,
        me: (u32, &StaticSecret, &[u8; 32]),
        peer: (u32, &[u8; 32]),
    ) -> Option<([u8; 32], [u8; 32])> {
        let (my_id, my_secret, my_pub) = me;
        let (peer_id, peer_pub) = peer;
        let shared = my_secret.diffie_hellman(&PublicKey::from(*peer_pub));
        if !shared.was_contributory() {
            return None;
        }
        let i_am_low = my_id < peer_id;
        let (lo, hi) = if i_am_low {
            ((my_id, my_pub), (peer_id, peer_pub))
        } else {
            ((peer_id, peer_pub), (my_id, my_pub))
        };
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &self.root_salt).extract(shared.as_bytes());
        let okm: [u8; 64] = expand(
            &prk,
            &[
                b"vmvpn/1 session",
                &lan.to_be_bytes(),
                &lo.0.to_be_bytes(),
                &hi.0.to_be_bytes(),
                lo.1,
                hi.1,
            ],
        );
        let mut lo_hi = [0u8; 32];
        let mut hi_lo = [0u8; 32];
        lo_hi.copy_from_slice(&okm[..32]);
        hi_lo.copy_from_slice(&okm[32..]);
        Some(if i_am_low {
            (lo_hi, hi_lo)
        } else {
            (hi_lo, lo_hi)
        })
    }

    /// The group key a sender uses for flooded frames during one run.
    pub fn group_key(&self, lan: u32, sender: u32, sender_pub: &[u8; 32]) -> [u8; 32] {
        expand(
            &self.root,
            &[
                b"vmvpn/1 group",
                &lan.to_be_bytes(),
                &sender.to_be_bytes(),
                sender_pub,
            ],
        )
    }
}

/// An AES-256-GCM key with a short fingerprint (for logs and the nonce-reuse tests), or
/// with `Cipher::None` a pass-through that leaves the bytes as they are and a zero tag.
pub struct SealKey {
    key: aead::LessSafeKey,
    fingerprint: u64,
    plain: bool,
}

fn nonce(seq: u64) -> aead::Nonce {
    let mut n = [0u8; aead::NONCE_LEN];
    n[4..].copy_from_slice(&seq.to_be_bytes());
    aead::Nonce::assume_unique_for_key(n)
}

impl SealKey {
    /// Wrap 32 key bytes.
    pub fn new(bytes: &[u8; 32]) -> Self {
        Self::with_cipher(bytes, Cipher::Aes256Gcm)
    }

    /// Wrap 32 key bytes for a cipher.
    pub fn with_cipher(bytes: &[u8; 32], cipher: Cipher) -> Self {
        let d = digest::digest(&digest::SHA256, bytes);
        let mut fp = [0u8; 8];
        fp.copy_from_slice(&d.as_ref()[..8]);
        // Invariant: AES_256_GCM takes exactly 32 key bytes, which the type guarantees.
        let unbound =
            aead::UnboundKey::new(&aead::AES_256_GCM, bytes).unwrap_or_else(|_| unreachable!());
        SealKey {
            key: aead::LessSafeKey::new(unbound),
            fingerprint: u64::from_be_bytes(fp),
            plain: cipher == Cipher::None,
        }
    }

    /// A non-secret identifier of this key.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Seal `buf[HEADER_LEN..HEADER_LEN + len]` in place under `seq`, with the header in
    /// `buf[..HEADER_LEN]` as associated data, and append the tag. Returns the datagram
    /// length. `buf` must have room for the tag.
    pub fn seal(&self, seq: u64, buf: &mut [u8], len: usize) -> Option<usize> {
        let total = HEADER_LEN + len + TAG_LEN;
        if buf.len() < total {
            return None;
        }
        if self.plain {
            buf[HEADER_LEN + len..total].fill(0);
            return Some(total);
        }
        let (hdr, rest) = buf.split_at_mut(HEADER_LEN);
        let (plain, tail) = rest.split_at_mut(len);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(seq), aead::Aad::from(&*hdr), plain)
            .ok()?;
        tail[..TAG_LEN].copy_from_slice(tag.as_ref());
        Some(total)
    }

    /// Seal a whole datagram in place whose header (with its sequence number) and frame
    /// were written but not sealed (`TapAction::Unsealed`): `d` is header, frame and room
    /// for the tag. Returns its length, or `None` if it is shorter than a header and tag.
    pub fn seal_datagram(&self, d: &mut [u8]) -> Option<usize> {
        let len = d.len().checked_sub(HEADER_LEN + TAG_LEN)?;
        let mut seq = [0u8; 8];
        seq.copy_from_slice(d.get(12..20)?);
        self.seal(u64::from_be_bytes(seq), d, len)
    }

    /// Open a sealed datagram in place. Returns the plaintext length (the plaintext then
    /// sits at `buf[HEADER_LEN..HEADER_LEN + n]`), or `None` if it does not authenticate.
    pub fn open(&self, seq: u64, buf: &mut [u8]) -> Option<usize> {
        if buf.len() < HEADER_LEN + TAG_LEN {
            return None;
        }
        if self.plain {
            // No authentication: the zero tag only tells a misconfigured sender apart.
            let n = buf.len() - HEADER_LEN - TAG_LEN;
            return buf[HEADER_LEN + n..].iter().all(|b| *b == 0).then_some(n);
        }
        let (hdr, rest) = buf.split_at_mut(HEADER_LEN);
        let plain = self
            .key
            .open_in_place(nonce(seq), aead::Aad::from(&*hdr), rest)
            .ok()?;
        Some(plain.len())
    }
}

/// A 32-bit id from a name, as SHA-256(domain ‖ name)[..4], never 0.
pub fn id_from_name(domain: &str, name: &str) -> u32 {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(domain.as_bytes());
    ctx.update(name.as_bytes());
    let d = ctx.finish();
    let b = d.as_ref();
    match u32::from_be_bytes([b[0], b[1], b[2], b[3]]) {
        0 => 1,
        v => v,
    }
}

/// The LAN id carried in every header.
pub fn lan_id(name: &str) -> u32 {
    id_from_name("vmvpn/1 lan id", name)
}

/// The default host id for a host name.
pub fn host_id(name: &str) -> u32 {
    id_from_name("vmvpn/1 host id", name)
}

/// The public key of an X25519 secret.
pub fn public_of(secret: &StaticSecret) -> [u8; 32] {
    PublicKey::from(secret).to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Header;

    fn keys(b: u8) -> LanKeys {
        LanKeys::new(&LanSecret([b; 32]))
    }

    #[test]
    fn both_ends_derive_mirrored_session_keys() {
        let lan = keys(1);
        let a = StaticSecret::from([3u8; 32]);
        let b = StaticSecret::from([4u8; 32]);
        let (ap, bp) = (public_of(&a), public_of(&b));
        let (a_tx, a_rx) = lan.session_keys(9, (10, &a, &ap), (20, &bp)).expect("dh");
        let (b_tx, b_rx) = lan.session_keys(9, (20, &b, &bp), (10, &ap)).expect("dh");
        assert_eq!(a_tx, b_rx);
        assert_eq!(a_rx, b_tx);
        assert_ne!(a_tx, a_rx, "each direction has its own key");
        // Another LAN id or another secret gives other keys.
        assert_ne!(
            lan.session_keys(8, (10, &a, &ap), (20, &bp)).expect("dh").0,
            a_tx
        );
        assert_ne!(
            keys(2)
                .session_keys(9, (10, &a, &ap), (20, &bp))
                .expect("dh")
                .0,
            a_tx
        );
    }

    #[test]
    fn low_order_public_key_is_refused() {
        let lan = keys(1);
        let a = StaticSecret::from([3u8; 32]);
        assert!(
            lan.session_keys(1, (1, &a, &public_of(&a)), (2, &[0u8; 32]))
                .is_none()
        );
    }

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let k = SealKey::new(&[7u8; 32]);
        let mut buf = [0u8; 128];
        let hdr = Header {
            kind: crate::proto::Kind::Data,
            flags: 0,
            lan: 1,
            sender: 2,
            seq: 5,
        };
        buf[..HEADER_LEN].copy_from_slice(&hdr.to_bytes());
        buf[HEADER_LEN..HEADER_LEN + 10].copy_from_slice(b"0123456789");
        let n = k.seal(5, &mut buf, 10).expect("seal");
        assert_eq!(n, HEADER_LEN + 10 + TAG_LEN);
        let mut copy = buf;
        assert_eq!(k.open(5, &mut copy[..n]), Some(10));
        assert_eq!(&copy[HEADER_LEN..HEADER_LEN + 10], b"0123456789");
        // Wrong nonce, tampered header, wrong key: all fail.
        let mut c = buf;
        assert_eq!(k.open(6, &mut c[..n]), None);
        let mut c = buf;
        c[4] ^= 1;
        assert_eq!(k.open(5, &mut c[..n]), None);
        let mut c = buf;
        assert_eq!(SealKey::new(&[8u8; 32]).open(5, &mut c[..n]), None);
        // Cipher none: bytes unchanged, zero tag, round trip.
        let k = SealKey::with_cipher(&[7u8; 32], Cipher::None);
        let mut p = vec![0u8; HEADER_LEN + 4 + TAG_LEN];
        p[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(b"abcd");
        let n = k.seal(9, &mut p, 4).expect("seal");
        assert_eq!(&p[HEADER_LEN..HEADER_LEN + 4], b"abcd");
        assert!(p[HEADER_LEN + 4..n].iter().all(|b| *b == 0));
        assert_eq!(k.open(9, &mut p[..n]), Some(4));
        // An AES-sealed datagram is not taken for plaintext.
        let aes = SealKey::new(&[7u8; 32]);
        let n = aes.seal(9, &mut p, 4).expect("seal");
        assert_eq!(k.open(9, &mut p[..n]), None);
    }

    #[test]
    fn hello_mac_verifies_only_with_the_same_secret() {
        let hdr = [1u8; HEADER_LEN];
        let body = [2u8; 96];
        let mac = keys(1).hello_mac(&hdr, &body);
        assert!(keys(1).verify_hello(&hdr, &body, &mac));
        assert!(!keys(2).verify_hello(&hdr, &body, &mac));
        let mut bad = body;
        bad[0] ^= 1;
        assert!(!keys(1).verify_hello(&hdr, &bad, &mac));
    }

    #[test]
    fn ids_are_stable_and_nonzero() {
        assert_eq!(lan_id("lan1"), lan_id("lan1"));
        assert_ne!(lan_id("lan1"), lan_id("lan2"));
        assert_ne!(host_id("h1"), 0);
        assert_ne!(host_id("lan1"), lan_id("lan1"), "domains are separated");
    }
}
