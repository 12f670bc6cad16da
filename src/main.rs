use clap::Parser;
use std::process::ExitCode;

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
