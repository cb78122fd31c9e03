//! `projector` binary: see the library for what it does.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    projector::main_entry().await
}
