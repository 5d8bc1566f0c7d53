//! The house rules the compiler does not check, checked by a unit test over the crate's own
//! sources: no two files of one module import each other in a circle (STYLE.md "Leaf modules for
//! shared types"), and no module imports a module above it in the layering
//! cli → daemon → exec → download/notify → vb365/jobs → store/sim/schedule.
//!
//! A file's imports are read from its `use` declarations and inline paths (`super::x::…`,
//! `crate::module::x::…`, groups `{a, b::c}` expanded), outside comments and `#[cfg(test)]`
//! modules. A path names the deepest file of the module it reaches. This is a reader of our own
//! code, not a Rust parser: it only has to be right about how this crate writes imports.

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    /// Files of one top-level module, by module path inside it (`""` for its `mod.rs`).
    fn files_of(dir: &Path) -> BTreeMap<String, PathBuf> {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).expect("source directory") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let rel = path.strip_prefix(dir).expect("inside").with_extension("");
                    let mut parts: Vec<String> = rel
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect();
                    if parts.last().is_some_and(|l| l == "mod") {
                        parts.pop();
                    }
                    out.insert(parts.join("::"), path);
                }
            }
        }
        out
    }

    /// The source without comments and without `#[cfg(test)]` modules (they may import freely).
    fn code(path: &Path) -> String {
        strip(&std::fs::read_to_string(path).expect("source file"))
    }

    fn strip(text: &str) -> String {
        let text = match text.find("#[cfg(test)]\nmod ") {
            Some(at) => &text[..at],
            None => text,
        };
        text.lines()
            .map(|l| match l.find("//") {
                Some(at) if !l[..at].contains('"') => &l[..at],
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Expands `prefix::{a, b::{c, d}}` into `prefix::a prefix::b::c prefix::b::d`.
    fn expand_groups(src: &str) -> String {
        let mut s = src.to_string();
        // The innermost group: a `{` followed by no other brace before its `}`.
        while let Some(close) = s.find('}') {
            let Some(open) = s[..close].rfind('{') else {
                break;
            };
            if !s[..open].ends_with("::") {
                // Not a use group (a block): blank the braces so the search moves on.
                s.replace_range(open..=open, " ");
                s.replace_range(close..=close, " ");
                continue;
            }
            let prefix_start = s[..open - 2]
                .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map_or(0, |i| i + 1);
            let prefix = s[prefix_start..open - 2].to_string();
            let expanded = s[open + 1..close]
                .split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(|x| format!("{prefix}::{x}"))
                .collect::<Vec<_>>()
                .join(" ");
            s.replace_range(prefix_start..=close, &expanded);
        }
        s
    }

    /// Module-internal targets of the paths in `file` (module path `at` inside `module`).
    fn imports(
        module: &str,
        at: &str,
        src: &str,
        files: &BTreeMap<String, PathBuf>,
    ) -> BTreeSet<String> {
        let src = expand_groups(src);
        let here: Vec<&str> = if at.is_empty() {
            vec![]
        } else {
            at.split("::").collect()
        };
        let mut out = BTreeSet::new();
        let tokens = src.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'));
        for token in tokens {
            let segs: Vec<&str> = token.split("::").filter(|s| !s.is_empty()).collect();
            let (base, rest): (Vec<&str>, &[&str]) = match segs.as_slice() {
                ["crate", m, rest @ ..] if *m == module => (vec![], rest),
                ["self", rest @ ..] => (here.clone(), rest),
                [first, ..] if *first == "super" => {
                    let ups = segs.iter().take_while(|s| **s == "super").count();
                    // A file `a::b` is module `a::b`; its `super` is `a` (mod.rs files alike).
                    if ups > here.len() {
                        continue;
                    }
                    (here[..here.len() - ups].to_vec(), &segs[ups..])
                }
                _ => continue,
            };
            let full: Vec<&str> = base.iter().copied().chain(rest.iter().copied()).collect();
            // The deepest file the path reaches (a path may go on into items of that file).
            let target = (0..=full.len())
                .rev()
                .map(|k| full[..k].join("::"))
                .find(|cand| files.contains_key(cand));
            if let Some(t) = target
                && t != at
                && !at.starts_with(&format!("{t}::"))
                && !t.is_empty()
            {
                out.insert(t);
            }
        }
        // A parent re-exporting from its child depends on it (`pub use child::…`).
        for line in src.lines() {
            let l = line.trim_start();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            let l = l.strip_prefix("pub(crate) ").unwrap_or(l);
            if let Some(rest) = l.strip_prefix("use ") {
                let child = rest.split("::").next().unwrap_or("");
                let cand = if at.is_empty() {
                    child.to_string()
                } else {
                    format!("{at}::{child}")
                };
                if files.contains_key(&cand) {
                    out.insert(cand);
                }
            }
        }
        out
    }

    /// Strongly connected components of more than one file (Tarjan).
    fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
        struct State<'a> {
            edges: &'a BTreeMap<String, BTreeSet<String>>,
            index: BTreeMap<&'a str, usize>,
            low: BTreeMap<&'a str, usize>,
            stack: Vec<&'a str>,
            next: usize,
            out: Vec<Vec<String>>,
        }
        fn visit<'a>(s: &mut State<'a>, v: &'a str) {
            s.index.insert(v, s.next);
            s.low.insert(v, s.next);
            s.next += 1;
            s.stack.push(v);
            for w in s.edges.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let lw = s.low[w];
                    let lv = s.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if s.stack.contains(&w) {
                    let iw = s.index[w];
                    let lv = s.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if s.low[v] == s.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = s.stack.pop() {
                    comp.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    s.out.push(comp);
                }
            }
        }
        let mut s = State {
            edges,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            next: 0,
            out: Vec::new(),
        };
        for v in edges.keys() {
            if !s.index.contains_key(v.as_str()) {
                visit(&mut s, v);
            }
        }
        s.out
    }

    fn src() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
    }

    fn modules() -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(src())
            .expect("src")
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    }

    fn edges_of(module: &str) -> BTreeMap<String, BTreeSet<String>> {
        let files = files_of(&src().join(module));
        files
            .iter()
            .map(|(at, path)| (at.clone(), imports(module, at, &code(path), &files)))
            .collect()
    }

    #[test]
    fn no_two_files_of_a_module_import_each_other_in_a_circle() {
        let mut found = Vec::new();
        for m in modules() {
            for c in cycles(&edges_of(&m)) {
                found.push(format!("{m}: {}", c.join(" ⇄ ")));
            }
        }
        assert!(found.is_empty(), "import circles: {found:#?}");
    }

    /// The checker sees what it must: a circle through a grouped import, through `super::super`,
    /// and a parent re-exporting a child that imports the parent.
    #[test]
    fn the_circle_checker_finds_the_shapes_this_crate_writes() {
        let files: BTreeMap<String, PathBuf> = ["", "a", "b", "c", "c::d"]
            .iter()
            .map(|f| (f.to_string(), PathBuf::new()))
            .collect();
        let mut edges = BTreeMap::new();
        edges.insert(
            "a".to_string(),
            imports("m", "a", "use super::{b, c::d::Item};", &files),
        );
        edges.insert(
            "b".to_string(),
            imports("m", "b", "fn f() { crate::m::a::g() }", &files),
        );
        edges.insert(
            "c::d".to_string(),
            imports("m", "c::d", "use super::super::a;", &files),
        );
        edges.insert(String::new(), imports("m", "", "pub use a::Thing;", &files));
        assert_eq!(edges["a"], ["b".to_string(), "c::d".to_string()].into());
        let found = cycles(&edges);
        assert_eq!(
            found,
            vec![vec!["a".to_string(), "b".to_string(), "c::d".to_string()]]
        );
        // A block is not a group, and a comment is not an import.
        assert!(imports("m", "b", &strip("if x { y } // super::a"), &files).is_empty());
    }

    /// Upward imports break the layering (lib.rs `# Layout`): the modules each one may use.
    #[test]
    fn no_module_imports_one_above_it_in_the_layering() {
        // From the top: a module may import the ones on later lines of this list.
        const LAYERS: &[&[&str]] = &[
            &["cli"],
            &["daemon"],
            &["exec"],
            &["download", "notify"],
            &["vb365", "jobs"],
            &["store", "sim", "schedule", "config"],
        ];
        let layer = |m: &str| LAYERS.iter().position(|l| l.contains(&m));
        let mut found = Vec::new();
        for m in modules() {
            let Some(mine) = layer(&m) else { continue };
            for (file, path) in files_of(&src().join(&m)) {
                let text = code(&path);
                for other in modules() {
                    let Some(theirs) = layer(&other) else {
                        continue;
                    };
                    if theirs < mine && text.contains(&format!("crate::{other}::")) {
                        found.push(format!("{m}/{file} imports {other}"));
                    }
                }
            }
        }
        assert!(found.is_empty(), "upward imports: {found:#?}");
    }
}
