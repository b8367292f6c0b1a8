//! `[web]`: the dashboard's login, needed where `[host] web` is not a loopback address.

use super::*;

impl Config {
    /// The dashboard's credentials: none on loopback, `[web]`'s elsewhere (checked).
    pub fn web_credentials(&self) -> Option<bulletin::web::auth::Credentials> {
        let remote = self
            .host
            .web
            .as_ref()
            .is_some_and(|a| !a.get_ref().ip().is_loopback());
        let w = self.web.as_ref()?;
        remote
            .then(|| bulletin::web::auth::Credentials::load(w.get_ref()).ok())
            .flatten()
    }
}

impl Config {
    /// `[web]`: a password file that loads; a login where the dashboard is not on loopback.
    pub(super) fn check_web(&self, text: &str) -> Result<(), ConfigError> {
        if let Some(w) = &self.web {
            bulletin::web::auth::Credentials::load(w.get_ref())
                .map_err(|m| self.invalid(text, w.span(), "web.password_file".into(), m))?;
        }
        if let Some(a) = &self.host.web
            && !a.get_ref().ip().is_loopback()
            && self.web.is_none()
        {
            return Err(self.invalid(
                text,
                a.span(),
                "host.web".into(),
                format!(
                    "{} is not a loopback address: the dashboard there needs a login; add [web] \
                     with user and password_file, or listen on 127.0.0.1",
                    a.get_ref()
                ),
            ));
        }
        Ok(())
    }
}
