use clap::Parser;
use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: calsync allocates many small,
/// short-lived buffers per request and per event (JSON, ids, log rows),
/// and glibc's allocator was a quarter of the CPU of `calsync simulate`
/// (BENCHMARKS.md, "The deterministic simulation").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = calsync::cli::Cli::parse();
    let format = cli.global.log_format.unwrap_or_default();
    calsync::cli::init_tracing(format, cli.command.default_log_filter());
    match calsync::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
