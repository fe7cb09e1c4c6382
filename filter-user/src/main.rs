//! `floodgate`: attach the XDP flood filter, manage its lists, read its counters.
mod cli;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match args.command.execute() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, outermost first.
            eprintln!("floodgate: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
