//! docs/guide-integrations.md stays compiled: every Rust block in it is, to the character, the
//! visible code of a rustdoc example in crates/deadpeer/src, which `cargo test --doc` compiles.

use std::path::{Path, PathBuf};

/// The visible code of every rustdoc example in `file` (hidden `# ` lines left out).
fn doc_examples(file: &Path) -> String {
    let source = std::fs::read_to_string(file).unwrap();
    let mut out = String::new();
    for line in source.lines() {
        let line = line.trim_start();
        let Some(doc) = line
            .strip_prefix("///")
            .or_else(|| line.strip_prefix("//!"))
        else {
            continue;
        };
        let doc = doc.strip_prefix(' ').unwrap_or(doc);
        if doc == "#" || doc.starts_with("# ") {
            continue;
        }
        out.push_str(doc);
        out.push('\n');
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_guide_block_is_a_compiled_rustdoc_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let guide = std::fs::read_to_string(root.join("docs/guide-integrations.md")).unwrap();
    let mut files = Vec::new();
    rust_files(&root.join("crates/deadpeer/src"), &mut files);
    let docs: Vec<String> = files.iter().map(|f| doc_examples(f)).collect();

    let blocks: Vec<&str> = guide
        .split("```rust\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap())
        .collect();
    assert!(blocks.len() >= 8, "{} blocks", blocks.len());
    for block in blocks {
        assert!(
            docs.iter().any(|d| d.contains(block)),
            "this block of docs/guide-integrations.md is no rustdoc example in \
             crates/deadpeer/src; put the same code on the item it uses:\n{block}"
        );
    }
}
