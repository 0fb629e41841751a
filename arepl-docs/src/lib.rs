//! Man pages and shell completions for the installed commands, generated from the very
//! clap definitions the binaries parse their arguments with, so the two cannot drift.
//!
//! Layout of the output directory:
//!
//! - `man/NAME.8` for each command and `man/NAME-SUB.8` for each of its subcommands
//!   (section 8: both are administration tools, installed in `sbin`);
//! - `completions/NAME.bash`, `completions/_NAME` (zsh) and `completions/NAME.fish`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap::Command;
use clap_complete::Shell;
use clap_mangen::Man;

/// Manual section of every page: system administration commands.
pub const MAN_SECTION: &str = "8";

/// Shells that get a completion script.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// The documented commands, as their binaries define them.
pub fn commands() -> Vec<Command> {
    vec![dmtarget_cli::cli::command(), replicad::cli::command()]
}

/// The files [`generate`] wrote.
#[derive(Debug, Default)]
pub struct Generated {
    pub man_pages: Vec<PathBuf>,
    pub completions: Vec<PathBuf>,
}

/// Writes every man page and completion script under `out_dir` (created if missing;
/// files already there with the same names are replaced, others are left alone).
pub fn generate(out_dir: &Path) -> io::Result<Generated> {
    let man_dir = out_dir.join("man");
    let completion_dir = out_dir.join("completions");
    fs::create_dir_all(&man_dir)?;
    fs::create_dir_all(&completion_dir)?;

    let mut generated = Generated::default();
    for cmd in commands() {
        // As `clap_mangen::generate_to`, but in section 8: building the command names
        // each subcommand `parent-sub`, which is also its page's name.
        let mut built = cmd.clone().disable_help_subcommand(true);
        built.build();
        write_man_pages(&built, &man_dir, &mut generated.man_pages)?;

        for shell in SHELLS {
            let mut cmd = cmd.clone();
            let name = cmd.get_name().to_owned();
            let path = clap_complete::generate_to(shell, &mut cmd, name, &completion_dir)?;
            generated.completions.push(path);
        }
    }
    Ok(generated)
}

/// The page of `cmd`, then those of its visible subcommands, depth first.
fn write_man_pages(cmd: &Command, dir: &Path, written: &mut Vec<PathBuf>) -> io::Result<()> {
    let page = Man::new(cmd.clone())
        .section(MAN_SECTION)
        .manual("dm-arepl")
        .source(format!("dm-arepl {}", env!("CARGO_PKG_VERSION")));
    written.push(page.generate_to(dir)?);
    for sub in cmd.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        write_man_pages(sub, dir, written)?;
    }
    Ok(())
}
