//! `manpage`: man pages generated from the clap definitions (for packagers; hidden
//! from the help).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::CommandFactory as _;

/// Write floodgate's man pages: floodgate.1 and one page per subcommand
/// (floodgate-blocklist.1, floodgate-blocklist-add.1, ...).
///
/// Without --dir, prints floodgate.1 to stdout.
///
/// Example: floodgate manpage --dir /usr/local/share/man/man1
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory to write every page into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.dir {
        None => render(&command(), &mut std::io::stdout().lock()).context("writing the man page to stdout"),
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let written = write_all(&dir)?;
            println!("wrote {} man pages to {}", written.len(), dir.display());
            Ok(())
        }
    }
}

/// The CLI as the pages show it: built, so subcommands carry their full names
/// ("floodgate-blocklist-add"), and without the `help` subcommand clap adds.
fn command() -> clap::Command {
    let mut cmd = super::Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// A whole page. clap_mangen fills the after-help text (the main page's examples and
/// formats) into paragraphs, which scrambles its aligned columns: that text goes into
/// a NOTES section of its own, kept as written.
fn render(cmd: &clap::Command, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    let Some(notes) = cmd.get_after_long_help().or(cmd.get_after_help()).map(|t| t.to_string()) else {
        return man.render(out);
    };
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(out)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(out)?;
    }
    out.write_all(no_fill_section("NOTES", &notes).as_bytes())?;
    if cmd.get_version().is_some() {
        man.render_version_section(out)?;
    }
    Ok(())
}

/// A roff section holding `text` line for line (no filling, no hyphenation), escaped
/// so that every character prints as itself: `-` stays a minus a reader can copy.
fn no_fill_section(title: &str, text: &str) -> String {
    let mut roff = format!(".SH {title}\n.nf\n.nh\n");
    for line in text.lines() {
        let escaped = line.replace('\\', "\\e").replace('-', "\\-");
        // A line starting with . or ' would be a request.
        if escaped.starts_with(['.', '\'']) {
            roff.push_str("\\&");
        }
        roff.push_str(&escaped);
        roff.push('\n');
    }
    roff.push_str(".hy\n.fi\n");
    roff
}

/// Writes the page of every visible command into `dir`; returns their paths, the
/// main page first.
pub fn write_all(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(cmd: &clap::Command, dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        let path = dir.join(clap_mangen::Man::new(cmd.clone()).get_filename());
        let mut file =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        render(cmd, &mut file).with_context(|| format!("writing {}", path.display()))?;
        out.push(path);
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, dir, out)?;
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(&command(), dir, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, path::Path, process::Command};

    use clap::CommandFactory as _;

    /// Every page renders without a warning from groff (`man` uses it); the main page
    /// names every subcommand, and each has a page of its own.
    #[test]
    fn pages_render_and_name_every_subcommand() {
        let tmp = TempDir(std::env::temp_dir().join(format!("floodgate-manpage-{}", std::process::id())));
        let dir = &tmp.0;
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        let written = super::write_all(dir).unwrap();

        let main = std::fs::read_to_string(dir.join("floodgate.1")).unwrap();
        assert!(main.contains("\n.TH floodgate 1 "), "{main}");
        let cli = super::super::Cli::command();
        let visible: Vec<&str> =
            cli.get_subcommands().filter(|s| !s.is_hide_set()).map(|s| s.get_name()).collect();
        assert!(visible.len() >= 13, "{visible:?}");
        let rendered = groff(&dir.join("floodgate.1"));
        // The examples keep their columns: one example, one line, with plain minus signs.
        let example = "  floodgate blocklist load drop.txt --replace   # swap in a whole list atomically";
        assert!(rendered.lines().any(|l| l.trim() == example.trim()), "{rendered}");
        for name in &visible {
            assert!(
                rendered.contains(&format!("floodgate-{name}(1)")),
                "floodgate.1 lacks {name}:\n{rendered}"
            );
            assert!(dir.join(format!("floodgate-{name}.1")).exists(), "no page for {name}");
        }
        assert!(!dir.join("floodgate-manpage.1").exists(), "manpage is hidden");
        assert!(!dir.join("floodgate-help.1").exists(), "no page for clap's help subcommand");

        // Nested subcommands have pages too, and every page renders cleanly.
        let names: BTreeSet<String> =
            written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        for nested in ["floodgate-blocklist-add.1", "floodgate-rule-preset.1", "floodgate-synproxy-enable.1"]
        {
            assert!(names.contains(nested), "{nested} missing from {names:?}");
        }
        for page in &written {
            groff(page);
        }
        let add = groff(&dir.join("floodgate-blocklist-add.1"));
        assert!(add.contains("floodgate-blocklist-add") && add.contains("--ttl"), "{add}");
    }

    /// Removed when dropped, also when the test fails.
    struct TempDir(std::path::PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The page as `man` would show it; panics on any groff warning.
    fn groff(page: &Path) -> String {
        let out = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-rLL=100n"])
            .arg(page)
            .env("GROFF_NO_SGR", "1")
            .output()
            .expect("groff (Debian's groff-base, from scripts/setup.sh)");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && err.trim().is_empty(), "{}: {err}", page.display());
        // Plain text: drop the overstrike bold and underline sequences.
        let text = String::from_utf8_lossy(&out.stdout);
        let mut plain = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if chars.peek() == Some(&'\u{8}') {
                chars.next();
                continue;
            }
            plain.push(c);
        }
        plain
    }
}
