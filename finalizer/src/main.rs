//! `finalizer` binary: see the library for what it does.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    finalizer::main_entry().await
}
