//! Debian's headless Chromium driven by chromedriver through `tests/browser/dashboard.py`
//! (its commands are listed there): the dashboard as a user's browser renders it.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The browser driver, in a namespace; stopped by its PID when dropped.
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Browser {
    /// Start `tests/browser/dashboard.py` in `ns`, with its Chromium profile in `profile`.
    pub fn start(ns: &str, profile: &std::path::Path) -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser/dashboard.py");
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "/usr/bin/python3"])
            .arg(&script)
            .arg(profile)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", script.display()));
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            panic!("browser driver without pipes");
        };
        Browser {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        }
    }

    /// One command, its JSON answer.
    pub fn ask(&mut self, cmd: &str) -> Value {
        writeln!(self.stdin, "{cmd}").unwrap_or_else(|e| panic!("browser driver: {e}"));
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("browser driver: {e}"));
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("browser driver said {line:?} to {cmd:?}: {e}"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
