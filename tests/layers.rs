//! The runtime's layers point one way (see the crate docs' Layout section): the
//! top-level modules of `runtime/src` may name each other in one cycle only, the
//! real one between capabilities and the connection. This test reads every source
//! file, collects which top-level modules each one names through `crate::` paths
//! (comments excepted), and fails on any other cycle, printing it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The one cycle allowed: an imported capability holds the connection it came on,
/// and the connection's tables and commands hold capabilities.
const REAL_PAIR: [&str; 2] = ["cap", "connection"];

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to: `cap.rs` and `cap/serve.rs` are `cap`.
fn module_of(root: &Path, file: &Path) -> String {
    let first = file
        .strip_prefix(root)
        .expect("under root")
        .components()
        .next();
    let name = first.expect("a component").as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_string()
}

/// Top-level modules named in `text` through `crate::name`.
fn named(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if modules.contains(&name) {
                found.insert(name);
            }
        }
    }
    found
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        next: usize,
        found: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        for w in &s.graph[v] {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.stack.contains(&w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                component.insert(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

#[test]
fn top_level_modules_form_no_cycle_but_the_real_pair() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime/src");
    let lib = std::fs::read_to_string(root.join("lib.rs")).expect("lib.rs");
    let modules: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            l.strip_prefix("mod ")?
                .strip_suffix(';')
                .map(str::to_string)
        })
        .collect();
    assert!(modules.len() > 10, "found modules: {modules:?}");
    let mut files = Vec::new();
    source_files(&root, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for file in files {
        let module = module_of(&root, &file);
        let Some(edges) = graph.get_mut(&module) else {
            continue; // lib.rs itself
        };
        let text = std::fs::read_to_string(&file).expect("source file");
        edges.extend(named(&text, &modules).into_iter().filter(|m| *m != module));
    }
    let allowed: BTreeSet<String> = REAL_PAIR.iter().map(|s| s.to_string()).collect();
    let bad: Vec<_> = cycles(&graph)
        .into_iter()
        .filter(|c| *c != allowed)
        .collect();
    assert!(
        bad.is_empty(),
        "modules that name each other in a cycle: {bad:?}\nthe graph: {graph:#?}"
    );
}

#[test]
fn the_checker_sees_a_cycle() {
    let modules: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), named("use crate::b::X;", &modules));
    graph.insert("b".to_string(), named("let _ = crate::c::y();", &modules));
    graph.insert(
        "c".to_string(),
        named("// crate::a in a comment\nuse crate::a;", &modules),
    );
    let found = cycles(&graph);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].len(), 3);
}
