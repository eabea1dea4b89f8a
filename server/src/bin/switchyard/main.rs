//! The `switchyard` binary: parse the command line, hand over to the library. The command
//! dispatch (`cli`) and the benchmarks (`bench`) are modules of the binary, not of the library:
//! nothing of the product calls them.
mod bench;
mod cli;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    // The build supervisor runs with a build's environment in mind: it must never take settings
    // from the environment, so it is dispatched before the settings (and their SWITCHYARD_*
    // fallbacks) are parsed.
    let mut args = std::env::args_os().skip(1).peekable();
    if args
        .peek()
        .is_some_and(|a| a == server::supervisor::COMMAND)
    {
        server::supervisor::main(args.skip(1));
    }
    let cli = server::settings::Cli::parse();
    if let server::settings::Command::BuildSupervisor(args) = &cli.command {
        server::supervisor::run(args);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(cli::run(cli))
}
