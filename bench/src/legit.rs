use crate::report::Section;

pub fn run(_quick: bool) -> anyhow::Result<Vec<Section>> {
    Ok(Vec::new())
}
