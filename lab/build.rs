//! Builds the XDP helper programs (bench-ebpf, object `fgb`) into OUT_DIR: the demo's
//! flood generator (`fgb_gen`) comes from there.
fn main() -> anyhow::Result<()> {
    ebpf_build::build("bench-ebpf", &["fgb"])
}
