//! `vmvpn`: the host daemon and its command-line tools.

mod cli;

use cli::{daemon, ping, render, top};

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use vmvpn::api::control::{self, ControlRequest};
use vmvpn::api::reload::ReloadReport;
use vmvpn::config::{Config, generate_secret};
use vmvpn::status::{AlertView, LanTraffic, MacRow, Status};

/// Layer-2 overlay for virtual machines across hosts and subnets.
///
/// Each host runs `vmvpn up`, which joins the virtual LANs of its config: one TAP device
/// per LAN (bridge your VMs to it), frames sealed with AES-256-GCM and sent over UDP
/// straight to the host that has the destination MAC.
#[derive(Parser)]
#[command(name = "vmvpn", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground (SIGTERM or Ctrl-C stops it cleanly).
    ///
    /// Logs go to stderr; set RUST_LOG=debug (or vmvpn=trace) for more.
    Up {
        /// Host configuration file (see README: [host] and [[lan]] sections).
        #[arg(long, short, env = "VMVPN_CONFIG")]
        config: PathBuf,
    },
    /// Show this host: LANs, TAPs, peers, tunnels, traffic and drops.
    Status {
        /// Print JSON (the format is documented in the README).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Show the MAC database: which VM MAC lives behind which host.
    Macs(View),
    /// Per-VM traffic, seen from this host without agents: bytes and packets from and to
    /// each VM MAC (with its IP), and the VM-to-VM matrix.
    Vms(View),
    /// Service addresses (`[[lan.service]]`) and how this host's VMs used them: each
    /// backend's MAC, weight, frames, bytes and TCP connections.
    Services(View),
    /// Flows between VMs (5-tuples, both directions, TCP state), busiest first.
    Flows {
        /// Only the N busiest flows per LAN.
        #[arg(long)]
        top: Option<usize>,
        #[command(flatten)]
        view: View,
    },
    /// Tunnels, local VM ports and flows, busiest first, refreshed in place.
    Top {
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Rows per section.
        #[arg(long, default_value_t = 10)]
        rows: usize,
        /// Print one screen and exit (no screen clearing).
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Probe a peer through its tunnel and print each round trip, like ping.
    ///
    /// TARGET is a peer's name, id or underlay address (as `vmvpn status` shows them), or a
    /// VM's IP address (as `vmvpn vms` shows it): then the peer behind that VM is probed.
    /// The probes travel inside the tunnel, sealed, on the same socket as data.
    Ping {
        /// Peer name, id or address, or VM IP.
        target: String,
        /// Probes to send.
        #[arg(long, short = 'c', default_value_t = 5)]
        count: u32,
        /// Seconds between probes.
        #[arg(long, short = 'i', default_value_t = 0.5)]
        interval: f64,
        /// Print one JSON object per probe.
        #[arg(long)]
        json: bool,
        /// Control socket of the daemon (default: the only one in /run/vmvpn).
        #[arg(long, env = "VMVPN_SOCKET")]
        socket: Option<PathBuf>,
        /// Or its config file (long form only here: -c is the count).
        #[arg(long, conflicts_with = "socket")]
        config: Option<PathBuf>,
    },
    /// Alerts of this host's alarm rules: firing, pending, and resolved in the last while,
    /// with since when and the value the rule saw.
    ///
    /// Rules come from `[alarms] rules` (or the default rules: README, "Alarms").
    Alerts {
        /// Print JSON (a list of alerts with labels and annotations).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Print a fresh random LAN secret (base64), for a `secret_file`.
    ///
    /// Example: vmvpn keygen > /etc/vmvpn/lan1.key && chmod 600 /etc/vmvpn/lan1.key
    Keygen,
    /// Print a shell completion script.
    ///
    /// Example: vmvpn completions bash > /usr/share/bash-completion/completions/vmvpn
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), generated from this help.
    ///
    /// Example: vmvpn man > /usr/share/man/man1/vmvpn.1
    Man,
    /// Print a LAN's verifier, for the bulletin's config (`[[lan]] verifier = "…"`) and a
    /// relay's that is not in the LAN (`[host] relay_lans`).
    ///
    /// The bulletin checks with it that hosts hold the LAN secret, and a relay that
    /// requests for a pair socket come from members; nothing derived from the verifier
    /// opens data-plane frames, so neither ever needs the secret itself.
    Verifier {
        /// The LAN's secret file (from `vmvpn keygen`).
        #[arg(long)]
        secret_file: PathBuf,
    },
    /// Read the daemon's config file (and alarm rules) again and apply what changed.
    ///
    /// Live: a LAN's static peers and rate limits, [telemetry] measurement settings and
    /// the alarm rules; tunnels not affected keep their sessions. Anything else (host
    /// name, address or port, a LAN added or removed, a secret, exports) needs a restart:
    /// then nothing is applied, the running config stays, and the exit status is 1.
    /// SIGHUP does the same (the outcome is in the daemon's log).
    Reload {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Check a config file and its secret files without starting anything; when its
    /// daemon runs, also show what `vmvpn reload` would change.
    Check {
        /// Host configuration file.
        #[arg(long, short, env = "VMVPN_CONFIG")]
        config: PathBuf,
    },
}

/// Which daemon to ask.
/// A table of one LAN or all, from a daemon.
#[derive(clap::Args)]
struct View {
    /// Only this LAN.
    #[arg(long)]
    lan: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
}

#[derive(clap::Args)]
struct Target {
    /// Control socket of the daemon.
    #[arg(long, env = "VMVPN_SOCKET")]
    socket: Option<PathBuf>,
    /// Or: the daemon's config file, to take its control_socket from.
    #[arg(long, short, conflicts_with = "socket")]
    config: Option<PathBuf>,
}

impl Target {
    fn resolve(&self) -> Result<PathBuf> {
        if let Some(s) = &self.socket {
            return Ok(s.clone());
        }
        if let Some(c) = &self.config {
            return Ok(Config::load(c)?.control_socket());
        }
        let dir = Path::new("/run/vmvpn");
        let socks: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                    .collect()
            })
            .unwrap_or_default();
        match socks.as_slice() {
            [one] => Ok(one.clone()),
            [] => bail!(
                "no daemon socket in {}: is `vmvpn up` running? Name one with --socket PATH",
                dir.display()
            ),
            many => bail!(
                "several daemons in {}: pick one with --socket ({})",
                dir.display(),
                many.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    bulletin::process::start(if matches!(cli.command, Command::Up { .. }) {
        bulletin::process::Role::Service
    } else {
        bulletin::process::Role::Command
    });
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmvpn: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Up { config } => daemon::up(&config),
        Command::Status { json, target } => {
            let sock = target.resolve()?;
            let v: Status = control::request(&sock, &ControlRequest::Status)?;
            print_out(&v, json, render::status)?;
            if !json
                && let Ok(a) = control::request::<Vec<AlertView>>(&sock, &ControlRequest::Alerts)
            {
                print!("{}", render::alert_line(&a));
            }
            Ok(())
        }
        Command::Macs(View { lan, json, target }) => {
            let v: Vec<MacRow> =
                control::request(&target.resolve()?, &ControlRequest::Macs { lan })?;
            print_out(&v, json, |v| render::macs(v))
        }
        Command::Vms(View { lan, json, target }) => {
            let v: Vec<LanTraffic> = control::request(
                &target.resolve()?,
                &ControlRequest::Traffic { lan, top: None },
            )?;
            print_out(&v, json, |v| render::vms(v))
        }
        Command::Services(View { lan, json, target }) => services(lan, json, target),
        Command::Flows {
            top,
            view: View { lan, json, target },
        } => {
            let v: Vec<LanTraffic> =
                control::request(&target.resolve()?, &ControlRequest::Traffic { lan, top })?;
            print_out(&v, json, |v| render::flows(v))
        }
        Command::Top {
            interval,
            rows,
            once,
            target,
        } => top::run(&target.resolve()?, interval, rows, once),
        Command::Ping {
            target,
            count,
            interval,
            json,
            socket,
            config,
        } => ping::run(
            &Target { socket, config }.resolve()?,
            &target,
            count,
            interval,
            json,
        ),
        Command::Completions { shell } => {
            bulletin::process::print_completions(<Cli as clap::CommandFactory>::command(), shell);
            Ok(())
        }
        Command::Man => bulletin::process::print_man(<Cli as clap::CommandFactory>::command())
            .context("writing the man page"),
        Command::Keygen => {
            println!(
                "{}",
                generate_secret()
                    .map_err(|_| anyhow::anyhow!("the system random source failed"))?
            );
            Ok(())
        }
        Command::Verifier { secret_file } => {
            let text = std::fs::read_to_string(&secret_file)
                .with_context(|| format!("cannot read {}", secret_file.display()))?;
            let secret = vmvpn::config::parse_secret(&text)
                .map_err(|m| anyhow::anyhow!("{}: {m}", secret_file.display()))?;
            println!(
                "{}",
                bulletin::proof::Verifier::from_secret(&secret.0).to_base64()
            );
            Ok(())
        }
        Command::Check { config } => check(&config),
        Command::Reload { json, target } => {
            let r: ReloadReport = control::request(
                &target.resolve()?,
                &ControlRequest::Reload { dry_run: false },
            )?;
            print_out(&r, json, render::reload)?;
            if let Some(why) = &r.refused {
                bail!("reload refused: {why}");
            }
            Ok(())
        }
        Command::Alerts { json, target } => {
            let v: Vec<AlertView> = control::request(&target.resolve()?, &ControlRequest::Alerts)?;
            print_out(&v, json, |v| render::alerts(v))
        }
    }
}

/// `vmvpn services`: each LAN's services (one LAN with `--lan`).
fn services(lan: Option<String>, json: bool, target: Target) -> Result<()> {
    let st: Status = control::request(&target.resolve()?, &ControlRequest::Status)?;
    if let Some(l) = &lan
        && !st.lans.iter().any(|x| &x.name == l)
    {
        bail!("no LAN named {l:?} on this host");
    }
    let v: Vec<(String, Vec<vmvpn::status::ServiceStatus>)> = st
        .lans
        .into_iter()
        .filter(|l| lan.as_ref().is_none_or(|n| *n == l.name))
        .map(|l| (l.name, l.services))
        .collect();
    if json {
        /// One LAN's services, as `--json` prints them.
        #[derive(serde::Serialize)]
        struct LanServices<'a> {
            lan: &'a str,
            services: &'a [vmvpn::status::ServiceStatus],
        }
        let out: Vec<LanServices> = v
            .iter()
            .map(|(lan, services)| LanServices { lan, services })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        Ok(())
    } else {
        print!("{}", render::services(&v));
        Ok(())
    }
}

/// `vmvpn check`: the config and its secrets and rules read as `up` would, and what a
/// reload would change in a daemon running it.
fn check(config: &Path) -> Result<()> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read config {}", config.display()))?;
    let cfg = Config::parse(&text, config)?;
    for i in 0..cfg.lans.len() {
        cfg.read_secret(i, Some(&text))?;
    }
    let rules = cfg.alarms.load()?;
    println!(
        "{}: ok (host {} id {:#010x}, {} LAN(s), {} alarm rule(s))",
        config.display(),
        cfg.host.name,
        cfg.host_id(),
        cfg.lans.len(),
        rules.len()
    );
    // A daemon on this config's socket: what would a reload of it change?
    let sock = cfg.control_socket();
    if sock.exists() {
        let dry = ControlRequest::Reload { dry_run: true };
        match control::request::<ReloadReport>(&sock, &dry) {
            Ok(r) => {
                let same = |p: &Path| std::fs::canonicalize(p).ok();
                if same(Path::new(&r.file)) == same(config) {
                    print!("{}", render::reload(&r));
                } else {
                    println!(
                        "the daemon at {} runs {}: check that file to see what a reload would change",
                        sock.display(),
                        r.file
                    );
                }
            }
            Err(e) => println!("(no reload preview: {e})"),
        }
    }
    Ok(())
}

/// The answer as JSON (through `Value`, so keys are sorted as they always were) or as
/// a table.
fn print_out<T: serde::Serialize>(v: &T, json: bool, table: impl Fn(&T) -> String) -> Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::to_value(v)?)?
        );
    } else {
        print!("{}", table(v));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        // Duplicate flags and similar mistakes panic here instead of at a user's prompt.
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["vmvpn", "ping", "h2", "-c", "3", "--socket", "/x"])
            .expect("parses");
        assert!(matches!(cli.command, Command::Ping { count: 3, .. }));
    }
}
