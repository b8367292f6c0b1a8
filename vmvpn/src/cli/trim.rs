//! The daemon's start-up code, unmapped once it runs.
//!
//! Start-up runs code that a running daemon never runs again: the command line, the
//! config's parsers and checks, the TAP and socket set-up, the dynamic linker's work, the
//! first TLS handshake with the bulletin. The kernel maps program text in large folios
//! (64 KB and more), so those calls leave most of the text mapped: 6.3 of the binary's
//! 8.3 MB in an idle daemon, and about 1 MB of libc's, the larger part of its RSS. Once
//! start-up is over, the executable mappings are unmapped (`MADV_DONTNEED`); what the
//! daemon runs from then on is mapped again at its first call (a minor fault: the pages
//! stay in the page cache, shared with every other process that maps the file).
//!
//! Only executable, file-backed mappings whose resident pages are all the file's own
//! are touched: dropping them loses nothing. A mapping with a private copy of a page
//! (text relocations, a debugger's breakpoint, a uprobe) is left alone. `VMVPN_NO_TRIM=1`
//! keeps everything mapped.

use std::io;
use std::time::Duration;

use tracing::debug;

/// When the text is unmapped, from the end of start-up's set-up (TAPs, sockets and data
/// plane up): at once, then again once the first registration with the bulletin (its TLS
/// handshake), probes and alarm rounds have run.
pub(crate) const AT: [Duration; 2] = [Duration::ZERO, Duration::from_secs(5)];

/// Unmap the clean executable file mappings (ours and the libraries') at [`AT`], unless
/// `VMVPN_NO_TRIM` is set.
pub(crate) fn spawn() {
    if std::env::var_os("VMVPN_NO_TRIM").is_some() {
        return;
    }
    tokio::spawn(async {
        let mut since = Duration::ZERO;
        for at in AT {
            tokio::time::sleep(at - since).await;
            since = at;
            match unmap_text() {
                Ok(bytes) => debug!(kib = bytes / 1024, "start-up code unmapped"),
                Err(e) => debug!(error = %e, "start-up code left mapped"),
            }
        }
    });
}

/// `MADV_DONTNEED` on every clean executable file mapping; the bytes they span.
fn unmap_text() -> io::Result<usize> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut bytes = 0;
    for (start, end) in clean_text(&smaps) {
        // SAFETY: the range is a whole executable, private, file-backed mapping with no
        // written page: its pages are read again from the file when next run, so no
        // content is lost.
        if unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) }
            != 0
        {
            return Err(io::Error::last_os_error());
        }
        bytes += end - start;
    }
    Ok(bytes)
}

/// The ranges of the `r-xp` file mappings in a `/proc/self/smaps` text that hold no
/// anonymous page (a private copy, written: text relocations, breakpoints, uprobes). A
/// dirty page of the file itself (a binary just written, not yet on disk) is the file's
/// content and stays in the page cache: it does not count.
fn clean_text(smaps: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    // The mapping being read: its range, and whether it still qualifies.
    let mut cur: Option<((usize, usize), bool)> = None;
    let mut close = |cur: &mut Option<((usize, usize), bool)>| {
        if let Some((range, true)) = cur.take() {
            out.push(range);
        }
    };
    for l in smaps.lines() {
        if let Some(range) = header(l) {
            close(&mut cur);
            // Range, permissions, offset, device and inode are separated by one space; the
            // path follows after padding.
            let f: Vec<&str> = l.splitn(6, ' ').collect();
            let file = f.get(5).is_some_and(|p| p.trim_start().starts_with('/'));
            cur = Some((range, f.get(1) == Some(&"r-xp") && file));
        } else if let Some((_, ok)) = cur.as_mut() {
            let mut kv = l.split_whitespace();
            if let (Some("Anonymous:"), Some(v)) = (kv.next(), kv.next()) {
                *ok &= v == "0";
            }
        }
    }
    close(&mut cur);
    out
}

