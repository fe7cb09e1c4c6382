//! The XDP object, built by build.rs and embedded in the binary.

/// Forces a build-time error in a real (codegen) build when build.rs only wrote the
/// stub object. Associated consts of generic types are evaluated during codegen, not
/// by `cargo check`/`clippy`, which is exactly when the stub is fine.
#[cfg(floodgate_stub_object)]
struct StubGuard<T>(T);

#[cfg(floodgate_stub_object)]
impl<T> StubGuard<T> {
    const MISSING: () = panic!(
        "floodgate was built without bpf-linker, so it holds no XDP program: run scripts/setup.sh, then build again"
    );
}

#[cfg(floodgate_stub_object)]
fn guard<T>() {
    let () = StubGuard::<T>::MISSING;
}

/// The bytes of the XDP object (ELF).
pub fn bytes() -> &'static [u8] {
    #[cfg(floodgate_stub_object)]
    guard::<()>();
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floodgate"))
}
