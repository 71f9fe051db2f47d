#![no_main]

/// The broker's allocator (see `strata::alloc`).
#[global_allocator]
static ALLOC: strata::alloc::GuardedAlloc = strata::alloc::GuardedAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    strata::fuzzing::Fixtures::shared().tls_handshake(data);
});
