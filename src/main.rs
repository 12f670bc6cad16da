use clap::Parser;
use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: calsync allocates many small,
/// short-lived buffers per request and per event (JSON, ids, log rows),
/// and glibc's allocator was a quarter of the CPU of `calsync simulate`
/// (BENCHMARKS.md, "The deterministic simulation").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // A worker going idle after a passivation sweep hands back what
        // the stopped actors freed in its heap (`calsync::memory`).
        .on_thread_park(|| {
            calsync::memory::on_park(|| {
                // SAFETY: `mi_collect` only walks the calling thread's own
                // heap and the abandoned pages; it takes no pointers.
                unsafe { libmimalloc_sys::mi_collect(true) }
            })
        })
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(run()),
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
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
