//! The 10-minute churn soak (the hour runs outside CI: `bash scripts/soak.sh --churn 60`):
//! two stable hosts ping each other 20 times a second while four others leave, crash and
//! rejoin every 3 s through a bulletin. No ping of the stable pair is lost, and what the
//! stable daemons and the bulletin hold from the allocator does not trend up once settled
//! (a leak of a few hundred bytes per churn event would show as several percent here).

use vmvpn_tests::soak::{WATCHED, churn_soak, heap_log_env};

/// Minutes of churn.
const MINUTES: u64 = 10;
/// From this minute on the processes have settled (slots and connection state at size).
const SETTLED: u64 = 2;

#[test]
fn ten_minutes_of_churn_lose_no_ping_and_leak_nothing() {
    vmvpn_tests::require_root();
    heap_log_env();
    let soak = churn_soak(MINUTES);
    eprintln!("stable pair: {}", soak.ping);
    assert!(!soak.lost, "the stable pair lost pings: {}", soak.ping);
    assert!(
        soak.leaves >= 40 && soak.crashes >= 40 && soak.joins >= 80,
        "the churn ran: {} leaves, {} crashes, {} joins",
        soak.leaves,
        soak.crashes,
        soak.joins
    );
    for d in soak.drift(SETTLED) {
        eprintln!("{d:?}");
        let growth = d
            .heap_growth_pct
            .unwrap_or_else(|| panic!("{}: no heap line in its log", d.process));
        // The heap moves by about ±3 % between samples (buffers in flight); a trend of
        // more than 10 % over 8 minutes is a leak.
        assert!(
            growth < 10.0,
            "{}: heap in use grew {growth:.1} % from minute {SETTLED} to {MINUTES}",
            d.process
        );
    }
    assert!(
        soak.samples.len() as u64 >= MINUTES,
        "{WATCHED:?} sampled each minute"
    );
}
