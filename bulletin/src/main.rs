//! `bulletin`: the vmvpn registry server and its views.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bulletin::client::{Client, ReadAuth};
use bulletin::config::BulletinConfig;
use bulletin::proof::Verifier;
use bulletin::proto::Record;
use bulletin::server::{Server, ServerOptions};
use bulletin::store::etcd::{EtcdOptions, EtcdStore};
use bulletin::tls::Identity;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

/// The bulletin board of vmvpn: which host is in which virtual LAN.
///
/// Hosts register their LANs (proving they hold each LAN's secret), keep a lease with
/// heartbeats, and are told at once when another host of their LANs joins or leaves. The
/// bulletin never forwards a packet; hosts keep working on what they know while it is down.
#[derive(Parser)]
#[command(name = "bulletin", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry in the foreground (prints its certificate fingerprint first).
    Serve {
        /// UDP address for QUIC, e.g. 0.0.0.0:7400.
        #[arg(long, default_value = "0.0.0.0:7400")]
        listen: SocketAddr,
        /// Where the certificate and key live (created on first start, reused after).
        #[arg(long)]
        state_dir: PathBuf,
        /// LANs to serve and lease terms (see README); without it no LAN is accepted.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Serve the web dashboard here (repeat for several listeners). A loopback
        /// address serves plain HTTP to anyone on this machine; any other address serves
        /// HTTPS with the bulletin's certificate and asks for the user and password of
        /// bulletin.toml's `[web]` (it refuses to start without them).
        #[arg(long, value_name = "ADDR:PORT")]
        web: Vec<SocketAddr>,
        /// Keep the registry in etcd, shared with every bulletin given the same store, so
        /// that hosts may list several bulletins and lose one (see the README's "Highly
        /// available bulletin"). Without it the registry lives in this process alone.
        #[arg(long, value_name = "etcd://HOST:PORT[,HOST:PORT...]")]
        store: Option<String>,
    },
    /// Print a shell completion script.
    ///
    /// Example: bulletin completions bash > /usr/share/bash-completion/completions/bulletin
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), generated from this help.
    ///
    /// Example: bulletin man > /usr/share/man/man1/bulletin.1
    Man,
    /// Print the certificate fingerprint (one line, for the hosts' `[bulletin] fingerprint`).
    Fingerprint {
        /// The serve command's --state-dir.
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// List the registry: LAN, segment, host, underlay address and mask, port, observed
    /// address, lease left, last heartbeat.
    Ls(Query),
    /// The global view from the hosts' reports: all-pairs RTT and loss between hosts
    /// (Pingmesh-style, row -> column) and the VM traffic matrix, per LAN.
    Matrix(Query),
    /// The whole overlay's alerts, as the hosts report them: which host raised what, on
    /// which LAN, since when (needs the hosts' [telemetry] report_interval_s > 0).
    Alerts(Query),
    /// The bulletin itself: hosts, connections (open, not yet authenticated), its
    /// limits, what admission refused or evicted, its dashboard listeners.
    Status(Query),
}

/// Which bulletin to ask, and what to print.
#[derive(clap::Args)]
struct Query {
    /// The bulletin's address.
    #[arg(long, env = "VMVPN_BULLETIN")]
    server: SocketAddr,
    /// Its certificate fingerprint (`sha256:…`).
    #[arg(long, env = "VMVPN_BULLETIN_FINGERPRINT")]
    fingerprint: String,
    /// Only this LAN (needed with --secret-file).
    #[arg(long)]
    lan: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// The operator token (the file bulletin.toml's `operator_token_file` names): read
    /// every LAN. Proven over a fresh nonce, never sent.
    #[arg(
        long,
        env = "VMVPN_BULLETIN_TOKEN_FILE",
        conflicts_with = "secret_file"
    )]
    token_file: Option<PathBuf>,
    /// Or a LAN's secret file: read that LAN (give it with --lan).
    #[arg(long, requires = "lan")]
    secret_file: Option<PathBuf>,
}

