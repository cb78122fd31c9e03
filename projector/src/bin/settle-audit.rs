//! `settle-audit`, the auditor's command-line tool: see `projector::audit_cli` (exit codes 0
//! verified, 1 audit failed, 2 usage, 3 could not run).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let code = projector::audit_cli::run(std::env::args_os(), &mut std::io::stdout()).await;
    std::process::ExitCode::from(code)
}
