//! Receive coalescing (TCP and UDP) on arbitrary frames: never a panic, and splitting what comes out
//! gives back exactly what went in, in order. Checksums are fixed up on most frames, or
//! the coalescer would reject nearly every input before its merge rules are reached.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmvpn::offload::csum::{fold, pseudo, sum};
use vmvpn::offload::gro::Coalescer;
use vmvpn::offload::gso::{VNET_HDR_LEN, VnetHdr, split};

/// Make the IPv4 header and the TCP or UDP checksum of `f` valid where its layout allows.
fn fix(f: &mut [u8]) {
    let (l4, addrs, proto) = match f.get(12..14) {
        Some([0x08, 0x00]) if f.len() >= 34 => {
            f[24..26].fill(0);
            let c = !fold(sum(0, &f[14..34]));
            f[24..26].copy_from_slice(&c.to_be_bytes());
            (34, 26..34, f[23])
        }
        Some([0x86, 0xdd]) if f.len() >= 54 => (54, 22..54, f[20]),
        _ => return,
    };
    let at = match proto {
        6 if f.len() >= l4 + 20 => l4 + 16,
        17 if f.len() >= l4 + 8 => l4 + 6,
        _ => return,
    };
    f[at..at + 2].fill(0);
    let ph = pseudo(&f[addrs], proto, (f.len() - l4) as u32);
    let c = !fold(sum(ph, &f[l4..]));
    f[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

fuzz_target!(|data: &[u8]| {
    let mut input: Vec<(usize, Vec<u8>)> = Vec::new();
    // Frames whose checksums were fixed here are offered as summed by their sender (as a
    // peer's TSO segments are), so both ways of checking are fuzzed.
    let mut summed: Vec<bool> = Vec::new();
    for (i, chunk) in data.split(|b| *b == 0xa5).enumerate() {
        let mut f = chunk.to_vec();
        if i % 4 != 3 {
            fix(&mut f);
        }
        input.push((i % 3 / 2, f));
        summed.push(i % 4 == 1);
    }
    let mut c = Coalescer::new();
    let mut out: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut buf = vec![0u8; 70_000];
    let mut expand = |lan: usize, bytes: &[u8], out: &mut Vec<(usize, Vec<u8>)>| {
        let h = VnetHdr::parse(bytes).expect("a header");
        let mut f = bytes[VNET_HDR_LEN..].to_vec();
        split(&h, &mut f, &mut buf, 0, |b, n| out.push((lan, b[..n].to_vec())))
            .expect("what the coalescer writes splits");
    };
    for ((lan, f), summed) in input.iter().zip(&summed) {
        let mut written = Vec::new();
        let taken = c.push(*lan, f, *summed, |l, b, _| written.push((l, b.to_vec())));
        for (l, b) in written {
            expand(l, &b, &mut out);
        }
        if !taken {
            out.push((*lan, f.clone()));
        }
    }
    let mut written = Vec::new();
    c.flush(|l, b, _| written.push((l, b.to_vec())));
    for (l, b) in written {
        expand(l, &b, &mut out);
    }
    assert!(out == input, "coalescing was not undone by splitting");
});
