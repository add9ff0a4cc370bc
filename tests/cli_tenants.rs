//! `digital-employee tenants create|list` from the operator's shell: the real binary on a
//! fresh SQLite database; a key can then be minted for the new tenant.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_digital-employee");

fn run(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .env_clear()
        .env("DATA_DIR", dir)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn operators_create_and_list_tenants_from_the_shell() {
    let dir = std::env::temp_dir().join(format!("de-cli-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ok, out, err) = run(&dir, &["migrate"]);
    assert!(ok, "migrate: {out} {err}");

    // Before: keys for an unknown tenant point at the command that creates it.
    let (ok, _, err) = run(
        &dir,
        &[
            "keys", "create", "--tenant", "acme", "--scope", "admin", "--name", "first",
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("digital-employee tenants create acme"),
        "{err}"
    );

    let (ok, id, err) = run(&dir, &["tenants", "create", "acme"]);
    assert!(ok, "tenants create: {err}");
    let id = id.trim();
    assert!(
        uuid::Uuid::parse_str(id).is_ok(),
        "stdout is the id alone: {id:?}"
    );

    let (ok, _, err) = run(&dir, &["tenants", "create", "acme"]);
    assert!(!ok, "a second tenant with the same name");
    assert!(err.contains("already exists"), "{err}");
    let (ok, _, err) = run(&dir, &["tenants", "create", "bad name"]);
    assert!(!ok);
    assert!(err.contains("tenant name"), "{err}");

    let (ok, list, err) = run(&dir, &["tenants", "list"]);
    assert!(ok, "{err}");
    assert!(
        list.lines()
            .any(|l| l.starts_with(id) && l.ends_with("acme")),
        "{list}"
    );
    assert!(list.lines().any(|l| l.ends_with("default")), "{list}");

    let (ok, key, err) = run(
        &dir,
        &[
            "keys", "create", "--tenant", "acme", "--scope", "admin", "--name", "first",
        ],
    );
    assert!(ok, "keys create: {err}");
    assert!(key.trim().starts_with("de_"));
    let _ = std::fs::remove_dir_all(&dir);
}
