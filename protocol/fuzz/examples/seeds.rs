//! Seed corpus generator and input replayer for the `decode` fuzz target.
//! Runs on a plain stable toolchain (no sanitizers, no libFuzzer):
//!
//! ```text
//! cargo run --example seeds -- write corpus/decode     # write the seed corpus
//! cargo run --example seeds -- replay corpus/decode    # run the harness on every file
//! cargo run --example seeds -- replay artifacts/decode/crash-...  # reproduce one input
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [cmd, dir] if cmd == "write" => write(Path::new(dir)),
        [cmd, paths @ ..] if cmd == "replay" && !paths.is_empty() => replay(paths),
        _ => {
            eprintln!("usage: seeds write DIR | seeds replay FILE_OR_DIR...");
            ExitCode::from(2)
        }
    }
}

fn write(dir: &Path) -> ExitCode {
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let seeds = herald_fuzz::seeds();
    for (name, bytes) in &seeds {
        // Every single-frame seed must be a valid frame.
        if !name.starts_with("stream-")
            && let Err(e) = herald_protocol::decode(bytes, &herald_protocol::DecodeLimits::SERVER_TO_CLIENT)
        {
            eprintln!("seed {name} does not decode: {e}");
            return ExitCode::FAILURE;
        }
        let path = dir.join(format!("seed-{name}"));
        if let Err(e) = std::fs::write(&path, bytes) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    println!("wrote {} seeds to {}", seeds.len(), dir.display());
    ExitCode::SUCCESS
}

fn replay(paths: &[String]) -> ExitCode {
    let mut files: Vec<PathBuf> = Vec::new();
    for p in paths {
        let p = Path::new(p);
        if p.is_dir() {
            match std::fs::read_dir(p) {
                Ok(entries) => files.extend(entries.filter_map(|e| e.ok().map(|e| e.path()))),
                Err(e) => {
                    eprintln!("cannot read {}: {e}", p.display());
                    return ExitCode::FAILURE;
                }
            }
        } else {
            files.push(p.to_path_buf());
        }
    }
    files.sort();
    for f in &files {
        let data = match std::fs::read(f) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("cannot read {}: {e}", f.display());
                return ExitCode::FAILURE;
            }
        };
        // A panic here names the input on stderr first.
        eprintln!("replaying {} ({} bytes)", f.display(), data.len());
        herald_fuzz::fuzz_decode(&data);
    }
    println!("replayed {} inputs without a failure", files.len());
    ExitCode::SUCCESS
}
