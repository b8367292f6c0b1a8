//! What packagers take from the binaries: shell completions that bash accepts, and man
//! pages, generated from the same definitions as `--help`.

use std::process::Command;

fn run(bin: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn both_binaries_print_completions_bash_accepts_and_a_man_page() {
    for (bin, name, sub) in [
        (vmvpn_tests::vmvpn_bin(), "vmvpn", "status"),
        (vmvpn_tests::bulletin_bin(), "bulletin", "serve"),
    ] {
        let script = run(&bin, &["completions", "bash"]);
        assert!(
            script.contains(&format!("_{name}()")) && script.contains(sub),
            "{script}"
        );
        let file = std::env::temp_dir().join(format!("{name}-{}.bash", std::process::id()));
        std::fs::write(&file, &script).expect("write");
        let check = Command::new("bash")
            .arg("-n")
            .arg(&file)
            .output()
            .expect("bash");
        let _ = std::fs::remove_file(&file);
        assert!(
            check.status.success(),
            "bash -n refused {name}'s completions: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        for shell in ["zsh", "fish"] {
            assert!(
                run(&bin, &["completions", shell]).contains(sub),
                "{name} {shell}"
            );
        }
        let man = run(&bin, &["man"]);
        assert!(man.contains(&format!(".TH {name} 1")), "{man}");
        assert!(
            man.contains(".SH SUBCOMMANDS") && man.contains(sub),
            "{man}"
        );
    }
}
