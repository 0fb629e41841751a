//! Generates the pages and completions into a temporary directory and checks that each
//! file is there and names every subcommand (and each subcommand page every option).

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use clap::Command;

/// Reads a generated file, with roff's escaped hyphens (`\-`) made plain.
fn read(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    assert!(!text.trim().is_empty(), "{} is empty", path.display());
    text.replace("\\-", "-")
}

fn visible_subcommands(cmd: &Command) -> Vec<&Command> {
    cmd.get_subcommands()
        .filter(|sub| !sub.is_hide_set() && sub.get_name() != "help")
        .collect()
}

#[test]
fn every_command_gets_pages_and_completions_naming_its_subcommands() {
    let out = tempfile::tempdir().unwrap();
    let generated = arepl_docs::generate(out.path()).unwrap();
    let man = out.path().join("man");
    let completions = out.path().join("completions");

    let commands = arepl_docs::commands();
    let names: Vec<&str> = commands.iter().map(Command::get_name).collect();
    assert_eq!(names, ["arepl", "replicad"]);

    let mut expected_pages = BTreeSet::new();
    let mut expected_completions = BTreeSet::new();
    for cmd in &commands {
        let name = cmd.get_name();
        let page = read(&man.join(format!("{name}.8")));
        assert!(page.contains(&format!(".TH {name} 8")), "{name}.8: {page}");
        expected_pages.insert(man.join(format!("{name}.8")));

        let scripts = [
            completions.join(format!("{name}.bash")),
            completions.join(format!("_{name}")),
            completions.join(format!("{name}.fish")),
        ];
        let scripts: Vec<String> = scripts
            .iter()
            .map(|path| {
                expected_completions.insert(path.clone());
                read(path)
            })
            .collect();

        for sub in visible_subcommands(cmd) {
            let sub_name = sub.get_name();
            let page_name = format!("{name}-{sub_name}");
            assert!(
                page.contains(&format!("{page_name}(8)")),
                "{name}.8 does not point to {page_name}(8)"
            );
            let sub_page = read(&man.join(format!("{page_name}.8")));
            assert!(
                sub_page.contains(&format!(".TH {page_name} 8")),
                "{sub_page}"
            );
            expected_pages.insert(man.join(format!("{page_name}.8")));
            for arg in sub.get_arguments() {
                if let Some(long) = arg.get_long() {
                    assert!(
                        sub_page.contains(&format!("--{long}")),
                        "{page_name}.8 does not mention --{long}"
                    );
                }
            }
            for script in &scripts {
                assert!(
                    script.contains(sub_name),
                    "a {name} completion lacks {sub_name}"
                );
            }
        }
    }

    // The subcommands this project documents today, so that losing them all fails here.
    let arepl: Vec<&str> = visible_subcommands(&commands[0])
        .into_iter()
        .map(Command::get_name)
        .collect();
    for sub in ["create", "remove", "status"] {
        assert!(arepl.contains(&sub), "arepl has no {sub} subcommand");
    }
    assert!(man.join("replicad-status.8").is_file());

    let pages: BTreeSet<_> = generated.man_pages.into_iter().collect();
    let scripts: BTreeSet<_> = generated.completions.into_iter().collect();
    assert_eq!(pages, expected_pages);
    assert_eq!(scripts, expected_completions);
}
