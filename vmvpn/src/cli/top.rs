//! `vmvpn top`: tunnels, local VM ports and flows, busiest first, refreshed in place.

use std::path::Path;

use anyhow::{Result, bail};
use vmvpn::api::control::{self, ControlRequest};
use vmvpn::status::{AlertView, LanTraffic, Status};

use super::render;

/// Refresh every `interval` seconds until interrupted (or once).
pub(crate) fn run(sock: &Path, interval: f64, rows: usize, once: bool) -> Result<()> {
    if !(0.1..=3600.0).contains(&interval) {
        bail!("--interval must be between 0.1 and 3600 seconds");
    }
    loop {
        let st: Status = control::request(sock, &ControlRequest::Status)?;
        let tr: Vec<LanTraffic> = control::request(
            sock,
            &ControlRequest::Traffic {
                lan: None,
                top: Some(rows),
            },
        )?;
        let mut screen = render::top(&st, &tr, rows);
        if let Ok(a) = control::request::<Vec<AlertView>>(sock, &ControlRequest::Alerts) {
            screen += "\n";
            screen += &render::alert_line(&a);
        }
        if once {
            print!("{screen}");
            return Ok(());
        }
        // Home and clear, then the screen: refreshes in place like top(1).
        print!("\x1b[H\x1b[2J{screen}");
        std::io::Write::flush(&mut std::io::stdout())?;
        std::thread::sleep(std::time::Duration::from_secs_f64(interval));
    }
}