impl Query {
    fn auth(&self) -> Result<ReadAuth> {
        let read =
            |p: &PathBuf| bulletin::proof::read_secret_file(p).map_err(|m| anyhow::anyhow!(m));
        Ok(match (&self.token_file, &self.secret_file, &self.lan) {
            (Some(t), _, _) => ReadAuth::Operator(Verifier::from_secret(&read(t)?)),
            (None, Some(f), Some(lan)) => ReadAuth::Lan {
                name: lan.clone(),
                verifier: Verifier::from_secret(&read(f)?),
            },
            _ => ReadAuth::None,
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    bulletin::process::start(if matches!(cli.command, Command::Serve { .. }) {
        bulletin::process::Role::Service
    } else {
        bulletin::process::Role::Command
    });
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bulletin: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bulletin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `bulletin status --json`: the status, and the store's state where the bulletin said it.
#[derive(serde::Serialize)]
struct StatusJson<'a> {
    #[serde(flatten)]
    status: &'a bulletin::proto::BulletinStatus,
    /// "up", "unreachable", or absent without a store (or from a bulletin before protocol 6).
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<&'static str>,
}

impl<'a> From<&'a bulletin::proto::BulletinStatus> for StatusJson<'a> {
    fn from(status: &'a bulletin::proto::BulletinStatus) -> Self {
        StatusJson {
            status,
            store: status
                .store_up
                .map(|up| if up { "up" } else { "unreachable" }),
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve {
            listen,
            state_dir,
            config,
            web,
            store,
        } => serve(listen, state_dir, config, web, store).await,
        Command::Completions { shell } => {
            bulletin::process::print_completions(<Cli as clap::CommandFactory>::command(), shell);
            Ok(())
        }
        Command::Man => bulletin::process::print_man(<Cli as clap::CommandFactory>::command())
            .context("writing the man page"),
        Command::Fingerprint { state_dir } => {
            println!("{}", Identity::fingerprint_in(&state_dir)?);
            Ok(())
        }
        Command::Matrix(q) => {
            let auth = q.auth()?;
            let client = Client::new(q.server, &q.fingerprint)?;
            let parts = client.matrix_named(&auth, q.lan).await?;
            let mut m = bulletin::matrix::build(
                &parts.reports,
                &bulletin::matrix::names(&parts.names),
                &bulletin::matrix::paths(&parts.paths),
            );
            bulletin::matrix::add_services(&mut m, bulletin::services::overlay(&parts.services));
            let json = q.json;
            if json {
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                print!("{}", bulletin::matrix::render(&m));
            }
            Ok(())
        }
        Command::Alerts(q) => {
            let auth = q.auth()?;
            let client = Client::new(q.server, &q.fingerprint)?;
            let a = client.alerts(&auth, q.lan).await?;
            if q.json {
                println!("{}", serde_json::to_string_pretty(&a)?);
            } else {
                print!("{}", alerts_table(&a));
            }
            Ok(())
        }
        Command::Status(q) => {
            let auth = q.auth()?;
            let client = Client::new(q.server, &q.fingerprint)?;
            let st = client.status(&auth).await?;
            if q.json {
                println!("{}", serde_json::to_string_pretty(&StatusJson::from(&st))?);
            } else {
                print!("{}", bulletin::status::render(&st));
            }
            Ok(())
        }
        Command::Ls(q) => {
            let auth = q.auth()?;
            let client = Client::new(q.server, &q.fingerprint)?;
            let records = client.query(&auth, q.lan).await?;
            let json = q.json;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &records.iter().map(record_json).collect::<Vec<_>>()
                    )?
                );
            } else {
                print!("{}", table(&records));
            }
            Ok(())
        }
    }
}

