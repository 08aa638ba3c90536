//! `make install` (issue #15 §3): the binary, /etc/hydrogen-ws/{config.json,env}, the systemd
//! unit and the sysusers.d file land where PREFIX / SYSCONFDIR / DESTDIR say; a second
//! install keeps the user's config and key; the unit passes `systemd-analyze verify`.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_hydrogen-ws");

fn make_install(args: &[String]) -> String {
    let out = Command::new("make")
        .arg("-s")
        .arg("install")
        .arg(format!("BIN={BIN}"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("make runs");
    assert!(
        out.status.success(),
        "make install failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hws-install-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn make_install_stages_everything_under_destdir_and_keeps_what_is_there() {
    let stage = fresh_dir("stage");
    let destdir = format!("DESTDIR={}", stage.display());
    make_install(std::slice::from_ref(&destdir));
    let at = |p: &str| stage.join(p.trim_start_matches('/'));
    assert_eq!(mode(&at("/usr/local/bin/hydrogen-ws")), 0o755);
    assert_eq!(mode(&at("/etc/hydrogen-ws/config.json")), 0o644);
    assert_eq!(
        mode(&at("/etc/hydrogen-ws/env")),
        0o600,
        "the key file is root's only"
    );
    assert_eq!(
        mode(&at("/usr/local/lib/sysusers.d/hydrogen-ws.conf")),
        0o644
    );
    let unit =
        std::fs::read_to_string(at("/usr/local/lib/systemd/system/hydrogen-ws.service")).unwrap();
    for placeholder in ["@BINDIR@", "@SYSCONFDIR@", "@DOCDIR@"] {
        assert!(
            !unit.contains(placeholder),
            "{placeholder} left in the unit"
        );
    }
    for line in [
        "Type=notify",
        "ExecStart=/usr/local/bin/hydrogen-ws --config /etc/hydrogen-ws/config.json",
        "EnvironmentFile=/etc/hydrogen-ws/env",
        "User=hydrogen-ws",
        "Restart=on-failure",
        "WatchdogSec=",
        "TimeoutStopSec=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(line)),
            "no {line} in the unit"
        );
    }
    // The user's own config and key survive a second install.
    std::fs::write(at("/etc/hydrogen-ws/env"), "HYDROGEN_API_KEY=mine\n").unwrap();
    std::fs::write(at("/etc/hydrogen-ws/config.json"), "{}\n").unwrap();
    make_install(&[destdir]);
    assert_eq!(
        std::fs::read_to_string(at("/etc/hydrogen-ws/env")).unwrap(),
        "HYDROGEN_API_KEY=mine\n"
    );
    assert_eq!(
        std::fs::read_to_string(at("/etc/hydrogen-ws/config.json")).unwrap(),
        "{}\n"
    );
    let _ = std::fs::remove_dir_all(&stage);
}

#[test]
fn the_installed_unit_verifies_and_the_installed_config_checks() {
    let root = fresh_dir("prefix");
    let prefix = root.join("usr");
    let etc = root.join("etc");
    make_install(&[
        format!("PREFIX={}", prefix.display()),
        format!("SYSCONFDIR={}", etc.display()),
    ]);
    let unit = prefix.join("lib/systemd/system/hydrogen-ws.service");
    // systemd's own checker (Debian's systemd package): directives, the ExecStart binary.
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze runs (Debian's systemd package; make test installs it)");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !said.contains("hydrogen-ws.service"),
        "systemd-analyze verify: {said}"
    );
    // The shipped config, as installed, is one the installed binary accepts.
    let out = Command::new(prefix.join("bin/hydrogen-ws"))
        .arg("--check-config")
        .arg("--config")
        .arg(etc.join("hydrogen-ws/config.json"))
        .env("HYDROGEN_API_KEY", "a-key-long-enough-for-the-check")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "--check-config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&root);
}
