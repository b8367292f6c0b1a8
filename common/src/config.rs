//! Why a config file cannot be used, for the bulletin's and the hosts' files alike, and
//! the clipping that keeps a bad value's message short.

use std::path::PathBuf;

use thiserror::Error;

/// Why a config file (the bulletin's or a host's) cannot be
/// used. Every message names the file, and the line and key where there is one.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// TOML syntax or a value of the wrong shape (the message has line and column).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, with line, column and the offending text.
        message: String,
    },
    /// A value that parsed but cannot be used.
    #[error("{path}:{line}: `{key}`: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The key, e.g. `lan[1].tap`.
        key: String,
        /// What is wrong and what is expected.
        message: String,
    },
}

/// Cut every line of an error message to `max` characters, and the message to at most
/// [`MAX_ERROR_LINES`] lines and [`MAX_ERROR_CHARS`] characters: a config line of a
/// megabyte, or a value full of escaped newlines, must not become a megabyte of log.
pub fn clip_lines(message: &str, max: usize) -> String {
    let mut out = String::with_capacity(message.len().min(4096));
    let total = message.split('\n').count();
    let mut budget = MAX_ERROR_CHARS;
    for (i, line) in message.split('\n').enumerate() {
        if i == MAX_ERROR_LINES || budget == 0 {
            out.push_str(&format!("\n… ({} more lines)", total - i));
            break;
        }
        if i > 0 {
            out.push('\n');
        }
        let n = line.chars().count();
        let keep = n.min(max).min(budget);
        out.extend(line.chars().take(keep));
        budget -= keep;
        if keep < n {
            out.push_str(&format!("… ({} more characters)", n - keep));
        }
    }
    out
}

/// Most lines of an error message kept by [`clip_lines`].
pub const MAX_ERROR_LINES: usize = 8;
/// Most characters of an error message kept by [`clip_lines`] (besides its notes).
pub const MAX_ERROR_CHARS: usize = 640;

/// Cut one value for an error message (`"abc…" (N characters)`).
pub fn clip_value(value: &str, max: usize) -> String {
    let n = value.chars().count();
    if n > max {
        format!(
            "{:?}… ({n} characters)",
            value.chars().take(max).collect::<String>()
        )
    } else {
        format!("{value:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_and_messages_are_clipped() {
        assert_eq!(clip_value("abc", 5), "\"abc\"");
        assert_eq!(clip_value("abcdefgh", 3), "\"abc\"… (8 characters)");
        let long = "x".repeat(1000);
        let m = clip_lines(&long, 10);
        assert!(m.starts_with("xxxxxxxxxx… (990 more characters)"), "{m}");
        let many = "l\n".repeat(50);
        assert!(clip_lines(&many, 80).ends_with("more lines)"));
        assert!(clip_lines(&"y\n".repeat(5000), 5000).chars().count() < MAX_ERROR_CHARS + 200);
    }
}
