//! One contract, two stores: the model and a real etcd (Debian's `etcd-server`, started
//! here on loopback with a data directory of its own).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::{Instant, timeout};

use super::etcd::{EtcdOptions, EtcdStore, EtcdTls};
use super::memory::MemoryStore;
use super::{Held, HeldSaid, SharedHost, SharedSaid, Store, StoreEvent};
use crate::proto::{LanVmNames, VmName};

fn held(id: u32, by: &str) -> Held {
    Held {
        by: by.into(),
        host: SharedHost {
            host_id: id,
            name: format!("h{id}"),
            underlay: [10, 0, 0, id as u8].into(),
            prefix: 24,
            port: 7000,
            observed: ([10, 0, 0, id as u8], 40000).into(),
            lans: BTreeMap::from([("lan1".to_string(), "default".to_string())]),
        },
    }
}

async fn next(rx: &mut tokio::sync::mpsc::Receiver<StoreEvent>, within: Duration) -> StoreEvent {
    timeout(within, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no store event within {within:?}"))
        .unwrap_or_else(|| panic!("the watch ended"))
}

/// What every store must do.
async fn contract(s: impl Store) {
    let l = s.list().await.unwrap_or_else(|e| panic!("{e}"));
    let (before, rev) = (l.hosts, l.revision);
    assert!(before.is_empty() && l.said.is_empty(), "{before:?}");
    let mut rx = s.watch(rev).await.unwrap_or_else(|e| panic!("{e}"));
    let ttl = Duration::from_secs(2);
    let a = s.grant(ttl).await.unwrap_or_else(|e| panic!("{e}"));
    s.put(&held(1, "x"), a)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(next(&mut rx, ttl).await, StoreEvent::Put(held(1, "x")));
    // Another lease cannot delete it: another bulletin took the host since.
    let b = s.grant(ttl).await.unwrap_or_else(|e| panic!("{e}"));
    s.delete(1, b).await.unwrap_or_else(|e| panic!("{e}"));
    // Renewed past its length, it stays.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        for l in [a, b] {
            assert!(s.renew(l).await.unwrap_or_else(|e| panic!("{e}")));
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let now = s.list().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(now.hosts, vec![held(1, "x")]);
    // What it said lives under its lease, is watched, and listed.
    let said = |by: &str, at_ms: u64| HeldSaid {
        by: by.into(),
        host_id: 1,
        said: SharedSaid::Names(LanVmNames {
            lan: "lan1".into(),
            vms: vec![VmName {
                mac: [2, 0, 0, 0, 0, 1],
                name: format!("vm-{at_ms}"),
                uuid: None,
            }],
        }),
    };
    s.put_said(&said("x", 1), a)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(next(&mut rx, ttl).await, StoreEvent::Said(said("x", 1)));
    s.put_said(&said("x", 2), a)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(next(&mut rx, ttl).await, StoreEvent::Said(said("x", 2)));
    let l = s.list().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l.said, vec![said("x", 2)], "the second replaced the first");
    // Another bulletin takes the host: its record, its lease.
    s.put(&held(1, "y"), b)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(next(&mut rx, ttl).await, StoreEvent::Put(held(1, "y")));
    s.delete(1, a).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        s.list().await.unwrap_or_else(|e| panic!("{e}")).hosts,
        vec![held(1, "y")]
    );
    // Not renewed, the lease lapses and takes the record with it.
    let t = Instant::now();
    assert_eq!(
        next(&mut rx, Duration::from_secs(6)).await,
        StoreEvent::Delete(1)
    );
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert!(!s.renew(b).await.unwrap_or_else(|e| panic!("{e}")));
    // What it said went with lease `a`, when `a` lapsed; nothing was written under `b`.
    let l = s.list().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(l.said.is_empty(), "{:?}", l.said);
    // Removed by its own lease.
    let c = s.grant(ttl).await.unwrap_or_else(|e| panic!("{e}"));
    s.put(&held(2, "x"), c)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(next(&mut rx, ttl).await, StoreEvent::Put(held(2, "x")));
    s.delete(2, c).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(next(&mut rx, ttl).await, StoreEvent::Delete(2));
    let l = s.list().await.unwrap_or_else(|e| panic!("{e}"));
    let (after, rev2) = (l.hosts, l.revision);
    assert!(after.is_empty() && rev2 > rev, "{after:?} at {rev2}");
}

#[tokio::test]
async fn the_model_keeps_the_contract() {
    contract(MemoryStore::new()).await;
}

