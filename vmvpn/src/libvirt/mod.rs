//! VM names from libvirt (read on the host, without agents in the VMs): which domain owns
//! each MAC, so views say `web1`, not `52:54:00:…`. `domain` reads one domain's XML
//! (pure); `stats` reads `virsh domstats` (state, CPU, memory, disks; pure); `inventory`
//! asks `virsh` for every domain's XML and figures, now and then and on each domain
//! event (`events`), and keeps the map that the control socket joins onto its VM rows. Nothing here touches the data path.
//!
//! `virsh` rather than the `virt` crate: it needs no C library at build time (the crate
//! binds libvirt's, is LGPL, and its current version pins an old libc), and it speaks
//! every URI libvirt does, `test:///` included.

pub mod domain;
pub mod events;
pub mod inventory;
pub mod stats;

/// Why libvirt could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LibvirtError {
    /// `virsh` could not be started.
    #[error("cannot run {virsh}: {cause} (install libvirt-clients, or set [libvirt] virsh)")]
    Spawn {
        /// The program.
        virsh: String,
        /// Why.
        cause: std::io::Error,
    },
    /// `virsh` ran and failed.
    #[error("virsh {what} failed: {message}")]
    Virsh {
        /// The command, as `-c URI list`.
        what: String,
        /// Its error output, first lines.
        message: String,
    },
    /// `virsh` took longer than the timeout.
    #[error("virsh {what} gave no answer within {secs} s")]
    Timeout {
        /// The command.
        what: String,
        /// The timeout.
        secs: u64,
    },
    /// A domain's XML could not be read.
    #[error("domain XML: {0}")]
    Xml(String),
}
