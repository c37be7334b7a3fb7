//! `herald-loadgen`: see the library's documentation and docs/LOADGEN.md.

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> anyhow::Result<()> {
    herald_loadgen::cli::main()
}
