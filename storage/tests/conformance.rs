//! Every backend in this crate against the conformance suite.

use herald_storage::conformance;
use herald_storage::embedded::{self, EmbeddedOptions};
use herald_storage::{Storage, memory};
use tempfile::TempDir;

#[test]
fn memory_conforms() {
    conformance::run_all(&mut memory::storage);
    conformance::room_log_atomic_batches(&memory::storage());
}

/// Opens a fresh database per check; the directories live until the test
/// ends.
fn embedded_opener(dirs: &mut Vec<TempDir>) -> impl FnMut() -> Storage + '_ {
    move || {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let storage = embedded::open(dir.path(), small()).expect("open the embedded store");
        dirs.push(dir);
        storage
    }
}

fn small() -> EmbeddedOptions {
    EmbeddedOptions {
        cache_bytes: 8 * 1024 * 1024,
        worker_threads: Some(1),
    }
}

#[test]
fn embedded_conforms() {
    let mut dirs = Vec::new();
    let mut open = embedded_opener(&mut dirs);
    conformance::run_all(&mut open);
    conformance::room_log_atomic_batches(&open());
}

#[test]
fn embedded_conforms_when_shared_between_runs() {
    // One database for every check and a second run over it: what a live
    // cluster keyspace that is never emptied goes through.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let storage = embedded::open(dir.path(), small()).expect("open the embedded store");
    for _ in 0..2 {
        conformance::run_all(&mut || storage.clone());
    }
}

#[test]
fn memory_conforms_when_shared_between_runs() {
    let storage = memory::storage();
    for _ in 0..2 {
        conformance::run_all(&mut || storage.clone());
    }
}
