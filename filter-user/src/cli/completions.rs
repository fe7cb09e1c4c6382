//! `completions`: shell completion scripts generated from the clap definitions.

use clap::CommandFactory as _;
use clap_complete::Shell;

/// Print a shell completion script for floodgate to stdout.
///
/// Install it where the shell looks (README, "Installing"), e.g.
///   floodgate completions bash > /usr/share/bash-completion/completions/floodgate
///   floodgate completions zsh  > /usr/local/share/zsh/site-functions/_floodgate
///   floodgate completions fish > /usr/share/fish/vendor_completions.d/floodgate.fish
///
/// Example: source <(floodgate completions bash)
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Shell to complete for: bash, zsh, fish, elvish or powershell.
    #[arg(value_name = "SHELL")]
    pub shell: Shell,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    write(args.shell, &mut std::io::stdout().lock());
    Ok(())
}

/// Writes the completion script for `shell` to `out`.
pub fn write(shell: Shell, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, &mut super::Cli::command(), "floodgate", out);
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum as _;
    use clap_complete::Shell;

    fn script(shell: Shell) -> String {
        let mut out = Vec::new();
        super::write(shell, &mut out);
        String::from_utf8(out).unwrap()
    }

    /// Subcommands, nested subcommands and flags all reach the script.
    #[test]
    fn bash_completes_subcommands_and_flags() {
        let s = script(Shell::Bash);
        assert!(s.starts_with("_floodgate() {"), "{}", &s[..s.len().min(200)]);
        for word in ["blocklist", "allowlist", "synproxy", "completions", "--interface", "--replace", "--ttl"]
        {
            assert!(s.contains(word), "bash completion lacks {word}");
        }
        assert!(s.contains("complete -F _floodgate"), "registers the function");
    }

    #[test]
    fn every_shell_gets_a_script() {
        for shell in Shell::value_variants() {
            let s = script(*shell);
            assert!(
                s.contains("blocklist") && s.contains("interface"),
                "{shell} lacks blocklist or --interface"
            );
        }
    }
}
