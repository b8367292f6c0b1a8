//! `[libvirt]`: where VM names come from.

use serde::Deserialize;
use toml::Spanned;

use super::*;

/// `[libvirt]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibvirtConfig {
    /// A libvirt connection URI: `qemu:///system`, `test:///default`, any libvirt takes.
    pub uri: Spanned<String>,
    /// Seconds between reads of the domains (default 30).
    #[serde(default = "default_libvirt_refresh")]
    pub refresh_s: Spanned<u64>,
    /// The `virsh` program (default: `virsh` on PATH).
    #[serde(default = "default_virsh")]
    pub virsh: String,
}

fn default_libvirt_refresh() -> Spanned<u64> {
    unspanned(30)
}
fn default_virsh() -> String {
    "virsh".into()
}

impl Config {
    /// `[libvirt]`: a URI that looks like one, a refresh in range.
    pub(super) fn check_libvirt(&self, text: &str) -> Result<(), ConfigError> {
        use super::limits::LIBVIRT_REFRESH_S;
        let Some(l) = &self.libvirt else {
            return Ok(());
        };
        let uri = l.uri.get_ref();
        if !uri.contains(":/") || uri.chars().any(char::is_whitespace) {
            return Err(self.invalid(
                text,
                l.uri.span(),
                "libvirt.uri".into(),
                format!(
                    "{}: expected a libvirt URI such as qemu:///system or test:///default",
                    common::config::clip_value(uri, 80)
                ),
            ));
        }
        self.in_range(
            text,
            &l.refresh_s,
            "libvirt.refresh_s".into(),
            LIBVIRT_REFRESH_S,
        )
    }
}
