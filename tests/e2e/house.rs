//! The house rules a reviewer would otherwise check by eye, over every crate's
//! sources: no two files import each other, directly or around a circle; at most
//! five Rust functions over 80 lines, each saying why; a README that fits on a screen.
//!
//! "Imports" are the paths a file names, in `use` lines or inline: `crate::a::b`,
//! `super::x`, `self::y`. A path resolves to the file of the deepest module it names,
//! through the crate root's `pub use` re-exports, so `crate::CacheError` points at
//! the file that defines it, not at `lib.rs`. A file's own `#[cfg(test)] mod tests`
//! naming the file itself (`use super::*`) is not an edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longer functions need a `// Long: <why>` line comment above them (above the doc
/// comment and attributes is fine).
const MAX_FN_LINES: usize = 80;
const MAX_LONG_FNS: usize = 5;
const MAX_README_LINES: usize = 150;

/// The workspace's source trees (folders whose `lib.rs` roots a module tree).
fn crate_sources() -> Vec<PathBuf> {
    let root = e2e::repo_root();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    let members = manifest
        .split("members")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .expect("workspace members");
    members
        .split('"')
        .skip(1)
        .step_by(2)
        .map(|m| root.join(m))
        .filter_map(|dir| {
            let src = dir.join("src");
            src.join("lib.rs").exists().then_some(src)
        })
        .collect()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("readable folder").flatten() {
            let p = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if p.is_dir() && name != "target" && !name.starts_with('.') {
                stack.push(p);
            } else if name.ends_with(".rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `a::b` for `src/a/b.rs` or `src/a/b/mod.rs`; empty for `lib.rs`. None for
/// files outside the library's module tree (`main.rs`, `bin/`).
fn module_path(src: &Path, file: &Path) -> Option<Vec<String>> {
    let rel = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.first().is_some_and(|p| p == "bin") || parts == ["main.rs"] {
        return None;
    }
    let last = parts.pop()?;
    match last.as_str() {
        "lib.rs" if parts.is_empty() => {}
        "mod.rs" => {}
        _ => parts.push(last.trim_end_matches(".rs").to_string()),
    }
    Some(parts)
}

/// Source without comments and string literals, so neither adds imports or braces.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    if b[i] == b'\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
                i += 2;
            }
            b'r' if matches!(b.get(i + 1), Some(b'"') | Some(b'#'))
                && !b[i.saturating_sub(1)].is_ascii_alphanumeric() =>
            {
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                let close: String = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let body = i + 2 + hashes;
                let end = text[body..].find(&close).map_or(b.len(), |e| body + e);
                out.push_str("\"\"");
                out.extend(text[body..end].chars().filter(|&c| c == '\n'));
                i = end + close.len();
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    } else if b[i] == b'\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
                out.push_str("\"\"");
                i += 1;
            }
            // A char literal ('{'), not a lifetime ('a).
            b'\'' if b.get(i + 2) == Some(&b'\'') || b.get(i + 1) == Some(&b'\\') => {
                let end = text[i + 1..].find('\'').map_or(b.len(), |e| i + 2 + e);
                out.push_str("' '");
                i = end;
            }
            c => {
                out.push(c as char);
                i += 1;
            }
        }
    }
    out
}

