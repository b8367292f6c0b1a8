//! Domain events: `virsh -c URI event --all --loop` runs beside the periodic refresh and
//! each line it prints (a domain defined, started, stopped, undefined, a device added)
//! asks the inventory for a refresh, so a new VM is named within a second rather than at
//! the next `refresh_s`. A driver without events (the `test:///` driver, an old libvirt)
//! or a `virsh` that exits leaves the periodic refresh to do the work; the listener
//! starts again after `refresh_s`.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{Notify, watch};
use tracing::debug;

use super::inventory::Reader;

/// Listen for domain events on `reader`'s URI until `stop`; each one wakes `refresh`.
pub async fn listen(
    reader: Reader,
    retry: Duration,
    refresh: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let mut cmd = tokio::process::Command::new(&reader.virsh);
        cmd.arg("-q")
            .arg("-c")
            .arg(&reader.uri)
            .args(["event", "--all", "--loop"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        // SAFETY: prctl(2) is async-signal-safe and touches nothing of the parent's. A
        // daemon killed outright cannot kill the listener, which would wait forever: the
        // kernel does it when the thread that started it dies.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn();
        match child {
            Err(e) => {
                debug!(error = %e, "libvirt: cannot start virsh event; refreshing periodically")
            }
            Ok(mut child) => {
                if let Some(out) = child.stdout.take() {
                    let mut lines = BufReader::new(out).lines();
                    loop {
                        tokio::select! {
                            line = lines.next_line() => match line {
                                Ok(Some(l)) if !l.trim().is_empty() => {
                                    debug!(event = %l.trim(), "libvirt: domain event");
                                    refresh.notify_one();
                                }
                                Ok(Some(_)) => {}
                                // Exited or failed: no events from this driver for now.
                                _ => break,
                            },
                            _ = stop.changed() => return,
                        }
                    }
                }
                let _ = child.kill().await;
                debug!(uri = %reader.uri, "libvirt: virsh event ended; refreshing periodically");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = stop.changed() => return,
        }
    }
}