async fn serve(
    listen: SocketAddr,
    state_dir: PathBuf,
    config: Option<PathBuf>,
    web: Vec<SocketAddr>,
    store: Option<String>,
) -> Result<()> {
    let (cfg, mut text) = match &config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read config {}", p.display()))?;
            (BulletinConfig::parse(&text, p)?, text)
        }
        None => (BulletinConfig::default(), String::new()),
    };
    // --store names the members; [store] may add credentials and TLS.
    let store = match (store, cfg.store.clone()) {
        (Some(url), from_file) => {
            let named = EtcdOptions::from_url(&url).map_err(anyhow::Error::msg)?;
            Some(match from_file {
                Some(o) => EtcdOptions {
                    endpoints: named.endpoints,
                    ..o
                },
                None => named,
            })
        }
        (None, o) => o,
    };
    let store = match store {
        Some(o) => Some(EtcdStore::connect(&o).await.with_context(|| {
            format!(
                "cannot reach etcd at {}: start it, or check --store and [store]",
                o.endpoints.join(",")
            )
        })?),
        None => None,
    };
    if cfg.web.is_none()
        && let Some(a) = web.iter().find(|a| !a.ip().is_loopback())
    {
        anyhow::bail!(
            "--web {a} is not a loopback address: the dashboard there needs a login; add \
             [web] with user and password_file to the --config file, or listen on 127.0.0.1"
        );
    }
    if cfg.lans.is_empty() {
        warn!(
            "no LAN configured: every registration will be refused (pass --config with [[lan]] entries)"
        );
    }
    let identity = Identity::load_or_create(&state_dir)?;
    // The fingerprint on stdout, alone, so scripts can read it.
    println!("{}", identity.fingerprint());
    let mut names: Vec<&String> = cfg.lans.keys().collect();
    names.sort();
    let lans = names
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let server = Server::start(
        &identity,
        ServerOptions {
            listen,
            lans: cfg.lans.clone(),
            lease_ttl: cfg.lease_ttl,
            heartbeat: cfg.heartbeat,
            hello_timeout: bulletin::server::HELLO_TIMEOUT,
            operator: cfg.operator.clone(),
            limits: cfg.limits,
            outbox_bytes: bulletin::server::OUTBOX_BYTES,
            buffered_budget: cfg.buffered,
        },
    )?;
    if let Some(s) = store {
        server.replicate(s);
        info!("registry shared in etcd with every bulletin on the same store");
    }
    info!(listen = %server.local_addr()?, fingerprint = %identity.fingerprint(), lans = %lans,
          lease_ttl_s = cfg.lease_ttl.as_secs(), heartbeat_s = cfg.heartbeat.as_secs(), "bulletin serving");
    let dashboard = if web.is_empty() {
        Vec::new()
    } else {
        dashboard(&server, &identity, &web, cfg.web.clone(), cfg.web_per_ip).await?
    };
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    // systemd (Type=notify): serving now. Nothing is sent without NOTIFY_SOCKET.
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        warn!(error = %e, "cannot tell systemd the bulletin is ready");
    }
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut served: Vec<String> = cfg.lans.keys().cloned().collect();
    loop {
        tokio::select! {
            _ = hup.recv() => {
                match &config {
                    Some(p) => reload(p, &mut text, &mut served, &server),
                    None => info!("SIGHUP: no --config, so nothing to read again"),
                }
                continue;
            }
            _ = term.recv() => info!("SIGTERM: shutting down"),
            _ = int.recv() => info!("SIGINT: shutting down"),
        }
        break;
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    for t in dashboard {
        t.abort();
    }
    server.shutdown().await;
    info!("stopped");
    Ok(())
}

/// SIGHUP: read the config again and serve its LANs (added ones at once; the hosts of
/// removed ones leave them). Anything else that changed needs a restart: then nothing is
/// applied and the running config stays.
fn reload(path: &Path, running: &mut String, served: &mut Vec<String>, server: &Server) {
    let refuse = |why: String| warn!("SIGHUP: reload refused; the running config stays: {why}");
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return refuse(format!("cannot read {}: {e}", path.display())),
    };
    let cfg = match BulletinConfig::parse(&text, path) {
        Ok(c) => c,
        Err(e) => return refuse(e.to_string()),
    };
    match bulletin::config::reload_refusals(running, &text) {
        Ok(r) if r.is_empty() => {}
        Ok(r) => return refuse(r.join("; ")),
        Err(e) => return refuse(e),
    }
    let mut now: Vec<String> = cfg.lans.keys().cloned().collect();
    now.sort();
    served.sort();
    let added: Vec<&String> = now.iter().filter(|l| !served.contains(l)).collect();
    let removed: Vec<&String> = served.iter().filter(|l| !now.contains(l)).collect();
    info!(added = ?added, removed = ?removed, lans = now.len(), "SIGHUP: config reloaded");
    server.set_lans(cfg.lans);
    *served = now;
    *running = text;
}

