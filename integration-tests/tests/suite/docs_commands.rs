//! Every shell command in README.md, docs/ and the examples' and chart's READMEs, checked
//! against this build and the local cluster, so a reader can paste them:
//! - `cargo xtask ...`, `ebb ...` and `kubectl ebb ...` (the plugin): the subcommand and every
//!   flag exist (`--help` appended).
//! - `kubectl` reads (`get`, `describe`, `events`, `logs`, `auth can-i`, ...): run as written;
//!   the object may be missing here (the docs name a user's objects), nothing else may fail.
//! - `kubectl` writes (`apply`, `delete`, `patch`, `scale`, `rollout restart`, ...): run with
//!   `--dry-run=server`, files relative to the repository root.
//! - `helm install` / `helm upgrade` of the chart in this repository: `helm template` with the
//!   same arguments.
//! - Paths into the repository that a command names exist.
//!
//! Anything else (a third-party chart, `jq`, `export`, commands fed by a previous command's
//! output) is listed as not checked, with the reason.

use std::path::{Path, PathBuf};
use std::process::Command;

use integration_tests::{TestEnv, setup, workspace_root};

/// One command as the docs give it.
#[derive(Debug)]
struct DocCommand {
    /// `file:line`.
    at: String,
    /// The command, continuation lines joined.
    text: String,
}

/// The Markdown files whose commands are checked.
fn documents() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut files = vec![
        root.join("README.md"),
        root.join("deploy/helm/ebb/README.md"),
    ];
    for dir in ["docs", "examples"] {
        let mut found: Vec<PathBuf> = walk(&root.join(dir))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "md"))
            .collect();
        found.sort();
        files.extend(found);
    }
    files
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The commands in a Markdown text's `sh`, `bash`, `shell` and `console` code blocks.
fn commands_in(name: &str, markdown: &str) -> Vec<DocCommand> {
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(lang) = trimmed.strip_prefix("```") {
            in_block = !in_block && matches!(lang.trim(), "sh" | "bash" | "shell" | "console");
            continue;
        }
        if !in_block {
            continue;
        }
        let line = trimmed.strip_prefix("$ ").unwrap_or(trimmed);
        let (start, mut text) = pending.take().unwrap_or((i + 1, String::new()));
        if text.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        if let Some(continued) = line.strip_suffix('\\') {
            text.push_str(continued);
            text.push(' ');
            pending = Some((start, text));
            continue;
        }
        text.push_str(line);
        commands.push(DocCommand {
            at: format!("{name}:{start}"),
            text: text.trim().to_string(),
        });
    }
    commands
}

/// A command's words, shell-quoted words unquoted, a trailing `# comment` dropped.
fn words(text: &str) -> Result<Vec<String>, String> {
    let words = shlex::split(text).ok_or_else(|| format!("unbalanced quotes in {text:?}"))?;
    Ok(words
        .into_iter()
        .take_while(|w| !w.starts_with('#'))
        .collect())
}

/// How a command was checked.
enum Checked {
    Ran(String),
    NotChecked(&'static str),
}

/// Paths a command names inside the repository.
const REPO_DIRS: [&str; 7] = [
    "crds/",
    "deploy/",
    "docs/",
    "examples/",
    "operator/",
    "scalers/",
    "xtask/",
];

struct Checker<'a> {
    env: &'a TestEnv,
    root: PathBuf,
}

