//! Writes the seed corpus, `corpus/<target>/<seed>`, and the dictionary `corpus/dict`
//! (or under the directory given), after checking that each seed does what it is meant
//! to.

use std::path::PathBuf;

use arepl_fuzz::seeds::{self, Seed};
use arepl_fuzz::{hello, session};

fn main() -> std::io::Result<()> {
    let root = std::env::args_os().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"),
        PathBuf::from,
    );
    for seed in seeds::frames() {
        let outcome = session::run(&seed.data);
        let clean = matches!(outcome, session::Outcome::Clean { applied: _ });
        assert_eq!(clean, seed.valid, "frames seed {}: {outcome:?}", seed.name);
    }
    for seed in seeds::handshake() {
        let summary = hello::run(&seed.data);
        let admitted = summary.admitted > 0 && summary.codec_error.is_none();
        assert_eq!(
            admitted, seed.valid,
            "handshake seed {}: {summary:?}",
            seed.name
        );
    }
    std::fs::write(root.join("dict"), seeds::dictionary())?;
    write(&root.join("frames"), seeds::frames())?;
    write(&root.join("handshake"), seeds::handshake())
}

/// Replaces `dir` with the seeds, so a seed renamed or dropped leaves no file behind.
fn write(dir: &PathBuf, seeds: Vec<Seed>) -> std::io::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    for seed in seeds {
        std::fs::write(dir.join(seed.name), seed.data)?;
    }
    Ok(())
}
