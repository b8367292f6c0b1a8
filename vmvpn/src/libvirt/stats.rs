//! Domain figures beside the network ones: `virsh domstats --raw --state --cpu-total
//! --balloon --block`, one call for every domain, read with the names. Two readings make
//! rates (CPU time per second, block bytes per second). A driver that gives fewer figures
//! (libvirt's `test:///` gives only the state) leaves the others null.

use std::collections::HashMap;
use std::time::Instant;

use telemetry::vms::DomainFigures;

/// One domain's counters at one reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// `state.state` (libvirt's virDomainState).
    pub state: Option<u32>,
    /// `cpu.time`: nanoseconds of CPU, all vCPUs.
    pub cpu_time_ns: Option<u64>,
    /// `balloon.current`: KiB the guest has.
    pub memory_kib: Option<u64>,
    /// Sum of `block.N.rd.bytes`.
    pub block_rd_bytes: Option<u64>,
    /// Sum of `block.N.wr.bytes`.
    pub block_wr_bytes: Option<u64>,
}

/// The arguments after `virsh -c URI`.
pub const ARGS: [&str; 6] = [
    "domstats",
    "--raw",
    "--state",
    "--cpu-total",
    "--balloon",
    "--block",
];

/// Each domain's sample, by name. Lines it does not know are skipped; a value that is not
/// a number leaves that figure null.
pub fn parse(text: &str) -> HashMap<String, Sample> {
    let mut out = HashMap::new();
    let mut current: Option<(String, Sample)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Domain:") {
            if let Some((n, s)) = current.take() {
                out.insert(n, s);
            }
            let name = rest.trim().trim_matches(|c| c == '\'' || c == '"');
            current = Some((name.to_string(), Sample::default()));
            continue;
        }
        let (Some((_, s)), Some((key, value))) = (current.as_mut(), line.trim().split_once('='))
        else {
            continue;
        };
        let Ok(v) = value.trim().parse::<u64>() else {
            continue;
        };
        let add = |slot: &mut Option<u64>| *slot = Some(slot.unwrap_or(0).saturating_add(v));
        match key.split('.').collect::<Vec<_>>().as_slice() {
            ["state", "state"] => s.state = u32::try_from(v).ok(),
            ["cpu", "time"] => s.cpu_time_ns = Some(v),
            ["balloon", "current"] => s.memory_kib = Some(v),
            ["block", _, "rd", "bytes"] => add(&mut s.block_rd_bytes),
            ["block", _, "wr", "bytes"] => add(&mut s.block_wr_bytes),
            _ => {}
        }
    }
    if let Some((n, s)) = current {
        out.insert(n, s);
    }
    out
}

/// libvirt's name of a domain state.
pub fn state_name(state: u32) -> &'static str {
    match state {
        1 => "running",
        2 => "blocked",
        3 => "paused",
        4 => "shutdown",
        5 => "shut off",
        6 => "crashed",
        7 => "suspended",
        _ => "no state",
    }
}

/// The figures of `now` (read at `at`), with rates against the reading before, when
/// there is one of the same domain.
pub fn figures(now: &Sample, at: Instant, before: Option<&(Sample, Instant)>) -> DomainFigures {
    let per_s = |a: Option<u64>, b: Option<u64>, dt: f64| match (a, b) {
        (Some(a), Some(b)) if a >= b && dt > 0.0 => Some((a - b) as f64 / dt),
        _ => None,
    };
    let (mut cpu, mut rd, mut wr) = (None, None, None);
    if let Some((b, t)) = before {
        let dt = at.saturating_duration_since(*t).as_secs_f64();
        cpu = per_s(now.cpu_time_ns, b.cpu_time_ns, dt).map(|ns| ns / 1e9);
        rd = per_s(now.block_rd_bytes, b.block_rd_bytes, dt);
        wr = per_s(now.block_wr_bytes, b.block_wr_bytes, dt);
    }
    DomainFigures {
        state: now.state.map(|s| state_name(s).to_string()),
        cpu_cores: cpu,
        memory_bytes: now.memory_kib.map(|k| k.saturating_mul(1024)),
        block_read_bps: rd,
        block_write_bps: wr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// As a QEMU host's virsh prints it (trimmed).
    const QEMU: &str = "Domain: 'web1'\n  state.state=1\n  state.reason=1\n  cpu.time=2000000000\n  cpu.user=1500000000\n  balloon.current=1048576\n  balloon.maximum=2097152\n  block.count=2\n  block.0.name=vda\n  block.0.rd.bytes=1000\n  block.0.wr.bytes=500\n  block.1.name=vdb\n  block.1.rd.bytes=24\n  block.1.wr.bytes=12\n\nDomain: 'db1'\n  state.state=5\n  state.reason=0\n";

    #[test]
    fn qemus_output_sums_the_disks_and_a_second_reading_gives_rates() {
        let s = parse(QEMU);
        assert_eq!(s.len(), 2);
        let web = s.get("web1").copied().unwrap_or_default();
        assert_eq!(
            web,
            Sample {
                state: Some(1),
                cpu_time_ns: Some(2_000_000_000),
                memory_kib: Some(1_048_576),
                block_rd_bytes: Some(1024),
                block_wr_bytes: Some(512),
            }
        );
        let t0 = Instant::now();
        let first = figures(&web, t0, None);
        assert_eq!(first.state.as_deref(), Some("running"));
        assert_eq!(first.memory_bytes, Some(1 << 30));
        assert_eq!(first.cpu_cores, None, "no rate from one reading");
        let later = Sample {
            cpu_time_ns: Some(3_000_000_000),
            block_rd_bytes: Some(1024 + 4096),
            ..web
        };
        let f = figures(&later, t0 + Duration::from_secs(2), Some(&(web, t0)));
        assert_eq!(f.cpu_cores, Some(0.5));
        assert_eq!(f.block_read_bps, Some(2048.0));
        assert_eq!(f.block_write_bps, Some(0.0));
        let db = s.get("db1").copied().unwrap_or_default();
        assert_eq!(figures(&db, t0, None).state.as_deref(), Some("shut off"));
    }

    #[test]
    fn the_test_driver_gives_a_state_only_and_garbage_is_skipped() {
        let s = parse("Domain: 'web1'\n  state.state=1\n  state.reason=0\n");
        let f = figures(&s["web1"], Instant::now(), None);
        assert_eq!(f.state.as_deref(), Some("running"));
        assert_eq!((f.memory_bytes, f.cpu_cores), (None, None));
        let g =
            parse("junk\n  cpu.time=5\nDomain: 'x'\n  cpu.time=abc\n  =\n  block.0.rd.bytes=\n");
        assert_eq!(g.len(), 1);
        assert_eq!(g["x"], Sample::default());
        // A counter that went back (a domain restarted) gives no rate, not a huge one.
        let a = Sample {
            cpu_time_ns: Some(10),
            ..Sample::default()
        };
        let b = Sample {
            cpu_time_ns: Some(5),
            ..Sample::default()
        };
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(figures(&b, t1, Some(&(a, t0))).cpu_cores, None);
    }
}
