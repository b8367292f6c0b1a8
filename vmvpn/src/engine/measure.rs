//! What the engine measures of the traffic it forwards, kept apart from the forwarding
//! state: what is measured (`[telemetry]`), the clock's second, sFlow's sampler and
//! IPFIX's flow records for the whole host ([`Measure`]), and each LAN's VM and flow
//! tables, sFlow countdown and the TSO frame or received run being counted
//! ([`LanMeasure`]). Forwarding reads none of it; it only adds to it.

use telemetry::{FlowTable, VmTable};

use super::burst::{Burst, Run};
use super::sampling::{LanSampling, Sampler};
use super::{Accounting, Engine, ExportTake, FLOW_RECORD_QUEUE, Sampling};

/// The host's measuring state.
#[derive(Default)]
pub(crate) struct Measure {
    /// What is measured.
    pub(crate) accounting: Accounting,
    /// The second (since the engine's epoch) the last timeout ran in.
    pub(crate) last_second: Option<u64>,
    /// sFlow's packet sampling, when configured.
    pub(crate) sampler: Option<Sampler>,
    /// Flow records for IPFIX: (active timeout s, queue per LAN), when configured.
    pub(crate) flow_export: Option<(u64, usize)>,
    /// The export settings in force.
    pub(crate) settings: Sampling,
}

impl Measure {
    /// The second flow and VM counters are stamped with.
    pub(crate) fn second(&self) -> u64 {
        self.last_second.unwrap_or(0)
    }
}

/// One LAN's measuring state.
pub(crate) struct LanMeasure {
    /// Per-VM traffic and the VM matrix.
    pub(crate) vms: VmTable,
    /// Transport flows between VMs.
    pub(crate) flows: FlowTable,
    /// sFlow's countdown, pool and sequence on this LAN.
    pub(crate) sampling: LanSampling,
    /// The TSO frame whose segments are being handled, counted once at its end.
    pub(crate) burst: Option<Burst>,
    /// Received frames of one flow not yet counted (see `burst.rs`).
    pub(crate) rx_run: Option<Run>,
}

impl LanMeasure {
    /// Empty tables sized for `a` (none when flows are not measured), flows exported per
    /// `flow_export`.
    pub(crate) fn new(a: Accounting, flow_export: Option<(u64, usize)>) -> Self {
        let on = usize::from(a.flows);
        let mut flows = FlowTable::new(a.flow_cap * on, a.flow_idle_s);
        flows.set_export(flow_export);
        LanMeasure {
            vms: VmTable::new(a.vms * on, a.pairs * on, a.port_series * on),
            flows,
            sampling: LanSampling::default(),
            burst: None,
            rx_run: None,
        }
    }
}

/// What is measured, and the exports' share of it.
impl Engine {
    /// What is measured.
    pub fn accounting(&self) -> Accounting {
        self.measure.accounting
    }

    /// Choose what is measured (tables are emptied).
    pub fn set_accounting(&mut self, a: Accounting) {
        self.measure.accounting = a;
        for l in &mut self.lans {
            l.measure(a, self.measure.flow_export);
        }
    }

    /// Sample 1 in `rate` frames crossing the TAPs for sFlow (None: no sampling, and no
    /// cost per frame). `seed` makes the choice of frames differ between hosts.
    pub fn set_sflow(&mut self, rate: Option<u32>, seed: u64) {
        self.measure.sampler = rate.map(|r| Sampler::new(r, seed));
        for l in &mut self.lans {
            l.measure.sampling = Default::default();
        }
    }

    /// Make IPFIX flow records: of flows that end, and of long ones every `active_s`
    /// (None: none). Needs flow accounting.
    pub fn set_flow_export(&mut self, active_s: Option<u64>) {
        self.measure.flow_export = active_s.map(|a| (a, FLOW_RECORD_QUEUE));
        for l in &mut self.lans {
            l.measure.flows.set_export(self.measure.flow_export);
        }
    }

    /// What the exports need: sFlow sampling and IPFIX flow records (both as
    /// [`set_sflow`](Self::set_sflow) and [`set_flow_export`](Self::set_flow_export)).
    /// Settings that did not change are left alone, so a reload keeps their state.
    pub fn set_sampling(&mut self, s: Sampling) {
        if self.measure.settings.sflow != s.sflow {
            self.set_sflow(
                s.sflow.map(|(rate, _)| rate),
                s.sflow.map_or(1, |(_, seed)| seed),
            );
        }
        if self.measure.settings.ipfix_active_s != s.ipfix_active_s {
            self.set_flow_export(s.ipfix_active_s);
        }
        self.measure.settings = s;
    }

    /// Whether the exporter should come for the samples before its next turn (true once
    /// per filling; checked once per turn of the data plane's loop, not per frame).
    pub fn poll_exports_due(&mut self) -> bool {
        self.measure
            .sampler
            .as_mut()
            .is_some_and(|s| s.wants_taking())
    }

    /// Hand the sFlow samples and each LAN's flow records to the exporter, swapping them
    /// with its buffers (`records` has one per LAN), which the next ones fill.
    pub fn take_exports(
        &mut self,
        samples: &mut Vec<telemetry::sflow::FlowSample>,
        records: &mut [Vec<telemetry::flows::FlowRecord>],
    ) -> ExportTake {
        let sample_drops = match self.measure.sampler.as_mut() {
            Some(s) => s.swap(samples),
            None => {
                samples.clear();
                0
            }
        };
        let mut record_drops = 0;
        for (l, buf) in self.lans.iter_mut().zip(records.iter_mut()) {
            record_drops += l.measure.flows.take_records(buf);
        }
        ExportTake {
            sample_drops,
            record_drops,
            now_s: self.measure.last_second.unwrap_or(0),
        }
    }

    /// End every flow with a record (before a last [`Engine::take_exports`] at shutdown).
    pub fn flush_flows(&mut self) {
        for l in &mut self.lans {
            l.measure.flows.flush();
        }
    }
}
