//! `[alarms]` and `[alarms.email]`: where alerts go, and the TLS roots for them.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, de};
use toml::Spanned;

use super::*;

/// `[alarms]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmsConfig {
    /// A rules file (README, "Alarms"); without it the default rules apply. Reloaded on
    /// SIGHUP; a file with an error is refused and the running rules stay.
    pub rules: Option<PathBuf>,
    /// Alertmanager API base URLs (`http://10.0.0.5:9093`, or `https://`): alerts are
    /// pushed to `/api/v2/alerts` as Prometheus does.
    #[serde(default)]
    pub alertmanager: Vec<HttpUrl>,
    /// Webhook URLs: Alertmanager's webhook JSON (version 4) is POSTed to each.
    #[serde(default)]
    pub webhook: Vec<HttpUrl>,
    /// A program run for each notification, with the webhook JSON on stdin.
    pub exec: Option<PathBuf>,
    /// A CA certificate (PEM) trusted for `https://` Alertmanager and webhook URLs, for an
    /// internal CA; the public roots are trusted either way.
    pub ca_file: Option<Spanned<PathBuf>>,
    /// `[alarms.email]`: one email per notification.
    pub email: Option<EmailConfig>,
}

/// `[alarms.email]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server, `HOST:PORT` (STARTTLS is used where it offers it).
    pub smtp: SmtpServer,
    /// The sender, `vmvpn@example.org` or `vmvpn <vmvpn@example.org>`.
    pub from: MailAddress,
    /// The recipients (at least one).
    #[serde(deserialize_with = "recipients")]
    pub to: Vec<MailAddress>,
    /// A CA certificate (PEM) to check the server's STARTTLS certificate against, for an
    /// internal CA; without it, the public roots.
    pub ca_file: Option<PathBuf>,
}

/// `HOST:PORT`, checked while parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpServer(pub String, pub u16);

impl<'de> Deserialize<'de> for SmtpServer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let bad = || de::Error::custom(format!("`{s}`: expected HOST:PORT, e.g. \"10.0.0.7:25\""));
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok(SmtpServer(host.to_string(), port))
    }
}

/// An email address, checked while parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailAddress(pub String);

impl<'de> Deserialize<'de> for MailAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<lettre::message::Mailbox>()
            .map_err(|e| de::Error::custom(format!("`{s}` is not an email address: {e}")))?;
        Ok(MailAddress(s))
    }
}

/// The certificates of a PEM file (`[alarms] ca_file`): at least one, or why not.
pub fn load_ca_file(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate in it (expected PEM, -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// `to` of `[alarms.email]`: an empty list would send every mail to nobody, silently.
fn recipients<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<MailAddress>, D::Error> {
    let to = Vec::<MailAddress>::deserialize(d)?;
    if to.is_empty() {
        return Err(de::Error::custom(
            "no recipient: give at least one address, e.g. to = [\"ops@example.org\"], or remove [alarms.email]",
        ));
    }
    Ok(to)
}

/// An `http://` or `https://` URL, checked while parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(pub hyper::Uri);

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let u: hyper::Uri = s
            .parse()
            .map_err(|e| de::Error::custom(format!("`{s}` is not a URL: {e}")))?;
        if !matches!(u.scheme_str(), Some("http" | "https")) || u.host().is_none() {
            return Err(de::Error::custom(format!(
                "`{s}`: expected http://HOST:PORT[/path] or https://HOST:PORT[/path]"
            )));
        }
        Ok(HttpUrl(u))
    }
}

/// Where notifications go.
#[derive(Debug, Clone, Default)]
pub struct Receivers {
    /// Alertmanager base URLs (`http://host:9093`).
    pub alertmanager: Vec<hyper::Uri>,
    /// Webhook URLs.
    pub webhook: Vec<hyper::Uri>,
    /// A program that gets each message as JSON on stdin.
    pub exec: Option<PathBuf>,
    /// A CA (PEM) trusted for `https://` receivers besides the public roots.
    pub ca_file: Option<PathBuf>,
    /// Email over SMTP.
    pub email: Option<Email>,
}

/// Where alarm email goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// The SMTP server's host name or address.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The sender address.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
    /// A CA (PEM) for the server's certificate instead of the public roots.
    pub ca_file: Option<PathBuf>,
}

impl Receivers {
    /// Whether there is anywhere to send.
    pub fn any(&self) -> bool {
        !self.alertmanager.is_empty()
            || !self.webhook.is_empty()
            || self.exec.is_some()
            || self.email.is_some()
    }
}

impl AlarmsConfig {
    /// Where notifications go.
    pub fn receivers(&self) -> Receivers {
        Receivers {
            alertmanager: self.alertmanager.iter().map(|u| u.0.clone()).collect(),
            webhook: self.webhook.iter().map(|u| u.0.clone()).collect(),
            exec: self.exec.clone(),
            ca_file: self.ca_file.as_ref().map(|p| p.get_ref().clone()),
            email: self.email.as_ref().map(|e| Email {
                host: e.smtp.0.clone(),
                port: e.smtp.1,
                from: e.from.0.clone(),
                to: e.to.iter().map(|t| t.0.clone()).collect(),
                ca_file: e.ca_file.clone(),
            }),
        }
    }

    /// The rules: the file's, or the default ones.
    pub fn load(&self) -> Result<Vec<crate::alarms::rules::Rule>, ConfigError> {
        match &self.rules {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|cause| ConfigError::Read {
                    path: p.clone(),
                    cause,
                })?;
                crate::alarms::rules::parse(&text, p)
            }
            None => Ok(crate::alarms::rules::defaults()),
        }
    }
}

impl Config {
    /// `[alarms]`: a CA file that holds certificates.
    pub(super) fn check_alarms(&self, text: &str) -> Result<(), ConfigError> {
        if let Some(ca) = &self.alarms.ca_file {
            load_ca_file(ca.get_ref())
                .map_err(|m| self.invalid(text, ca.span(), "alarms.ca_file".into(), m))?;
        }
        Ok(())
    }
}