/// A single-member etcd on loopback, killed and its directory removed when dropped.
struct Etcd {
    child: Child,
    dir: std::path::PathBuf,
    client: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Whether etcd is here (it must be under CI).
fn has_etcd() -> bool {
    if Command::new("etcd").arg("--version").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "etcd is missing: scripts/deps.sh installs etcd-server"
    );
    eprintln!("skipped: no etcd (scripts/deps.sh installs etcd-server)");
    false
}

/// A single-member etcd on loopback serving `scheme` (http or https) with `extra` flags.
fn start_etcd(scheme: &str, extra: &[String]) -> Etcd {
    let (c, p) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("vmvpn-store-test-{}-{c}", std::process::id()));
    let client = format!("127.0.0.1:{c}");
    let child = Command::new("etcd")
        .arg("--data-dir")
        .arg(&dir)
        .args(["--listen-client-urls", &format!("{scheme}://{client}")])
        .args(["--advertise-client-urls", &format!("{scheme}://{client}")])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{p}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{p}"),
        ])
        .args([
            "--initial-cluster",
            &format!("default=http://127.0.0.1:{p}"),
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("etcd: {e}"));
    Etcd { child, dir, client }
}

/// The store once etcd answers (20 s at most).
async fn ready(opts: &EtcdOptions) -> EtcdStore {
    let t = Instant::now();
    loop {
        match EtcdStore::connect(opts).await {
            Ok(s) if s.list().await.is_ok() => return s,
            _ if t.elapsed() > Duration::from_secs(20) => panic!("etcd did not start"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test]
async fn etcd_keeps_the_contract() {
    if !has_etcd() {
        return;
    }
    let e = start_etcd("http", &[]);
    let opts =
        EtcdOptions::from_url(&format!("etcd://{}", e.client)).unwrap_or_else(|e| panic!("{e}"));
    contract(ready(&opts).await).await;
}

/// A test CA, and certificates it signed for etcd (IP 127.0.0.1) and for a client, made
/// by openssl in `dir`: (CA, server cert, server key, client cert, client key) paths.
fn certificates(dir: &std::path::Path) -> [std::path::PathBuf; 5] {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("openssl (scripts/deps.sh installs it): {e}"));
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &key,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=test-ca",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for (name, cn) in [("srv", "etcd"), ("cli", "bulletin-client")] {
        let (k, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        run(&[
            &["req"][..],
            &key,
            &["-keyout", &k, "-out", &csr, "-subj", &format!("/CN={cn}")],
        ]
        .concat());
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
        ]);
    }
    ["ca.pem", "srv.pem", "srv.key", "cli.pem", "cli.key"].map(|f| dir.join(f))
}

#[tokio::test]
async fn etcd_over_tls_with_a_password_keeps_the_contract() {
    if !has_etcd() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("vmvpn-store-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let [ca, srv, srv_key, cli, cli_key] = certificates(&dir);
    let tls_args: Vec<String> = vec![
        "--cert-file".into(),
        srv.display().to_string(),
        "--key-file".into(),
        srv_key.display().to_string(),
        "--trusted-ca-file".into(),
        ca.display().to_string(),
        "--client-cert-auth".into(),
    ];
    let e = start_etcd("https", &tls_args);
    let read = |p: &std::path::Path| std::fs::read(p).unwrap_or_else(|e| panic!("{e}"));
    let tls = EtcdTls {
        ca_pem: read(&ca),
        identity: Some((read(&cli), read(&cli_key))),
    };
    let mut opts =
        EtcdOptions::from_url(&format!("etcd://{}", e.client)).unwrap_or_else(|e| panic!("{e}"));
    opts.tls = Some(tls);
    // Authentication on, with a root user and its password (set over TLS before).
    let admin = ready(&opts).await;
    let mut c = admin.raw();
    c.user_add("root", "s3cret", None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = c.role_add("root").await;
    c.user_grant_role("root", "root")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    c.auth_enable().await.unwrap_or_else(|e| panic!("{e}"));
    // Without the password (the client certificate names no user) nothing is read.
    if let Ok(anonymous) = EtcdStore::connect(&opts).await {
        eprintln!("connected without a password; reading must fail");
        assert!(
            anonymous.list().await.is_err(),
            "etcd with authentication on served a client without a password"
        );
    }
    opts.user = Some(("root".into(), "wrong".into()));
    let wrong = EtcdStore::connect(&opts).await;
    assert!(wrong.is_err(), "a wrong password was taken");
    opts.user = Some(("root".into(), "s3cret".into()));
    contract(ready(&opts).await).await;
    drop(e);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn store_urls_are_checked() {
    let o = EtcdOptions::from_url("etcd://a:1,b:2").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.endpoints, ["a:1", "b:2"]);
    for bad in ["a:1", "etcd://", "etcd://a", "redis://a:1"] {
        assert!(EtcdOptions::from_url(bad).is_err(), "{bad}");
    }
}
