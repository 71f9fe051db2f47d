#![no_main]

/// The broker's allocator (see `strata::alloc`).
#[global_allocator]
static ALLOC: strata::alloc::GuardedAlloc = strata::alloc::GuardedAlloc;

use std::sync::OnceLock;

use strata::fuzzing::Fixtures;

static FIXTURES: OnceLock<Fixtures> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let fixtures = FIXTURES.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        Fixtures::load(&dir).expect("fuzz/fixtures")
    });
    fixtures.tls_handshake(data);
});
