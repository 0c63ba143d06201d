//! docs/keda-conformance.md is kept honest: every row says `same`, `differs` or `not supported`,
//! and every test a row names exists as a function in the file it names, so a row cannot
//! outlive the test behind it. No cluster is needed.

use integration_tests::workspace_root;

/// One row of a conformance table: the feature, ebb's state, how, and the tests.
struct Row {
    line: usize,
    feature: String,
    state: String,
    tests: String,
}

/// The rows of every 4-column table in `text` (header and separator rows left out).
fn rows(text: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if !line.starts_with('|') || line.starts_with("| ---") || line.starts_with("|---") {
            continue;
        }
        let cells: Vec<String> = split_cells(line);
        if cells.len() != 4 || cells[0] == "KEDA feature" {
            continue;
        }
        rows.push(Row {
            line: i + 1,
            feature: cells[0].clone(),
            state: cells[1].clone(),
            tests: cells[3].clone(),
        });
    }
    rows
}

/// A table row's cells, `|` inside backticks kept (a formula may hold `||`).
fn split_cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut in_code = false;
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' => {
                in_code = !in_code;
                cell.push(c);
            }
            '\\' if chars.peek() == Some(&'|') => {
                cell.push('|');
                chars.next();
            }
            '|' if !in_code => cells.push(std::mem::take(&mut cell).trim().to_string()),
            _ => cell.push(c),
        }
    }
    cells.push(cell.trim().to_string());
    cells
}

/// The `path::function` references in a test cell.
fn references(cell: &str) -> Vec<(String, String)> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|r| {
            let (path, function) = r.rsplit_once("::")?;
            Some((path.to_string(), function.to_string()))
        })
        .collect()
}

#[test]
fn every_row_has_a_state_and_names_tests_that_exist() {
    let root = workspace_root();
    let text = std::fs::read_to_string(root.join("docs/keda-conformance.md"))
        .expect("docs/keda-conformance.md");
    let rows = rows(&text);
    assert!(rows.len() > 100, "only {} rows", rows.len());
    let mut problems = Vec::new();
    for row in &rows {
        let at = format!("docs/keda-conformance.md:{} ({})", row.line, row.feature);
        match row.state.as_str() {
            "not supported" => {
                if row.tests != "not supported" {
                    problems.push(format!("{at}: a feature not supported names no test"));
                }
            }
            "same" | "differs" => {
                let refs = references(&row.tests);
                if refs.is_empty() {
                    problems.push(format!("{at}: names no test (`path::function`)"));
                }
                for (path, function) in refs {
                    let source = std::fs::read_to_string(root.join(&path)).unwrap_or_default();
                    if !source.contains(&format!("fn {function}(")) {
                        problems.push(format!("{at}: no fn {function} in {path}"));
                    }
                }
            }
            other => problems.push(format!(
                "{at}: state {other:?}; expected same, differs or not supported"
            )),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    for (doc, link) in [
        ("README.md", "docs/keda-conformance.md"),
        ("docs/migrating-from-keda.md", "(keda-conformance.md)"),
    ] {
        let text = std::fs::read_to_string(root.join(doc)).expect(doc);
        assert!(text.contains(link), "{doc} links the conformance table");
    }
}

#[test]
fn cells_and_references_are_read_as_written() {
    assert_eq!(
        split_cells("| `a || b` | same | x \\| y | `f.rs::t` |"),
        ["`a || b`", "same", "x | y", "`f.rs::t`"]
    );
    assert_eq!(
        references("`operator/src/auth.rs::one`, `integration-tests/tests/suite/x.rs::two`"),
        [
            ("operator/src/auth.rs".to_string(), "one".to_string()),
            (
                "integration-tests/tests/suite/x.rs".to_string(),
                "two".to_string()
            )
        ]
    );
    assert!(references("not supported").is_empty());
}
