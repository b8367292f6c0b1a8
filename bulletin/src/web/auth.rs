//! Who may look: on a loopback listener anyone local (the machine's users already see
//! everything there); on any other address only who sends the password of `[web]`, as
//! HTTP Basic (a browser asks for it in its own login dialog) or as a bearer token
//! (scripts), and only over HTTPS, so it never crosses the network in clear.

use std::path::{Path, PathBuf};

use ring::digest;
use serde::Deserialize;

/// `[web]` in bulletin.toml or a host's config.
///
/// ```toml
/// [web]
/// user = "admin"                             # the name the browser asks for (default)
/// password_file = "/etc/vmvpn/web.password"  # its first line is the password
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// User name of Basic authentication (default `admin`).
    #[serde(default = "default_user")]
    pub user: String,
    /// File whose first line is the password (or bearer token).
    pub password_file: PathBuf,
}

fn default_user() -> String {
    "admin".into()
}

/// Shortest password accepted: a dashboard on the network deserves more than a PIN.
pub const MIN_PASSWORD: usize = 12;

/// The credentials a non-loopback listener asks for.
#[derive(Clone)]
pub struct Credentials {
    user: String,
    /// SHA-256 of the password: compared digest to digest, so the time a comparison takes
    /// says nothing about how much of a guess was right.
    password: [u8; 32],
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials {{ user: {:?}, password: … }}", self.user)
    }
}

impl Credentials {
    /// From a user and a password.
    pub fn new(user: &str, password: &str) -> Result<Self, String> {
        if password.chars().count() < MIN_PASSWORD {
            return Err(format!(
                "the dashboard password must have at least {MIN_PASSWORD} characters"
            ));
        }
        if user.is_empty() || user.contains(':') {
            return Err("the dashboard user must be non-empty and have no `:`".into());
        }
        Ok(Credentials {
            user: user.to_string(),
            password: sha256(password.as_bytes()),
        })
    }

    /// Read `[web]`'s password file.
    pub fn load(cfg: &WebConfig) -> Result<Self, String> {
        Self::from_file(&cfg.user, &cfg.password_file)
    }

    fn from_file(user: &str, path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read the dashboard password file {}: {e}",
                path.display()
            )
        })?;
        let password = text.lines().next().unwrap_or("").trim();
        Self::new(user, password).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Does this `Authorization` header value carry the password?
    pub fn admits(&self, authorization: Option<&str>) -> bool {
        let Some(v) = authorization else {
            return false;
        };
        let (scheme, rest) = v.trim().split_once(' ').unwrap_or((v, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return same(&sha256(rest.as_bytes()), &self.password);
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        use base64::Engine as _;
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(rest) else {
            return false;
        };
        let Ok(text) = String::from_utf8(raw) else {
            return false;
        };
        let Some((user, password)) = text.split_once(':') else {
            return false;
        };
        // Both compared, always, so a wrong user takes as long as a wrong password.
        let p = same(&sha256(password.as_bytes()), &self.password);
        let u = same(&sha256(user.as_bytes()), &sha256(self.user.as_bytes()));
        p & u
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, b).as_ref());
    out
}

/// Equal, looking at every byte whatever the first difference.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn basic(s: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    }

    #[test]
    fn basic_and_bearer_with_the_password_only() {
        let c = Credentials::new("admin", "correct horse battery").expect("ok");
        assert!(c.admits(Some(&basic("admin:correct horse battery"))));
        assert!(c.admits(Some("Bearer correct horse battery")));
        assert!(c.admits(Some("bearer   correct horse battery")));
        for bad in [
            None,
            Some(""),
            Some("Basic"),
            Some("Basic !!!"),
            Some(basic("admin:wrong")).as_deref(),
            Some(basic("root:correct horse battery")).as_deref(),
            Some(basic("admin")).as_deref(),
            Some("Bearer wrong"),
            Some("Digest correct horse battery"),
        ] {
            assert!(!c.admits(bad), "{bad:?}");
        }
        assert!(!format!("{c:?}").contains("horse"));
    }

    #[test]
    fn short_passwords_and_unreadable_files_are_refused_with_the_reason() {
        assert!(
            Credentials::new("admin", "short")
                .expect_err("short")
                .contains("at least 12")
        );
        assert!(Credentials::new("a:b", "long enough password").is_err());
        let e = Credentials::load(&WebConfig {
            user: "admin".into(),
            password_file: "/nonexistent/web.password".into(),
        })
        .expect_err("missing");
        assert!(e.contains("/nonexistent/web.password"), "{e}");
        let dir = std::env::temp_dir().join(format!("vmvpn-web-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("pw");
        std::fs::write(&f, "a long enough password\nignored\n").expect("write");
        let c = Credentials::load(&WebConfig {
            user: "ops".into(),
            password_file: f,
        })
        .expect("loads");
        assert!(c.admits(Some(&basic("ops:a long enough password"))));
        let _ = std::fs::remove_dir_all(dir);
    }
}