/// Expands one `use` tree (`crate::{a, b::{c, self}}`) into full paths.
fn expand_use(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap_or(&tree);
        return vec![path.trim_end_matches("::self").to_string()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|s| !s.is_empty())
        .flat_map(|item| {
            expand_use(item)
                .into_iter()
                .map(|p| match p.as_str() {
                    "self" => prefix.trim_end_matches("::").to_string(),
                    _ => format!("{prefix}{p}"),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every module path a file names: its `use` trees and inline `crate::`/`super::`/`self::` paths.
fn named_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        rest = &rest[at + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let end = rest.find(';').unwrap_or(rest.len());
        paths.extend(expand_use(&rest[..end]));
    }
    let b = code.as_bytes();
    for key in ["crate::", "super::", "self::"] {
        for (at, _) in code.match_indices(key) {
            if at > 0
                && (b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_' || b[at - 1] == b':')
            {
                continue;
            }
            let end = code[at..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |e| at + e);
            // `crate::{..}` is a use tree, expanded above.
            if end > at + key.len() {
                paths.push(code[at..end].trim_end_matches(':').to_string());
            }
        }
    }
    paths
}

/// Splits `mod name { ... }` blocks out of a file's code: (the rest, the blocks' bodies).
fn inline_modules(code: &str) -> (String, Vec<String>) {
    let mut outer = String::new();
    let mut inner = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("mod ") {
        let before = rest[..at].chars().last();
        let after = &rest[at + 4..];
        let name_end = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let opens = after[name_end..].trim_start().starts_with('{');
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') || !opens {
            outer.push_str(&rest[..at + 4]);
            rest = after;
            continue;
        }
        outer.push_str(&rest[..at]);
        let body_start = at + 4 + name_end + after[name_end..].find('{').expect("opens") + 1;
        let mut depth = 1;
        let mut end = rest.len();
        for (i, c) in rest[body_start..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = body_start + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        inner.push(rest[body_start..end].to_string());
        rest = &rest[(end + 1).min(rest.len())..];
    }
    outer.push_str(rest);
    (outer, inner)
}

/// One crate's module tree: module path -> file, and its re-exports.
struct Tree {
    files: BTreeMap<Vec<String>, PathBuf>,
    /// (module, name) -> the module path it was re-exported from.
    reexports: BTreeMap<(Vec<String>, String), Vec<String>>,
}

impl Tree {
    /// Absolute segments of `path` as named in module `from`.
    fn absolute(&self, from: &[String], path: &str) -> Option<Vec<String>> {
        let mut segs = path.split("::").filter(|s| !s.is_empty());
        let mut base: Vec<String> = match segs.next()? {
            "crate" => Vec::new(),
            "self" => from.to_vec(),
            "super" => from[..from.len().checked_sub(1)?].to_vec(),
            _ => return None,
        };
        for s in segs {
            if s == "super" {
                base.pop()?;
            } else {
                base.push(s.to_string());
            }
        }
        Some(base)
    }

    /// The module file that defines what `abs` names.
    fn resolve(&self, abs: &[String], depth: usize) -> Option<Vec<String>> {
        let n = (0..=abs.len())
            .rev()
            .find(|&n| self.files.contains_key(&abs[..n]))?;
        let module = abs[..n].to_vec();
        if let Some(name) = abs.get(n) {
            if let Some(src) = self.reexports.get(&(module.clone(), name.clone())) {
                if depth < 8 {
                    let mut next = src.clone();
                    next.push(name.clone());
                    return self.resolve(&next, depth + 1);
                }
            }
        }
        Some(module)
    }
}

fn build_tree(src: &Path) -> (Tree, BTreeMap<Vec<String>, String>) {
    let mut files = BTreeMap::new();
    let mut code = BTreeMap::new();
    for file in rust_files(src) {
        if let Some(m) = module_path(src, &file) {
            let text = std::fs::read_to_string(&file).expect("readable source");
            code.insert(m.clone(), code_only(&text));
            files.insert(m, file);
        }
    }
    let mut tree = Tree {
        files,
        reexports: BTreeMap::new(),
    };
    for (m, text) in &code {
        for line in text.split(';') {
            let line = line.trim();
            let Some(body) = line
                .strip_prefix("pub use ")
                .or_else(|| line.strip_prefix("pub(crate) use "))
            else {
                continue;
            };
            for path in expand_use(body) {
                let path = match path.split("::").next() {
                    Some("crate" | "self" | "super") => path,
                    _ => format!("self::{path}"),
                };
                let Some(abs) = tree.absolute(m, &path) else {
                    continue;
                };
                if let Some((name, module)) = abs.split_last() {
                    tree.reexports
                        .insert((m.clone(), name.clone()), module.to_vec());
                }
            }
        }
    }
    (tree, code)
}

/// file -> files it imports.
fn import_graph(src: &Path) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let (tree, code) = build_tree(src);
    let mut graph: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for (m, text) in &code {
        let from = tree.files[m].clone();
        let mut to = BTreeSet::new();
        let (outer, inline) = inline_modules(text);
        // In an inline `mod tests { use super::*; }`, `super` is this file.
        let inner = inline
            .iter()
            .flat_map(|t| named_paths(&t.replace("super::", "self::")));
        for path in named_paths(&outer).into_iter().chain(inner) {
            let path = match path.split("::").next() {
                Some("crate" | "self" | "super") => path,
                // `use child::X` inside module m.
                Some(first)
                    if tree
                        .files
                        .contains_key(&[m.clone(), vec![first.into()]].concat()) =>
                {
                    format!("self::{path}")
                }
                _ => continue,
            };
            let Some(target) = tree
                .absolute(m, &path)
                .and_then(|abs| tree.resolve(&abs, 0))
            else {
                continue;
            };
            if &target != m {
                to.insert(tree.files[&target].clone());
            }
        }
        graph.insert(from, to);
    }
    graph
}

/// Circles of the graph (its strongly connected components of two or more files).
fn circles(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    let reach = |start: &PathBuf| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start.clone()];
        while let Some(n) = stack.pop() {
            for next in graph.get(&n).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&PathBuf, BTreeSet<PathBuf>> =
        graph.keys().map(|n| (n, reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for n in graph.keys() {
        if done.contains(n) || !reaches[n].contains(n) {
            continue;
        }
        let component: Vec<PathBuf> = graph
            .keys()
            .filter(|m| reaches[n].contains(*m) && reaches[*m].contains(n))
            .cloned()
            .collect();
        done.extend(component.iter().cloned());
        out.push(component);
    }
    out
}

fn relative(p: &Path) -> String {
    p.strip_prefix(e2e::repo_root())
        .unwrap_or(p)
        .display()
        .to_string()
}

#[test]
fn no_two_files_import_each_other() {
    let mut found = Vec::new();
    for src in crate_sources() {
        for circle in circles(&import_graph(&src)) {
            let names: Vec<String> = circle.iter().map(|p| relative(p)).collect();
            found.push(names.join(" <-> "));
        }
    }
    assert!(
        found.is_empty(),
        "import circles (move what both need into a module beneath them):\n{}",
        found.join("\n")
    );
}

/// A function: its name, first line (1-based) and length in lines.
fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let t = t
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub(super) ")
            .trim_start_matches("pub ")
            .trim_start_matches("const ")
            .trim_start_matches("async ")
            .trim_start_matches("unsafe ");
        let Some(rest) = t.strip_prefix("fn ") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // The body opens at the first `{` after the signature; a `;` first means no body.
        let mut depth = 0usize;
        let mut opened = false;
        'scan: for (j, l) in lines.iter().enumerate().skip(i) {
            for c in l.chars() {
                match c {
                    ';' if !opened => break 'scan,
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => {
                        depth = depth.saturating_sub(1);
                        if opened && depth == 0 {
                            out.push((name.clone(), i + 1, j - i + 1));
                            break 'scan;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

/// Whether the comment block above line `first` (1-based), past attributes and doc
/// comments, holds a `// Long:` reason.
fn says_why_long(text: &str, first: usize) -> bool {
    text.lines()
        .take(first - 1)
        .collect::<Vec<_>>()
        .iter()
        .rev()
        .map(|l| l.trim())
        .take_while(|l| l.starts_with("//") || l.starts_with("#["))
        .any(|l| l.starts_with("// Long:"))
}

#[test]
fn few_long_functions_and_each_says_why() {
    let root = e2e::repo_root();
    let mut dirs: Vec<PathBuf> = crate_sources()
        .into_iter()
        .filter_map(|s| s.parent().map(Path::to_path_buf))
        .collect();
    dirs.push(root.join("tests"));
    dirs.sort();
    dirs.dedup();
    let mut long = Vec::new();
    let mut unexplained = Vec::new();
    for file in dirs.iter().flat_map(|d| rust_files(d)) {
        let text = std::fs::read_to_string(&file).expect("readable source");
        for (name, line, len) in functions(&code_only(&text)) {
            if len > MAX_FN_LINES {
                let at = format!("{}:{line} {name} ({len} lines)", relative(&file));
                if !says_why_long(&text, line) {
                    unexplained.push(at.clone());
                }
                long.push(at);
            }
        }
    }
    assert!(
        long.len() <= MAX_LONG_FNS,
        "{} functions are over {MAX_FN_LINES} lines (at most {MAX_LONG_FNS}); split some:\n{}",
        long.len(),
        long.join("\n")
    );
    assert!(
        unexplained.is_empty(),
        "functions over {MAX_FN_LINES} lines need a `// Long: <why>` comment above them:\n{}",
        unexplained.join("\n")
    );
}

#[test]
fn the_readme_fits_on_a_screen() {
    let readme = std::fs::read_to_string(e2e::repo_root().join("README.md")).expect("README.md");
    let n = readme.lines().count();
    assert!(
        n <= MAX_README_LINES,
        "README.md has {n} lines (at most {MAX_README_LINES}): move reference material to docs/"
    );
}

/// The checks themselves must see what they look for.
#[test]
fn the_checks_find_a_planted_circle_and_a_long_function() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    std::fs::write(
        src.join("lib.rs"),
        "mod a;\nmod b;\nmod c;\npub use c::Shared;\n",
    )
    .unwrap();
    std::fs::write(src.join("a.rs"), "use crate::b::f;\npub fn g() { f() }\n").unwrap();
    std::fs::write(
        src.join("b.rs"),
        "use crate::Shared;\npub fn f() { crate::a::g() }\n",
    )
    .unwrap();
    std::fs::write(
        src.join("c.rs"),
        "pub struct Shared;\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n",
    )
    .unwrap();
    let found = circles(&import_graph(src));
    assert_eq!(found.len(), 1, "{found:?}");
    let names: Vec<String> = found[0]
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["a.rs", "b.rs"],
        "c.rs (reached through lib.rs) is beneath both"
    );

    std::fs::write(src.join("c.rs"), "use super::b;\npub struct Shared;\n").unwrap();
    let found = circles(&import_graph(src));
    assert_eq!(
        found[0].len(),
        3,
        "b -> c (via the re-export) -> b: {found:?}"
    );

    let body = "    let x = \"}\";\n".repeat(MAX_FN_LINES);
    let text = format!("// Long: a test\nfn long() {{\n{body}}}\nfn short() {{ }}\n");
    let fns = functions(&code_only(&text));
    assert_eq!(fns[0], ("long".to_string(), 2, MAX_FN_LINES + 2));
    assert_eq!(fns[1].0, "short");
    assert!(says_why_long(&text, 2));
    assert!(!says_why_long(&text, fns[1].1));
}
