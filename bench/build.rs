//! Builds the bench's XDP helper programs (bench-ebpf, object `fgb`) into OUT_DIR.
fn main() -> anyhow::Result<()> {
    ebpf_build::build("bench-ebpf", &["fgb"])
}
