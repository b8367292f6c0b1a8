//! vmvpn: the host engine of a layer-2 overlay for virtual machines.
//!
//! The layers, from the top down. A module imports only from layers below its own (a
//! test in this file checks every `crate::` path), never from above.
//!
//! ```text
//!  cli/         the `vmvpn` binary: render, top, ping, daemon start-up
//!  api/         control socket, /metrics, the host's dashboard
//!  membership/  bulletin client around a sans-IO reconciler; traffic reports
//!  export/      sFlow, IPFIX and Redis exporters beside the data plane
//!  libvirt/     VM names: virsh's domain XML, a MAC -> name map for the views
//!  io/          data-plane thread, TAP, netdev, UDP, GSO batches
//!  config/      the host config file, a file per section
//!  alarms/      rules, their evaluation and each alert's life (sans-IO)
//!  engine/      sans-IO core: data path, handshake, beacons, probes, timers, MACs, PMTU
//!  proto/       wire format: header, hello, probe, beacon, fragments, ciphers, replay
//!  offload/     TSO split, GRO merge, checksums (pure byte work)
//!  aqm/         CoDel on the receive queue; which frame carries the signal (pure)
//!  status       the typed status contract: pure data, read by every layer
//! ```
//!
//! `engine/`, `proto/`, `offload/` and `membership::reconciler` hold every rule and are
//! tested without root or sockets; `io/` does the syscalls around them.

pub mod alarms;
pub mod api;
pub mod aqm;
pub mod config;
pub mod engine;
pub mod export;
pub mod io;
pub mod libvirt;
pub mod membership;
pub mod offload;
pub mod proto;
pub mod status;

#[cfg(test)]
mod layers {
    /// Each layer's rank, lowest first (layers of one rank do not import each other).
    const RANKS: [(&str, u8); 13] = [
        ("status", 0),
        ("proto", 1),
        ("aqm", 1),
        ("offload", 1),
        ("engine", 2),
        ("alarms", 3),
        ("config", 4),
        ("io", 5),
        ("membership", 6),
        ("libvirt", 6),
        ("export", 6),
        ("api", 7),
        ("cli", 8),
    ];

    fn rank(layer: &str) -> Option<u8> {
        RANKS.iter().find(|(n, _)| *n == layer).map(|(_, r)| *r)
    }

    fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).expect("source dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    #[test]
    fn no_import_runs_back_up_a_layer() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut all = Vec::new();
        files(&src, &mut all);
        let mut bad = Vec::new();
        for f in &all {
            let rel = f.strip_prefix(&src).expect("under src");
            let first = rel.components().next().expect("path");
            let own = first
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            let Some(mine) = rank(&own) else { continue };
            let text = std::fs::read_to_string(f).expect("read");
            for prefix in ["crate::", "vmvpn::"] {
                for (i, _) in text.match_indices(prefix) {
                    let rest = &text[i + prefix.len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if let Some(theirs) = rank(&name)
                        && theirs > mine
                    {
                        bad.push(format!("{}: {own} imports {name}", rel.display()));
                    }
                }
            }
        }
        assert!(bad.is_empty(), "imports up a layer: {bad:#?}");
        assert!(all.len() > 40, "found only {} files", all.len());
    }
}