/// A mapping's first line: `start-end perms ...`, its range.
fn header(l: &str) -> Option<(usize, usize)> {
    let (range, rest) = l.split_once(' ')?;
    let (a, b) = range.split_once('-')?;
    let perms = rest.split(' ').next()?;
    if perms.len() != 4 {
        return None;
    }
    Some((
        usize::from_str_radix(a, 16).ok()?,
        usize::from_str_radix(b, 16).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One mapping as smaps shows it, with the given anonymous and dirty kB.
    fn vma(line: &str, anon: u32, dirty: u32) -> String {
        format!(
            "{line}\nSize:               2048 kB\nRss:                 512 kB\n\
             Shared_Dirty:          0 kB\nPrivate_Dirty:      {dirty} kB\n\
             Anonymous:          {anon} kB\nVmFlags: rd ex mr mw me dw\n"
        )
    }

    #[test]
    fn only_clean_executable_file_mappings_are_chosen() {
        let smaps = [
            vma("55d0c0000000-55d0c0200000 r--p 00000000 fe:00 42                 /usr/sbin/vmvpn", 0, 0),
            // Just written (by the linker, or an upgrade): dirty in the page cache, the
            // file's own.
            vma("55d0c0200000-55d0c0a00000 r-xp 00200000 fe:00 42                 /usr/sbin/vmvpn", 0, 512),
            // Relocated (RELRO) and data: written.
            vma("55d0c0a00000-55d0c0a40000 r--p 00a00000 fe:00 42                 /usr/sbin/vmvpn", 200, 200),
            vma("55d0c0a40000-55d0c0a48000 rw-p 00a40000 fe:00 42                 /usr/sbin/vmvpn", 8, 8),
            vma("7f0000000000-7f0000100000 r-xp 00028000 fe:00 7                  /usr/lib/x86_64-linux-gnu/libc.so.6", 0, 0),
            // A library with a breakpoint (or text relocations): a written page.
            vma("7f0000200000-7f0000300000 r-xp 00000000 fe:00 9                  /usr/lib/libpatched.so", 4, 4),
            // Anonymous executable memory and the vDSO: not files.
            vma("7f0000300000-7f0000301000 r-xp 00000000 00:00 0 ", 0, 0),
            vma("7ffd00000000-7ffd00001000 r-xp 00000000 00:00 0                  [vdso]", 0, 0),
            // A binary replaced on disk runs on as "(deleted)".
            vma("7ffe00000000-7ffe00001000 r-xp 00000000 fe:00 5                  /opt/vm vpn (deleted)", 0, 0),
        ]
        .concat();
        assert_eq!(
            clean_text(&smaps),
            [
                (0x55d0_c020_0000, 0x55d0_c0a0_0000),
                (0x7f00_0000_0000, 0x7f00_0010_0000),
                (0x7ffe_0000_0000, 0x7ffe_0000_1000),
            ]
        );
        assert!(clean_text("garbage\n-\n1-2\nAnonymous: 0 kB\n").is_empty());
    }

    #[test]
    fn this_process_has_clean_text_to_unmap() {
        let exe = std::env::current_exe().expect("exe");
        let exe = exe.to_string_lossy();
        // The resident kB of our own text, and whether it is among the clean mappings.
        let own = || {
            let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
            let text = clean_text(&smaps);
            let mut lines = smaps.lines();
            while let Some(l) = lines.next() {
                if l.contains(" r-xp ") && l.ends_with(&*exe) {
                    let clean = header(l).is_some_and(|r| text.contains(&r));
                    let rss = lines
                        .find_map(|l| l.strip_prefix("Rss:"))
                        .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok());
                    return (rss.expect("Rss"), clean);
                }
            }
            panic!("no text mapping of {exe}");
        };
        let (before, clean) = own();
        assert!(clean, "our text is clean");
        assert!(unmap_text().expect("madvise") > 0);
        let (after, _) = own();
        assert!(
            after < before,
            "text still mapped: {after} kB, {before} kB before"
        );
    }
}
