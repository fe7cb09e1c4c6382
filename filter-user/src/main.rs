//! `floodgate`: attach the XDP flood filter, manage its lists, read its counters.
mod cli;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match args.command.execute() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<cli::Exit>() {
            // The command printed its own report (`config check` on a bad file).
            Some(exit) => ExitCode::from(exit.0),
            None => {
                // One line: the error and its causes, outermost first.
                eprintln!("floodgate: error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
