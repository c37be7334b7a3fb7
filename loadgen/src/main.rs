//! `herald-loadgen`: see the library's documentation and docs/LOADGEN.md.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> ExitCode {
    match herald_loadgen::cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line with the causes, never a backtrace: these are
            // usage and environment errors, not bugs.
            eprintln!("herald-loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}
