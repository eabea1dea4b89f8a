//! The `switchyard` binary: parse the command line, hand over to the library.
use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = server::settings::Cli::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(server::cli::run(cli))
}
