//! `arepl-docs OUTDIR`: writes the man pages (`OUTDIR/man`) and shell completions
//! (`OUTDIR/completions`) of `arepl` and `replicad`, and lists the files it wrote.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: arepl-docs OUTDIR";

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let out_dir = match (args.next(), args.next()) {
        (Some(dir), None) if !dir.to_string_lossy().starts_with('-') => PathBuf::from(dir),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match arepl_docs::generate(&out_dir) {
        Ok(generated) => {
            for path in generated.man_pages.iter().chain(&generated.completions) {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("arepl-docs: writing to {}: {err}", out_dir.display());
            ExitCode::FAILURE
        }
    }
}
