//! vmvpn: the host engine of a layer-2 overlay for virtual machines.
//!
//! The layers, from the top down. A module imports only from layers below its own (a
//! test in this file checks every `crate::` path), never from above.
//!
//! ```text
//!  cli/         the `vmvpn` binary: render, top, ping, daemon start-up, trim
//!  api/         control socket, /metrics, the host's dashboard
//!  membership/  bulletin client around a sans-IO reconciler; traffic reports
//!  export/      sFlow, IPFIX and Redis exporters beside the data plane
//!  libvirt/     VM names: virsh's domain XML, a MAC -> name map for the views
//!  io/          data-plane thread, TAP, netdev, UDP, GSO batches
//!  config/      the host config file, a file per section
//!  alarms/      rules, their evaluation and each alert's life (sans-IO)
//!  engine/      sans-IO core: data path, handshake, beacons, probes, timers, MACs, PMTU,
//!               where a peer is reached (reach.rs: candidates, NAT punching),
//!               and what is measured of the traffic beside them (measure.rs)
//!  proto/       wire format: header, hello, probe, beacon, fragments, ciphers, replay
//!  offload/     TSO split, GRO merge, checksums (pure byte work)
//!  aqm/         CoDel on the receive queue; which frame carries the signal (pure)
//!  status/      the typed status contract: pure data, read by every layer, with each
//!               type's Prometheus families beside its fields (metric.rs)
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
pub mod relay;
pub mod status;

#[cfg(test)]
mod layers {
    /// Each layer's rank, lowest first (layers of one rank do not import each other).
    const RANKS: [(&str, u8); 14] = [
        ("status", 0),
        ("proto", 1),
        ("aqm", 1),
        ("offload", 1),
        ("engine", 2),
        ("relay", 2),
        ("alarms", 3),
        ("config", 4),
        ("io", 5),
        ("membership", 6),
        ("libvirt", 6),
        ("export", 6),
        ("api", 7),
        ("cli", 8),
    ];

    /// Layers that hold rules only: no files, sockets, processes, threads or async
    /// runtimes outside their tests (the daemon's I/O layers do that around them).
    const SANS_IO: [&str; 7] = [
        "status", "proto", "aqm", "offload", "engine", "alarms", "relay",
    ];
    const IO_PATHS: [&str; 9] = [
        "std::fs",
        "std::net::UdpSocket",
        "std::net::TcpStream",
        "std::process",
        "std::thread",
        "tokio::",
        "hyper::",
        "mio::",
        "libc::",
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

    /// The modules a path after `crate::` names: one, or each of a `{a, b::c}` group.
    fn named(rest: &str) -> Vec<String> {
        let ident = |s: &str| -> String {
            s.trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        let Some(group) = rest.strip_prefix('{') else {
            return vec![ident(rest)];
        };
        // Split the group at its top-level commas.
        let (mut depth, mut start, mut out) = (0, 0, Vec::new());
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    out.push(ident(&group[start..i]));
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.push(ident(&group[start..i]));
                    start = i + 1;
                }
                _ => {}
            }
        }
        out.retain(|n| !n.is_empty());
        out
    }

    /// The layer a source file belongs to: its first path component under `src/`.
    fn layer_of(rel: &std::path::Path) -> String {
        let first = rel.components().next().expect("path");
        first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string()
    }

    /// Every `crate::`/`vmvpn::` path of every file, checked against the ranks: none goes
    /// up a layer or sideways to another layer of the same rank, and every module has a
    /// rank (a new one must be placed in the map, not slip past it).
    fn violations(src: &std::path::Path) -> (Vec<String>, usize) {
        let mut all = Vec::new();
        files(src, &mut all);
        let mut bad = Vec::new();
        for f in &all {
            let rel = f.strip_prefix(src).expect("under src");
            let own = layer_of(rel);
            if own == "lib" || own == "main" {
                continue;
            }
            let Some(mine) = rank(&own) else {
                bad.push(format!("{}: layer {own} is not in RANKS", rel.display()));
                continue;
            };
            let text = std::fs::read_to_string(f).expect("read");
            let in_tests = rel.components().any(|c| c.as_os_str() == "tests")
                || rel.file_name().is_some_and(|n| n == "tests.rs");
            for prefix in ["crate::", "vmvpn::"] {
                for (i, _) in text.match_indices(prefix) {
                    for name in named(&text[i + prefix.len()..]) {
                        // A simulation may compose sans-IO cores of any rank (the engine's
                        // hosts with the relay between them); never an I/O layer.
                        let composed = in_tests
                            && SANS_IO.contains(&own.as_str())
                            && SANS_IO.contains(&name.as_str());
                        match rank(&name) {
                            Some(theirs)
                                if !composed
                                    && (theirs > mine || (theirs == mine && name != own)) =>
                            {
                                bad.push(format!("{}: {own} imports {name}", rel.display()))
                            }
                            _ => {}
                        }
                    }
                }
            }
            if SANS_IO.contains(&own.as_str()) && !in_tests {
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                for io in IO_PATHS {
                    if code.contains(io) {
                        bad.push(format!("{}: sans-IO layer {own} uses {io}", rel.display()));
                    }
                }
            }
        }
        (bad, all.len())
    }

    #[test]
    fn no_import_runs_back_up_a_layer() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let (bad, files) = violations(&src);
        assert!(bad.is_empty(), "layer rule broken: {bad:#?}");
        assert!(files > 40, "found only {files} files");
    }

    #[test]
    fn the_layer_check_sees_groups_and_unplaced_modules() {
        assert_eq!(named("{io, engine::Engine}, x"), vec!["io", "engine"]);
        assert_eq!(named("{a::{b, c}, d}"), vec!["a", "d"]);
        assert_eq!(named("engine::Lan"), vec!["engine"]);
        let dir = std::env::temp_dir().join(format!("vmvpn-layers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (f, text) in [
            ("proto/a.rs", "use crate::{aqm::codel, status::X};"),
            (
                "engine/b.rs",
                "use crate::{status, io::udp};\nfn f() { std::fs::read(\"x\"); }",
            ),
            ("newthing/c.rs", "use crate::status;"),
        ] {
            let p = dir.join(f);
            std::fs::create_dir_all(p.parent().expect("dir")).expect("mkdir");
            std::fs::write(&p, text).expect("write");
        }
        let (mut bad, _) = violations(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        bad.sort();
        assert_eq!(
            bad,
            vec![
                "engine/b.rs: engine imports io",
                "engine/b.rs: sans-IO layer engine uses std::fs",
                "newthing/c.rs: layer newthing is not in RANKS",
                "proto/a.rs: proto imports aqm",
            ]
        );
    }
}
