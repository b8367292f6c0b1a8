//! Per-VM accounting on arbitrary frames: inspection never panics, and the VM and flow
//! tables stay within their caps whatever the frames claim.
#![no_main]
use libfuzzer_sys::fuzz_target;
use telemetry::{FlowTable, VmTable, inspect};

fuzz_target!(|data: &[u8]| {
    let mut vms = VmTable::new(8, 8, 2);
    let mut flows = FlowTable::new(8, 60);
    // Several frames from one input: split on a marker byte so tables see many keys.
    for (i, frame) in data.split(|b| *b == 0xa5).enumerate() {
        let Some(info) = inspect(frame) else {
            assert!(frame.len() < 14);
            continue;
        };
        vms.observe(&info, frame.len(), i % 2 == 0, i as u64);
        flows.observe(&info, frame.len(), i as u64);
        vms.tick(i as u64);
        flows.expire(i as u64);
    }
    assert!(vms.stats().vms <= 8 && vms.stats().pairs <= 8);
    assert!(flows.stats().flows <= 8);
    let _ = flows.rows(1000, Some(3));
    let _ = vms.rows(1000);
});
