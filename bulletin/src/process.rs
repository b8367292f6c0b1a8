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
}
