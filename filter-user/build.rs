//! Builds the XDP object (filter-ebpf, bin `floodgate`) into OUT_DIR; see ebpf-build
//! for the stub object written without bpf-linker.
fn main() -> anyhow::Result<()> {
    ebpf_build::build("filter-ebpf", &["floodgate"])
}