/// Start the dashboard: the view built once a second from what the server holds, and a
/// listener per `--web` address.
async fn dashboard(
    server: &Server,
    identity: &Identity,
    addrs: &[SocketAddr],
    credentials: Option<bulletin::web::auth::Credentials>,
    per_ip_web: usize,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    use bulletin::web::{Feed, global::Global, history::History};
    let name = identity.fingerprint();
    let watcher = server.watcher();
    let mut global = Global::default();
    let mut history = History::new(bulletin::web::HISTORY_POINTS, bulletin::web::MAX_SERIES);
    let first = global.update(
        &watcher.input(&name),
        &mut history,
        common::clock::unix_ms(),
    );
    let feed = Feed::new(first, history);
    let mut tasks = Vec::new();
    let f = feed.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let t = Instant::now();
            let input = watcher.input(&name);
            let o = global.update(&input, &mut f.history(), common::clock::unix_ms());
            f.publish(o);
            f.record_build(t.elapsed());
        }
    }));
    let tls = identity.https_config()?;
    for &addr in addrs {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot serve the dashboard on {addr} (--web)"))?;
        let remote = !addr.ip().is_loopback();
        let (metrics_of, builds_of) = (server.watcher(), feed.clone());
        let metrics = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let (w, f) = (metrics_of.clone(), builds_of.clone());
                async move { bulletin::status::metrics_response(&w.status(), &f.build_times()) }
            }),
        );
        let router = bulletin::web::api::router_with(
            feed.clone(),
            if remote { credentials.clone() } else { None },
            metrics,
        );
        let opts = bulletin::http::Options {
            tls: remote.then(|| tls.clone()),
            exchange_timeout: bulletin::web::api::EXCHANGE_TIMEOUT,
            per_ip: per_ip_web,
            stats: Default::default(),
        };
        server.add_web_listener((addr, opts.stats.clone()));
        info!(
            url = %format!("{}://{addr}/", if remote { "https" } else { "http" }),
            login = remote,
            "dashboard"
        );
        tasks.push(tokio::spawn(bulletin::http::serve_with(
            listener, router, opts,
        )));
    }
    Ok(tasks)
}

/// `bulletin alerts` as a table: one line per alert.
fn alerts_table(hosts: &[bulletin::proto::HostAlerts]) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let n: usize = hosts.iter().map(|h| h.alerts.alerts.len()).sum();
    if n == 0 {
        o.push_str("no alerts reported\n");
        return o;
    }
    let _ = writeln!(
        o,
        "{:<10} {:<12} {:<8} {:<9} {:<22} {:>7}  {:<36} SUMMARY",
        "LAN", "HOST", "STATE", "SEVERITY", "ALERT", "SINCE", "LABELS"
    );
    for h in hosts {
        for a in &h.alerts.alerts {
            let labels: Vec<String> = a
                .labels
                .iter()
                .filter(|(k, _)| k != "lan")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(
                o,
                "{:<10} {:<12} {:<8} {:<9} {:<22} {:>6}s  {:<36} {}",
                h.alerts.lan,
                h.name,
                a.state,
                a.severity,
                a.alert,
                a.since_s + h.age_ms / 1000,
                labels.join(","),
                a.summary
            );
        }
    }
    o
}

fn record_json(r: &Record) -> serde_json::Value {
    serde_json::json!({
        "lan": r.lan, "segment": r.segment, "host_id": r.host_id, "name": r.name,
        "underlay": r.underlay.to_string(), "prefix": r.prefix, "mask": mask(r), "port": r.port,
        "observed": r.observed.to_string(), "lease_ms": r.lease_ms, "heartbeat_ago_ms": r.heartbeat_ago_ms,
    })
}

fn mask(r: &Record) -> String {
    match r.underlay {
        std::net::IpAddr::V4(_) => common::net::netmask(r.underlay, r.prefix).to_string(),
        std::net::IpAddr::V6(_) => format!("/{}", r.prefix),
    }
}

/// The paper's Table 1 (LAN, segment, host IP, mask) plus what an operator needs.
fn table(records: &[Record]) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<10} {:<18} {:<10} {:<10} {:<15} {:<15} {:>5}  {:<21} {:>9} {:>10}",
        "LAN", "SEGMENT", "HOST", "ID", "HOST IP", "MASK", "PORT", "OBSERVED", "LEASE", "HEARTBEAT"
    );
    for r in records {
        let _ = writeln!(
            o,
            "{:<10} {:<18} {:<10} {:<10} {:<15} {:<15} {:>5}  {:<21} {:>8}s {:>8.1}s",
            r.lan,
            r.segment,
            r.name,
            format!("{:#010x}", r.host_id),
            r.underlay,
            mask(r),
            r.port,
            r.observed,
            r.lease_ms / 1000,
            r.heartbeat_ago_ms as f64 / 1000.0
        );
    }
    if records.is_empty() {
        o.push_str("(no hosts registered)\n");
    }
    o
}
