//! `settle-audit` as a real process: its documented exit codes for a wrong command line (2) and
//! a database it cannot reach (3). What it verifies is tested against the real stack in the
//! command-api's `audit` tests, in-process.

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_settle-audit"))
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .expect("settle-audit runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn exit_codes_tell_usage_errors_from_a_tool_that_cannot_run() {
    let (code, stderr) = run(&["verify-chain"]);
    assert_eq!(code, Some(2), "no database URL is a usage error: {stderr}");
    let (code, stderr) = run(&[
        "--database-url",
        "postgres://x@127.0.0.1:1/x",
        "no-such-command",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    let (code, stderr) = run(&[
        "--database-url",
        "postgres://x@127.0.0.1:1/x",
        "verify-chain",
    ]);
    assert_eq!(code, Some(3), "an unreachable database: {stderr}");
    assert!(stderr.contains("cannot connect to Postgres"), "{stderr}");
    let (code, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
}
