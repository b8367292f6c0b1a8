//! What both binaries (`bulletin` and `vmvpn`) do when they start, written once.

/// How the process runs: a long-lived service, or a command that prints and exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `bulletin serve`, `vmvpn up`: logs at info, SIGPIPE stays ignored (a closed peer
    /// socket is an error to handle, not a reason to die).
    Service,
    /// Views and tools: logs at warn only, and output piped into `head` ends quietly
    /// when the pipe closes (exit 141, as other Unix tools), instead of a panic in
    /// `println!`.
    Command,
}

/// Set up the process for its role: SIGPIPE, and logs to stderr (`RUST_LOG` overrides
/// the level; colours only on a terminal, so log files stay plain text). Call first,
/// before any thread starts.
pub fn start(role: Role) {
    if role == Role::Command {
        // SAFETY: setting a signal disposition to the default, before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let level = match role {
        Role::Service => "info",
        Role::Command => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
    if role == Role::Service {
        heap_log();
    }
}

/// The environment variable that turns the heap log on: seconds between lines.
pub const HEAP_LOG_ENV: &str = "VMVPN_HEAP_LOG_S";

/// The C allocator's own figures, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heap {
    /// Bytes handed out and not freed (`uordblks` + `hblkhd`): what the program holds.
    pub in_use: u64,
    /// Bytes free inside the allocator's arenas (`fordblks`): held from the kernel, unused.
    pub free: u64,
}

/// The allocator's figures now (glibc's `mallinfo2`; none on other C libraries).
pub fn heap() -> Option<Heap> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 takes no arguments and only reads the allocator's counters.
        let m = unsafe { libc::mallinfo2() };
        Some(Heap {
            in_use: (m.uordblks + m.hblkhd) as u64,
            free: m.fordblks as u64,
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

/// With `VMVPN_HEAP_LOG_S=N` in its environment, a service logs the allocator's figures
/// every N seconds (target `heap`, at info), so that a soak can tell growth of what the
/// program holds from growth of the allocator's free lists, without a profiler's cost.
fn heap_log() {
    let Some(every) = std::env::var(HEAP_LOG_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| *s > 0)
    else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("heap-log".into())
        .spawn(move || {
            loop {
                if let Some(h) = heap() {
                    tracing::info!(target: "heap", in_use = h.in_use, free = h.free, "heap");
                }
                std::thread::sleep(std::time::Duration::from_secs(every));
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("{HEAP_LOG_ENV} is set but the heap log cannot start: {e}");
    }
}

/// `completions SHELL`: the completion script of a binary's command line, on stdout.
pub fn print_completions(mut cmd: clap::Command, shell: clap_complete::Shell) {
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, &mut std::io::stdout());
}

/// `man`: a binary's man page (roff), on stdout.
pub fn print_man(cmd: clap::Command) -> std::io::Result<()> {
    clap_mangen::Man::new(cmd).render(&mut std::io::stdout())
}
