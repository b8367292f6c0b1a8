//! `bulletin.toml`: which LANs the bulletin serves, and its lease terms.
//!
//! ```toml
//! lease_ttl_s = 30      # a host silent this long is removed (default 30)
//! heartbeat_s = 10      # hosts heartbeat this often (default 10)
//!
//! [[lan]]
//! name = "lan1"
//! verifier = "…"        # from `vmvpn verifier --secret-file lan1.key`
//! # or: secret_file = "/etc/vmvpn/lan1.key", reduced to the verifier when loaded
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use crate::proof::Verifier;

/// Why the bulletin's config cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// Unreadable file.
    #[error("cannot read {path}: {cause}")]
    Read {
        /// File.
        path: PathBuf,
        /// OS error.
        cause: std::io::Error,
    },
    /// Syntax or shape (toml's message carries line and column).
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Message.
        message: String,
    },
    /// A value that cannot be used.
    #[error("{path}:{line}: `{key}`: {message}")]
    Invalid {
        /// File.
        path: PathBuf,
        /// Line.
        line: usize,
        /// Key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default = "default_ttl")]
    lease_ttl_s: Spanned<u64>,
    #[serde(default = "default_hb")]
    heartbeat_s: Spanned<u64>,
    #[serde(default, rename = "lan")]
    lans: Vec<RawLan>,
}

fn default_ttl() -> Spanned<u64> {
    Spanned::new(0..0, 30)
}
fn default_hb() -> Spanned<u64> {
    Spanned::new(0..0, 10)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLan {
    name: Spanned<String>,
    verifier: Option<Spanned<String>>,
    secret_file: Option<Spanned<PathBuf>>,
}

/// The loaded config.
#[derive(Debug)]
pub struct BulletinConfig {
    /// LAN name → verifier.
    pub lans: HashMap<String, Verifier>,
    /// Lease length.
    pub lease_ttl: Duration,
    /// Heartbeat interval asked of hosts.
    pub heartbeat: Duration,
}

impl Default for BulletinConfig {
    fn default() -> Self {
        BulletinConfig {
            lans: HashMap::new(),
            lease_ttl: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
        }
    }
}

impl BulletinConfig {
    /// Read and check a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.into(),
            cause,
        })?;
        Self::parse(&text, path)
    }

    /// Parse config text.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: Raw = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        let invalid =
            |span: std::ops::Range<usize>, key: String, message: String| ConfigError::Invalid {
                path: path.into(),
                line: text[..span.start.min(text.len())].matches('\n').count() + 1,
                key,
                message,
            };
        let (ttl, hb) = (*raw.lease_ttl_s.get_ref(), *raw.heartbeat_s.get_ref());
        if hb == 0 || ttl < 2 * hb {
            return Err(invalid(
                raw.lease_ttl_s.span(),
                "lease_ttl_s".into(),
                format!(
                    "{ttl} s must be at least twice heartbeat_s ({hb} s), so one lost heartbeat does not drop a host"
                ),
            ));
        }
        let mut lans = HashMap::new();
        for (i, l) in raw.lans.iter().enumerate() {
            let name = l.name.get_ref().clone();
            let verifier = match (&l.verifier, &l.secret_file) {
                (Some(v), None) => Verifier::from_base64(v.get_ref())
                    .map_err(|m| invalid(v.span(), format!("lan[{i}].verifier"), m))?,
                (None, Some(f)) => {
                    let t = std::fs::read_to_string(f.get_ref()).map_err(|e| {
                        invalid(
                            f.span(),
                            format!("lan[{i}].secret_file"),
                            format!("cannot read {}: {e}", f.get_ref().display()),
                        )
                    })?;
                    let secret = crate::proof::parse_secret(&t)
                        .map_err(|m| invalid(f.span(), format!("lan[{i}].secret_file"), m))?;
                    Verifier::from_secret(&secret)
                }
                _ => {
                    return Err(invalid(
                        l.name.span(),
                        format!("lan[{i}]"),
                        "give exactly one of `verifier` (preferred: the bulletin then cannot open frames) or `secret_file`".into(),
                    ));
                }
            };
            if lans.insert(name.clone(), verifier).is_some() {
                return Err(invalid(
                    l.name.span(),
                    format!("lan[{i}].name"),
                    format!("LAN {name:?} is listed twice"),
                ));
            }
        }
        Ok(BulletinConfig {
            lans,
            lease_ttl: Duration::from_secs(ttl),
            heartbeat: Duration::from_secs(hb),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(t: &str) -> String {
        BulletinConfig::parse(t, Path::new("b.toml"))
            .expect_err("must fail")
            .to_string()
    }

    #[test]
    fn parses_verifiers_and_terms() {
        let v = Verifier::from_secret(&[1; 32]).to_base64();
        let c = BulletinConfig::parse(
            &format!(
                "lease_ttl_s = 6\nheartbeat_s = 2\n[[lan]]\nname = \"lan1\"\nverifier = \"{v}\"\n"
            ),
            Path::new("b.toml"),
        )
        .expect("ok");
        assert_eq!(c.lease_ttl, Duration::from_secs(6));
        assert_eq!(c.lans["lan1"], Verifier::from_secret(&[1; 32]));
    }

    #[test]
    fn errors_name_the_line_and_key() {
        assert!(err("[[lan]]\nname = \"x\"\n").contains("b.toml:2: `lan[0]`"));
        assert!(
            err("[[lan]]\nname = \"x\"\nverifier = \"nope\"\n")
                .contains("b.toml:3: `lan[0].verifier`")
        );
        assert!(err("lease_ttl_s = 5\n").contains("twice heartbeat_s"));
        assert!(
            err("[[lan]]\nname = \"x\"\nsecret_file = \"/nonexistent/k\"\n")
                .contains("cannot read /nonexistent/k")
        );
        assert!(err("bogus = 1\n").contains("unknown field `bogus`"));
    }
}
