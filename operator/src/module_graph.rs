//! A test of the crate's own structure: no two modules depend on each other, directly or
//! through others, so that data flows one way (watch -> controller -> scale loop -> metric
//! store -> metrics API and scale writes) and any module can be read without its dependents.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every module of `src` (`a::b` for `src/a/b.rs` or `src/a/b/mod.rs`) and its source, tests
/// left out.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let Some(rel) = path
                .strip_prefix(src)
                .ok()
                .and_then(|p| p.to_str())
                .and_then(|p| p.strip_suffix(".rs"))
            else {
                continue;
            };
            if rel == "main" || rel == "lib" {
                continue;
            }
            let name = rel.trim_end_matches("/mod").replace('/', "::");
            let text = std::fs::read_to_string(&path).expect("read module");
            let code = text
                .split("#[cfg(test)]")
                .next()
                .unwrap_or_default()
                .to_string();
            found.insert(name, code);
        }
    }
    found
}

/// The longest module named by a path's start (`a::b::Item` -> `a::b`).
fn resolve<'a>(modules: &'a BTreeMap<String, String>, path: &[&str]) -> Option<&'a str> {
    (1..=path.len())
        .rev()
        .find_map(|n| modules.get_key_value(&path[..n].join("::")))
        .map(|(k, _)| k.as_str())
}

/// The modules each module names through `crate::` or `super::` paths.
fn edges(modules: &BTreeMap<String, String>) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, code) in modules {
        let parent: Vec<&str> = name.split("::").collect();
        let parent = &parent[..parent.len() - 1];
        let mut add = |path: Vec<&str>| {
            if let Some(target) = resolve(modules, &path)
                && target != name
                && !name.starts_with(&format!("{target}::"))
            {
                edges.entry(name).or_default().insert(target);
            }
        };
        for (i, _) in code.match_indices("crate::") {
            add(path_at(&code[i + "crate::".len()..]));
        }
        for (i, _) in code.match_indices("super::") {
            let mut path = parent.to_vec();
            path.extend(path_at(&code[i + "super::".len()..]));
            add(path);
        }
        // `use crate::{a, b::c}`
        for (i, _) in code.match_indices("use crate::{") {
            let list = &code[i + "use crate::{".len()..];
            let list = &list[..list.find('}').unwrap_or(0)];
            for item in list.split(',') {
                add(path_at(item.trim()));
            }
        }
    }
    edges
}

/// The `a::b::c` path at the start of `text`.
fn path_at(text: &str) -> Vec<&str> {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(text.len());
    text[..end].split("::").filter(|s| !s.is_empty()).collect()
}

/// A module that reaches itself again, with the way round, if any.
fn cycle<'a>(edges: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Option<Vec<&'a str>> {
    fn visit<'a>(
        at: &'a str,
        edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(start) = path.iter().position(|m| *m == at) {
            let mut way = path[start..].to_vec();
            way.push(at);
            return Some(way);
        }
        if done.contains(at) {
            return None;
        }
        path.push(at);
        for next in edges.get(at).into_iter().flatten() {
            if let Some(way) = visit(next, edges, path, done) {
                return Some(way);
            }
        }
        path.pop();
        done.insert(at);
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|start| visit(start, edges, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_depends_on_itself_through_others() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    assert!(modules.contains_key("controller::reconcile"), "{modules:?}");
    let edges = edges(&modules);
    // The edges are read: the scale loop publishes to the store, the controller's steps use
    // their context (through `super::`).
    assert!(edges["scale::task"].contains("metric_store"), "{edges:?}");
    assert!(edges["controller::reconcile"].contains("controller::context"));
    // Both the modules and the top-level ones.
    assert_eq!(cycle(&edges), None, "a module cycle");
    let mut top: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (from, to) in &edges {
        let from = from.split("::").next().unwrap_or(from);
        for to in to {
            let to = to.split("::").next().unwrap_or(to);
            if from != to {
                top.entry(from).or_default().insert(to);
            }
        }
    }
    assert_eq!(cycle(&top), None, "a cycle between top-level modules");
    // The check finds a cycle when there is one.
    let mut looped = edges.clone();
    looped
        .entry("metric_store")
        .or_default()
        .insert("scale::evaluate");
    looped
        .entry("scale::evaluate")
        .or_default()
        .insert("metric_store");
    assert!(cycle(&looped).is_some());
}