impl Checker<'_> {
    fn run(&self, program: &Path, args: &[String]) -> (bool, String) {
        match Command::new(program)
            .args(args)
            .current_dir(&self.root)
            .env("KUBECONFIG", &self.env.cluster.kubeconfig)
            .stdin(std::process::Stdio::null())
            .output()
        {
            Ok(out) => (
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            ),
            Err(e) => (false, format!("running {}: {e}", program.display())),
        }
    }

    fn check(&self, segment: &[String], fed: bool) -> Result<Checked, String> {
        let Some(program) = segment.first() else {
            return Ok(Checked::NotChecked("empty"));
        };
        for word in segment {
            let word = word.split('=').next_back().unwrap_or(word);
            if REPO_DIRS.iter().any(|d| word.starts_with(d)) && !self.root.join(word).exists() {
                return Err(format!("{word} does not exist in the repository"));
            }
        }
        let name = Path::new(program)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(program);
        match name {
            "cargo" if segment.get(1).is_some_and(|s| s == "xtask") => {
                self.help(Path::new("cargo"), &segment[1..])
            }
            "ebb" => self.help(&integration_tests::ebb_binary(), &segment[1..]),
            "kubectl" => self.kubectl(&segment[1..], fed),
            "helm" => self.helm(&segment[1..]),
            _ => Ok(Checked::NotChecked("not one of ebb's, kubectl's or helm's")),
        }
    }

    /// `<program> <args> --help` must succeed: the subcommand and flags exist.
    fn help(&self, program: &Path, args: &[String]) -> Result<Checked, String> {
        let mut with_help = args.to_vec();
        with_help.push("--help".into());
        let (ok, out) = self.run(program, &with_help);
        if ok {
            Ok(Checked::Ran("--help accepts it".into()))
        } else {
            Err(out)
        }
    }

    fn kubectl(&self, args: &[String], fed: bool) -> Result<Checked, String> {
        // kubectl's plugin `kubectl-ebb` is this build's `ebb`.
        if args.first().is_some_and(|a| a == "ebb") {
            return self.help(&integration_tests::ebb_binary(), &args[1..]);
        }
        let verb = args
            .iter()
            .find(|a| !a.starts_with('-'))
            .map(String::as_str);
        let sub = args
            .iter()
            .filter(|a| !a.starts_with('-'))
            .nth(1)
            .map(String::as_str);
        let writes = match (verb, sub) {
            (Some("apply" | "create" | "delete" | "patch" | "scale" | "label" | "annotate"), _) => {
                true
            }
            (Some("rollout"), Some("restart" | "undo" | "pause" | "resume")) => {
                return Ok(Checked::NotChecked("kubectl has no dry run for it"));
            }
            (Some("get" | "describe" | "events" | "logs" | "auth" | "explain" | "version"), _)
            | (Some("api-resources" | "api-versions" | "top"), _) => false,
            (Some("rollout"), Some("status" | "history")) | (Some("wait"), _) => false,
            _ => {
                return Ok(Checked::NotChecked(
                    "a kubectl verb the checker does not know",
                ));
            }
        };
        if fed && args.windows(2).any(|w| w[0] == "-f" && w[1] == "-") {
            return Ok(Checked::NotChecked(
                "reads its objects from the previous command",
            ));
        }
        // Run once, not watched, and not waited on for long.
        let watches = args.iter().any(|a| a == "-w" || a == "--watch");
        let mut args: Vec<String> = args
            .iter()
            .filter(|a| !a.starts_with("--timeout") && *a != "-w" && *a != "--watch")
            .cloned()
            .collect();
        if writes {
            args.push("--dry-run=server".into());
        }
        if matches!(verb, Some("wait" | "rollout")) {
            args.push("--timeout=2s".into());
        }
        let (ok, out) = self.run(&self.env.cluster.kubectl, &args);
        // The docs name a user's objects and namespaces; the local cluster has none of them.
        let missing_object = [
            "NotFound",
            "not found",
            "No resources found",
            "no matching resources found",
        ]
        .iter()
        .any(|m| out.contains(m));
        let how = match (writes, watches) {
            (true, _) => "--dry-run=server",
            (false, true) => "ran without --watch",
            (false, false) => "ran",
        };
        // `auth can-i` exits 1 for its answer "no".
        let answered = verb == Some("auth") && out.trim() == "no";
        if ok || answered {
            Ok(Checked::Ran(how.into()))
        } else if missing_object && !out.contains("unknown") && !out.contains("error: invalid") {
            Ok(Checked::Ran(format!(
                "{how}; the object it names is not on the local cluster"
            )))
        } else {
            Err(out)
        }
    }

    fn helm(&self, args: &[String]) -> Result<Checked, String> {
        let helm = xtask::cluster::binaries::Binaries::cached().path("helm");
        match args.first().map(String::as_str) {
            Some("install" | "upgrade") => {
                let chart = args.get(2).map(String::as_str).unwrap_or_default();
                if !self.root.join(chart).join("Chart.yaml").exists() {
                    return Ok(Checked::NotChecked("a chart from elsewhere"));
                }
                let mut template: Vec<String> = vec!["template".into()];
                template.extend(
                    args[1..]
                        .iter()
                        .filter(|a| {
                            !matches!(a.as_str(), "--create-namespace" | "--wait" | "--install")
                        })
                        .cloned(),
                );
                template.push("--kube-version".into());
                template.push(xtask::cluster::binaries::KUBERNETES_VERSION.into());
                let (ok, out) = self.run(&helm, &template);
                if ok {
                    Ok(Checked::Ran("as helm template".into()))
                } else {
                    Err(out)
                }
            }
            _ => Ok(Checked::NotChecked(
                "needs a Helm release on a real cluster",
            )),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_command_works_as_written() {
    let env = setup("docs-commands").await;
    let root = workspace_root();
    // Writes dry-run into ebb's namespace, which a dry run cannot create.
    let (ok, out) = Checker {
        env: &env,
        root: root.clone(),
    }
    .run(
        &env.cluster.kubectl,
        &[
            "apply".into(),
            "--server-side".into(),
            "-f".into(),
            "deploy/00-namespace.yaml".into(),
        ],
    );
    assert!(ok, "creating ebb-system: {out}");
    // The metrics API served and registered, for the `kubectl get --raw` commands.
    let ebb = env.start_ebb();
    let api = env.serve_metrics_api(&ebb).await;

    let checker = Checker { env: &env, root };
    let mut failures = Vec::new();
    let mut report = Vec::new();
    let mut checked = 0;
    for doc in documents() {
        let name = doc
            .strip_prefix(workspace_root())
            .unwrap_or(&doc)
            .display()
            .to_string();
        let text = std::fs::read_to_string(&doc).expect("read a document");
        for command in commands_in(&name, &text) {
            let words = match words(&command.text) {
                Ok(w) => w,
                Err(e) => {
                    failures.push(format!("{}: {e}", command.at));
                    continue;
                }
            };
            for (i, segment) in words
                .split(|w| matches!(w.as_str(), "|" | "&&" | ";" | "||"))
                .enumerate()
            {
                match checker.check(segment, i > 0) {
                    Ok(Checked::Ran(how)) => {
                        checked += 1;
                        report.push(format!(
                            "checked  {}: {} ({how})",
                            command.at,
                            segment.join(" ")
                        ));
                    }
                    Ok(Checked::NotChecked(why)) => {
                        report.push(format!(
                            "skipped  {}: {} ({why})",
                            command.at,
                            segment.join(" ")
                        ));
                    }
                    Err(e) => failures.push(format!(
                        "{}: `{}` failed:\n{}",
                        command.at,
                        segment.join(" "),
                        e.trim()
                    )),
                }
            }
        }
    }
    drop(api);
    drop(ebb);
    println!("{}", report.join("\n"));
    assert!(
        failures.is_empty(),
        "documented commands that do not work as written:\n\n{}",
        failures.join("\n\n")
    );
    assert!(checked > 20, "only {checked} commands found to check");
}

/// A YAML block that starts with `# <path in the repository>` shows that file: it must say
/// what the file says (the file may carry a header comment of its own).
#[test]
fn yaml_shown_from_a_file_matches_the_file() {
    let mut shown = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).expect("read a document");
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            if line.trim() != "```yaml" {
                continue;
            }
            let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            let Some(path) = block
                .first()
                .and_then(|l| l.strip_prefix("# "))
                .filter(|p| REPO_DIRS.iter().any(|d| p.starts_with(d)) && p.ends_with(".yaml"))
            else {
                continue;
            };
            let file = std::fs::read_to_string(workspace_root().join(path))
                .unwrap_or_else(|e| panic!("{}: shows {path}: {e}", doc.display()));
            let body: Vec<&str> = file.lines().skip_while(|l| l.starts_with('#')).collect();
            assert_eq!(
                block[1..].join("\n"),
                body.join("\n"),
                "{} shows {path} differently from the file",
                doc.display()
            );
            shown += 1;
        }
    }
    assert!(
        shown >= 1,
        "docs/getting-started.md shows docs/first-scaledobject.yaml"
    );
}

#[test]
fn commands_are_read_from_shell_blocks_only() {
    let md = "text\n```sh\n# a comment\ncargo xtask demo   # the demo\nkubectl apply \\\n  -f deploy/\n```\n```yaml\nkind: Pod\n```\n";
    let found = commands_in("x.md", md);
    let texts: Vec<&str> = found.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(
        texts,
        ["cargo xtask demo   # the demo", "kubectl apply  -f deploy/"]
    );
    assert_eq!(found[1].at, "x.md:5");
    assert_eq!(
        words(texts[0]).unwrap(),
        ["cargo", "xtask", "demo"],
        "a trailing comment is not part of the command"
    );
}
