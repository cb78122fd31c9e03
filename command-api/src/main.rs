//! `command-api` binary: see the library for what it does.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    command_api::main_entry().await
}
