//! `vmvpn ping`: probes through the tunnel to a peer, or to the peer behind a VM address.

use std::path::Path;

use anyhow::{Result, bail};
use vmvpn::api::control::{self, ControlRequest};
use vmvpn::status::PingAnswer;

use super::render;

/// Send `count` probes, print each answer and a summary; an error when none came back.
pub(crate) fn run(sock: &Path, target: &str, count: u32, interval: f64, json: bool) -> Result<()> {
    if !(0.01..=60.0).contains(&interval) {
        bail!("--interval must be between 0.01 and 60 seconds");
    }
    let mut rtts = Vec::new();
    for seq in 1..=count.max(1) {
        let v: PingAnswer = control::request(
            sock,
            &ControlRequest::Ping {
                target: target.to_string(),
            },
        )?;
        if json {
            let mut j = serde_json::to_value(&v)?;
            j["seq"] = seq.into();
            println!("{j}");
        } else {
            println!("{}", render::pong(&v, seq));
        }
        if let Some(us) = v.rtt_us {
            rtts.push(us);
        }
        if seq < count {
            std::thread::sleep(std::time::Duration::from_secs_f64(interval));
        }
    }
    if !json {
        let sent = count.max(1) as usize;
        let lost = sent - rtts.len();
        let (min, max) = rtts
            .iter()
            .fold((f64::MAX, 0.0f64), |(a, b), &x| (a.min(x), b.max(x)));
        let avg = rtts.iter().sum::<f64>() / rtts.len().max(1) as f64;
        println!(
            "{sent} probes, {} answered, {:.1}% lost{}",
            rtts.len(),
            lost as f64 * 100.0 / sent as f64,
            if rtts.is_empty() {
                String::new()
            } else {
                format!(
                    "; rtt min/avg/max = {:.3}/{:.3}/{:.3} ms",
                    min / 1000.0,
                    avg / 1000.0,
                    max / 1000.0
                )
            }
        );
    }
    if rtts.is_empty() {
        bail!("no answer from {target}");
    }
    Ok(())
}
