//! What a distribution runs: the systemd units pass `systemd-analyze verify` with nothing
//! to say (it exits 0 on warnings, so its stderr must be empty), with the sandboxing the
//! README promises; and both daemons tell systemd they are ready (`Type=notify`).

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Removes a temp dir even when the test fails.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(tag: &str) -> Dir {
    let d = std::env::temp_dir().join(format!("vmvpn-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    Dir(d)
}

#[test]
fn the_units_pass_systemd_analyze_verify_and_are_sandboxed() {
    let ok = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "systemd-analyze is missing: run scripts/deps.sh (installs systemd)"
    );
    let dir = temp_dir("units");
    let units = repo().join("packaging/systemd");
    // The binaries under test stand in for /usr/bin's: verify checks that they exist.
    let mut files = Vec::new();
    for (unit, instance, bin) in [
        (
            "vmvpn@.service",
            "vmvpn@h1.service",
            vmvpn_tests::vmvpn_bin(),
        ),
        (
            "bulletin.service",
            "bulletin.service",
            vmvpn_tests::bulletin_bin(),
        ),
    ] {
        let text = std::fs::read_to_string(units.join(unit)).expect("unit file");
        for key in [
            "Type=notify",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "MemoryDenyWriteExecute=yes",
            "CapabilityBoundingSet=",
        ] {
            assert!(text.contains(key), "{unit} lacks {key}");
        }
        let name = bin.file_name().and_then(|n| n.to_str()).expect("name");
        let text = text.replace(&format!("/usr/bin/{name}"), &bin.display().to_string());
        let f = dir.0.join(instance);
        std::fs::write(&f, text).expect("write unit");
        files.push(f);
    }
    let vmvpn = std::fs::read_to_string(units.join("vmvpn@.service")).expect("unit");
    assert!(vmvpn.contains("CapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_NICE\n"));
    assert!(vmvpn.contains("DeviceAllow=/dev/net/tun rw"));
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&files)
        .output()
        .expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}

#[test]
fn both_daemons_tell_systemd_they_are_ready() {
    vmvpn_tests::require_root();
    let dir = temp_dir("notify");
    let path = dir.0.join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let lab = vmvpn_tests::Lab::builder("notify")
        .subnet(&["h1"])
        .lan("lan1", [192, 168, 83], &["h1"], 0)
        .bulletin(30, 5)
        .daemon_env("NOTIFY_SOCKET", &path.display().to_string())
        .start();
    let mut got = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        let mut buf = [0u8; 1024];
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        let ready = got.iter().filter(|m| m.contains("READY=1")).count();
        if ready >= 2 {
            break;
        }
    }
    assert!(lab.running("h1"));
    let ready: Vec<&String> = got.iter().filter(|m| m.contains("READY=1")).collect();
    assert_eq!(
        ready.len(),
        2,
        "one READY=1 from the bulletin and one from h1: {got:?}"
    );
    assert!(
        ready.iter().any(|m| m.contains("STATUS=1 LANs")),
        "vmvpn says what it runs: {got:?}"
    );
}

/// Removes the packages this test installed, even when it fails.
struct Installed(Vec<&'static str>);

impl Drop for Installed {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = Command::new("dpkg").arg("--purge").args(&self.0).output();
        }
    }
}

#[test]
fn the_debs_install_and_remove_cleanly() {
    vmvpn_tests::require_root();
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from);
    let dir = target.join("debian");
    let find = |name: &str| -> PathBuf {
        std::fs::read_dir(&dir)
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{name}_")) && n.ends_with(".deb"))
            })
            .unwrap_or_else(|| {
                panic!(
                    "no {name} .deb in {}: run scripts/package.sh (scripts/test.sh does)",
                    dir.display()
                )
            })
    };
    let debs = [find("vmvpn"), find("bulletin")];
    // Never over an install of the operator's.
    for p in ["vmvpn", "bulletin"] {
        let out = Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", p])
            .output()
            .expect("dpkg-query");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("installed"),
            "{p} is installed on this machine already: this test installs and removes it, so remove it first (dpkg -r {p})"
        );
    }
    let mut installed = Installed(Vec::new());
    let out = Command::new("dpkg")
        .arg("-i")
        .args(&debs)
        .output()
        .expect("dpkg");
    installed.0 = vec!["vmvpn", "bulletin"];
    assert!(
        out.status.success(),
        "dpkg -i: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for (bin, unit) in [
        ("vmvpn", "vmvpn@.service"),
        ("bulletin", "bulletin.service"),
    ] {
        let v = Command::new(format!("/usr/bin/{bin}"))
            .arg("--version")
            .output()
            .expect("installed binary");
        assert!(v.status.success() && String::from_utf8_lossy(&v.stdout).contains(bin));
        for f in [
            format!("/usr/lib/systemd/system/{unit}"),
            format!("/usr/share/bash-completion/completions/{bin}"),
            format!("/usr/share/man/man1/{bin}.1"),
        ] {
            assert!(Path::new(&f).exists(), "{bin}'s package lacks {f}");
        }
    }
    // The installed units, as systemd would load them (an instance of the template).
    let tmp = temp_dir("installed-units");
    let inst = tmp.0.join("vmvpn@h1.service");
    std::fs::copy("/usr/lib/systemd/system/vmvpn@.service", &inst).expect("copy");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&inst)
        .arg("/usr/lib/systemd/system/bulletin.service")
        .output()
        .expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
    // Installed, not enabled: an operator picks the config to run.
    assert!(!Path::new("/etc/systemd/system/multi-user.target.wants/bulletin.service").exists());

    let out = Command::new("dpkg")
        .args(["--purge", "vmvpn", "bulletin"])
        .output()
        .expect("dpkg --purge");
    assert!(
        out.status.success(),
        "dpkg --purge: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    installed.0.clear();
    for f in [
        "/usr/bin/vmvpn",
        "/usr/bin/bulletin",
        "/usr/lib/systemd/system/vmvpn@.service",
    ] {
        assert!(!Path::new(f).exists(), "{f} left after dpkg --purge");
    }
}
