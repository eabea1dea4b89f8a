//! The `switchyard` binary: parse the command line, hand over to the library.
use clap::Parser;

/// mimalloc instead of glibc's malloc: the server allocates many small, short-lived buffers
/// (JSON, SQL arguments, HTTP frames) across threads, where glibc's arenas showed up as
/// about a sixth of the CPU time in profiles of the run benchmark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = server::settings::Cli::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(server::cli::run(cli))
}
