//! Reading the metric value out of a response body: pure functions, no I/O.
//!
//! `valueLocation` is parsed once, when the trigger is built ([`Location::parse`]), so a path
//! using syntax ebb does not support is a configuration error rather than a failing poll.
//!
//! JSON and YAML (read as the same tree) take gjson's path syntax (github.com/tidwall/gjson, as
//! KEDA does), implemented in [`super::gjson`], whose documentation lists what is supported
//! and what is refused.
//!
//! XML paths use the plain subset (keys, indexes and a final `#`) and start with the root
//! element's name (`stats.queue.depth`); an element selects the children of that name, a number
//! picks one of several same-named siblings, `#` counts them.
//!
//! Prometheus locations are a metric name with optional `label="value"` matchers
//! (`http_requests_total{method="get"}`); the first sample of that name carrying every given
//! label wins.
//!
//! A value is a number or a string holding a number or a Kubernetes quantity (`"10k"`,
//! `"1.5Gi"`, `"250m"`). Missing values, other types, NaN and infinities are errors, never 0.

use std::fmt;

pub use super::gjson::GjsonPath;

/// A response format, as `format` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON (the default).
    Json,
    /// YAML.
    Yaml,
    /// XML.
    Xml,
    /// Prometheus text exposition format.
    Prometheus,
}

/// Why no value could be read from a body. Names the path element at fault; never holds
/// request details.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExtractError(pub String);

pub(super) fn fail<T>(message: impl Into<String>) -> Result<T, ExtractError> {
    Err(ExtractError(message.into()))
}

/// One element of an XML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A key, or an array index when it is all digits.
    Key(String),
    /// `#`: the length of the array (or the number of same-named XML elements).
    Count,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Key(k) => f.write_str(k),
            Step::Count => f.write_str("#"),
        }
    }
}

/// A parsed `valueLocation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A gjson path into a JSON or YAML document.
    Gjson(GjsonPath),
    /// A dotted path into an XML document.
    Path(Vec<Step>),
    /// A Prometheus sample selector.
    Sample(Selector),
}

/// A metric name and the labels a sample must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    name: String,
    labels: Vec<(String, String)>,
}

impl Location {
    /// Parses `text` for `format`; the error says what is wrong or unsupported.
    pub fn parse(text: &str, format: Format) -> Result<Self, String> {
        if format != Format::Prometheus && text.trim().is_empty() {
            return Err("expected a path such as components.worker.tasks".into());
        }
        match format {
            Format::Prometheus => parse_selector(text).map(Location::Sample),
            Format::Json | Format::Yaml => GjsonPath::parse(text).map(Location::Gjson),
            Format::Xml => parse_xml_path(text).map(Location::Path),
        }
    }

    /// Reads the value at this location from `body`, which is in `format`.
    pub fn extract(&self, body: &[u8], format: Format) -> Result<f64, ExtractError> {
        let value = match (self, format) {
            (Location::Sample(selector), Format::Prometheus) => prometheus_value(body, selector),
            (Location::Gjson(path), Format::Json) => path.json_number(body),
            (Location::Gjson(path), Format::Yaml) => path.yaml_number(body),
            (Location::Path(steps), Format::Xml) => xml_value(body, steps),
            _ => fail("the location does not fit the format"),
        }?;
        if value.is_finite() {
            Ok(value)
        } else {
            fail(format!("the value {value} is not a finite number"))
        }
    }
}

fn parse_xml_path(text: &str) -> Result<Vec<Step>, String> {
    // Split on unescaped dots, remembering which characters were escaped.
    let mut raw: Vec<Vec<(char, bool)>> = Vec::new();
    let mut current = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next) => current.push((next, true)),
                None => return Err("ends with a lone backslash".into()),
            },
            '.' => raw.push(std::mem::take(&mut current)),
            c => current.push((c, false)),
        }
    }
    raw.push(current);
    let count = raw.len();
    let mut steps = Vec::with_capacity(count);
    for (i, element) in raw.into_iter().enumerate() {
        let key: String = element.iter().map(|(c, _)| *c).collect();
        let plain = |c: char| element.iter().any(|&(x, escaped)| x == c && !escaped);
        let first_plain = element
            .first()
            .filter(|(_, escaped)| !escaped)
            .map(|(c, _)| *c);
        if element.is_empty() {
            return Err(format!(
                "element {} is empty (two dots in a row, or a leading or trailing dot)",
                i + 1
            ));
        }
        if key == "#" && first_plain == Some('#') {
            if i + 1 != count {
                return Err("`#` must be the last element of an XML path".into());
            }
            steps.push(Step::Count);
            continue;
        }
        // (feature, whether json and yaml paths have it)
        let unsupported = match first_plain {
            Some('#') if key.starts_with("#(") || key.starts_with("#[") => {
                Some(("gjson's queries", true))
            }
            Some('#') => return Err(format!("`#` must be a whole element (element {key:?})")),
            Some('@') => Some(("gjson's `@` modifiers", true)),
            Some('[' | '{') => Some(("gjson's multipaths", false)),
            Some('!') => Some(("gjson's literals", false)),
            _ if plain('*') || plain('?') => {
                Some(("gjson's wildcards (escape them as \\* or \\?)", true))
            }
            _ if plain('|') => Some(("gjson's `|` pipes", true)),
            _ => None,
        };
        if let Some((feature, in_json)) = unsupported {
            let scope = if in_json {
                "supported in json and yaml paths, not in xml ones"
            } else {
                "not supported by ebb"
            };
            return Err(format!("{feature} are {scope} (element {key:?})"));
        }
        steps.push(Step::Key(key));
    }
    Ok(steps)
}

/// The path up to and including step `i`, for messages.
fn prefix(steps: &[Step], i: usize) -> String {
    steps[..=i]
        .iter()
        .map(|s| s.to_string().replace('.', "\\."))
        .collect::<Vec<_>>()
        .join(".")
}

/// The index an all-digit key names (past any array when it does not fit a `usize`).
pub(super) fn index_of(key: &str) -> Option<usize> {
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(key.parse().unwrap_or(usize::MAX))
}

/// A string holding a number or a Kubernetes quantity.
pub(super) fn text_number(s: &str) -> Result<f64, ExtractError> {
    parse_quantity(s).map_or_else(
        || {
            let shown: String = s.chars().take(40).collect();
            fail(format!(
                "expected a number or a numeric string, found the string {shown:?}"
            ))
        },
        Ok,
    )
}

fn xml_value(body: &[u8], steps: &[Step]) -> Result<f64, ExtractError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ExtractError("the body is not valid XML: not UTF-8".into()))?;
    let doc = roxmltree::Document::parse(text)
        .map_err(|e| ExtractError(format!("the body is not valid XML: {e}")))?;
    let root = doc.root_element();
    let Some(Step::Key(first)) = steps.first() else {
        return fail("an XML path starts with the root element's name");
    };
    if root.tag_name().name() != first {
        return fail(format!(
            "{first}: the root element is <{}>",
            root.tag_name().name()
        ));
    }
    // The elements selected so far: same-named siblings.
    let mut selected = vec![root];
    for (i, step) in steps.iter().enumerate().skip(1) {
        let at = prefix(steps, i);
        match step {
            Step::Count => return Ok(selected.len() as f64),
            Step::Key(key) => match index_of(key) {
                Some(n) => match selected.get(n) {
                    Some(node) => selected = vec![*node],
                    None => {
                        return fail(format!(
                            "{at}: index {n} is past the last of {} elements",
                            selected.len()
                        ));
                    }
                },
                None => {
                    let parent = single(&selected, steps, i - 1)?;
                    selected = parent
                        .children()
                        .filter(|c| c.is_element() && c.tag_name().name() == key)
                        .collect();
                    if selected.is_empty() {
                        return fail(format!("{at}: no such element"));
                    }
                }
            },
        }
    }
    let node = single(&selected, steps, steps.len() - 1)?;
    if node.children().any(|c| c.is_element()) {
        return fail("expected a number, found an element with child elements");
    }
    let content: String = node
        .children()
        .filter(|c| c.is_text())
        .filter_map(|c| c.text())
        .collect();
    text_number(&content)
}

fn single<'a, 'input>(
    selected: &[roxmltree::Node<'a, 'input>],
    steps: &[Step],
    i: usize,
) -> Result<roxmltree::Node<'a, 'input>, ExtractError> {
    match selected {
        [one] => Ok(*one),
        _ => fail(format!(
            "{}: {} elements match; add an index such as {0}.0",
            prefix(steps, i),
            selected.len()
        )),
    }
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// A cursor over a line of Prometheus text.
struct Cursor<'a> {
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start_matches([' ', '\t']);
    }

    fn eat(&mut self, c: char) -> bool {
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn name(&mut self, label: bool) -> Option<&'a str> {
        let start_ok = |c: char| {
            if label {
                c.is_ascii_alphabetic() || c == '_'
            } else {
                is_name_start(c)
            }
        };
        let first = self.rest.chars().next()?;
        if !start_ok(first) {
            return None;
        }
        let end = self
            .rest
            .find(|c: char| !(is_name_char(c) && (!label || c != ':')))
            .unwrap_or(self.rest.len());
        let (name, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(name)
    }

    /// A double-quoted string with `\\`, `\"` and `\n` escapes.
    fn quoted(&mut self) -> Option<String> {
        let mut chars = self.rest.strip_prefix('"')?.char_indices();
        let mut out = String::new();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.rest = &self.rest[i + 2..];
                    return Some(out);
                }
                '\\' => match chars.next()?.1 {
                    'n' => out.push('\n'),
                    other => out.push(other),
                },
                c => out.push(c),
            }
        }
        None
    }

    /// `{name="value", ...}` if present; `operators` says whether `!=`, `=~`, `!~` are named
    /// in the error (selector) or just malformed (body).
    fn labels(&mut self) -> Result<Vec<(String, String)>, String> {
        let mut labels = Vec::new();
        if !self.eat('{') {
            return Ok(labels);
        }
        loop {
            self.skip_space();
            if self.eat('}') {
                return Ok(labels);
            }
            let name = self.name(true).ok_or("expected a label name")?.to_string();
            self.skip_space();
            if self.rest.starts_with("!=")
                || self.rest.starts_with("=~")
                || self.rest.starts_with("!~")
            {
                return Err("only `=` label matchers are supported".into());
            }
            if !self.eat('=') {
                return Err(format!("expected = after label {name}"));
            }
            self.skip_space();
            let value = self
                .quoted()
                .ok_or_else(|| format!("expected a double-quoted value for label {name}"))?;
            labels.push((name, value));
            self.skip_space();
            if !self.eat(',') {
                self.skip_space();
                return if self.eat('}') {
                    Ok(labels)
                } else {
                    Err("expected , or } in the labels".into())
                };
            }
        }
    }
}

fn parse_selector(text: &str) -> Result<Selector, String> {
    let mut cursor = Cursor { rest: text.trim() };
    let name = cursor
        .name(false)
        .ok_or("expected a metric name, optionally with labels: name{label=\"value\"}")?
        .to_string();
    let labels = cursor.labels()?;
    cursor.skip_space();
    if !cursor.rest.is_empty() {
        return Err("unexpected text after the metric name and labels".into());
    }
    Ok(Selector { name, labels })
}

fn prometheus_value(body: &[u8], selector: &Selector) -> Result<f64, ExtractError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ExtractError("the body is not Prometheus text: not UTF-8".into()))?;
    let mut found = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let malformed = || {
            ExtractError(format!(
                "line {} of the body is not a Prometheus sample",
                n + 1
            ))
        };
        let mut cursor = Cursor { rest: line };
        let name = cursor.name(false).ok_or_else(malformed)?;
        let labels = cursor.labels().map_err(|_| malformed())?;
        let before = cursor.rest.len();
        cursor.skip_space();
        if cursor.rest.len() == before {
            return Err(malformed());
        }
        // OpenMetrics may follow the sample with `# {labels} value` (an exemplar).
        let sample = cursor.rest.split_once(" #").map_or(cursor.rest, |(s, _)| s);
        let mut fields = sample.split_whitespace();
        let value: f64 = fields
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(malformed)?;
        // A timestamp: milliseconds in the Prometheus format, fractional seconds in OpenMetrics.
        if let Some(ts) = fields.next()
            && ts.parse::<f64>().is_err()
        {
            return Err(malformed());
        }
        if fields.next().is_some() {
            return Err(malformed());
        }
        let matches = name == selector.name
            && selector
                .labels
                .iter()
                .all(|wanted| labels.iter().any(|have| have == wanted));
        if matches && found.is_none() {
            found = Some(value);
        }
    }
    found.map_or_else(|| fail("no sample matches"), Ok)
}

/// A number written plainly or as a Kubernetes quantity (`10k`, `1.5Gi`, `250m`, `1e3`).
pub fn parse_quantity(text: &str) -> Option<f64> {
    let s = text.trim();
    let digits_end = s
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || (i == 0 && (c == '+' || c == '-'))))
        .map_or(s.len(), |(i, _)| i);
    let (number, suffix) = s.split_at(digits_end);
    let unsigned = number.trim_start_matches(['+', '-']);
    if !unsigned.bytes().any(|b| b.is_ascii_digit()) || unsigned.matches('.').count() > 1 {
        return None;
    }
    let base: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp => {
            let digits = exp.strip_prefix(['e', 'E'])?;
            let unsigned = digits.trim_start_matches(['+', '-']);
            if unsigned.is_empty()
                || !unsigned.bytes().all(|b| b.is_ascii_digit())
                || digits.len() - unsigned.len() > 1
            {
                return None;
            }
            let power: i32 = digits.parse().ok()?;
            10f64.powi(power)
        }
    };
    let value = base * factor;
    value.is_finite().then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(format: Format, location: &str, body: &str) -> Result<f64, String> {
        let loc = Location::parse(location, format)?;
        loc.extract(body.as_bytes(), format).map_err(|e| e.0)
    }
    #[test]
    fn xml_keeps_the_plain_subset() {
        let cases: &[(&str, &str)] = &[
            ("", "expected a path"),
            ("stats..a", "element 2 is empty"),
            ("stats.#.a", "`#` must be the last element of an XML path"),
            (
                "stats.#(a>1)",
                "gjson's queries are supported in json and yaml paths, not in xml ones",
            ),
            ("stats.*", "gjson's wildcards"),
            ("stats.@reverse", "gjson's `@` modifiers"),
            ("stats|a", "gjson's `|` pipes"),
            ("stats.#x", "`#` must be a whole element (element \"#x\")"),
            ("[a]", "gjson's multipaths are not supported by ebb"),
        ];
        for (location, problem) in cases {
            let err = Location::parse(location, Format::Xml).unwrap_err();
            assert!(err.contains(problem), "{location}: {err}");
        }
        // A path parsed for one format is not read from another.
        let loc = Location::parse("a", Format::Json).unwrap();
        assert_eq!(
            loc.extract(b"<a>1</a>", Format::Xml),
            Err(ExtractError("the location does not fit the format".into()))
        );
    }

    #[test]
    fn xml_paths_start_at_the_root() {
        let body = r#"<?xml version="1.0"?>
            <stats><queue><depth> 17 </depth><size>3k</size></queue>
              <worker><busy>1</busy></worker><worker><busy>4</busy></worker>
              <empty/><text>lots</text><nested><a>1</a></nested>
            </stats>"#;
        let cases: &[(&str, Result<f64, &str>)] = &[
            ("stats.queue.depth", Ok(17.0)),
            ("stats.queue.size", Ok(3000.0)),
            ("stats.worker.1.busy", Ok(4.0)),
            ("stats.worker.0.busy", Ok(1.0)),
            ("stats.worker.#", Ok(2.0)),
            ("stats.queue.#", Ok(1.0)),
            (
                "other.queue.depth",
                Err("other: the root element is <stats>"),
            ),
            (
                "stats.queue.missing",
                Err("stats.queue.missing: no such element"),
            ),
            (
                "stats.worker.busy",
                Err("stats.worker: 2 elements match; add an index such as stats.worker.0"),
            ),
            (
                "stats.worker.2.busy",
                Err("stats.worker.2: index 2 is past the last of 2 elements"),
            ),
            (
                "stats.nested",
                Err("expected a number, found an element with child elements"),
            ),
            (
                "stats.empty",
                Err("expected a number or a numeric string, found the string \"\""),
            ),
            (
                "stats.text",
                Err("expected a number or a numeric string, found the string \"lots\""),
            ),
        ];
        for (location, expected) in cases {
            let expected = expected.map_err(String::from);
            assert_eq!(get(Format::Xml, location, body), expected, "{location}");
        }
        let err = get(Format::Xml, "a.b", "{\"a\": 1}").unwrap_err();
        assert!(err.starts_with("the body is not valid XML"), "{err}");
    }

    #[test]
    fn prometheus_samples_by_name_and_labels() {
        let body = "# HELP http_requests_total Requests.\n\
                    # TYPE http_requests_total counter\n\
                    http_requests_total{method=\"get\",code=\"200\"} 1027 1395066363000\n\
                    http_requests_total{method=\"post\",code=\"200\"} 3\n\
                    http_requests_total{method=\"post\",code=\"400\"} 5\n\
                    queue_depth 42\n\
                    temperature{room=\"a \\\"b\\\"\"} -1.5e1\n\
                    \n\
                    broken_gauge NaN\n\
                    up_inf +Inf\n\
                    om_total{a=\"1\"} 8 1520879607.789 # {trace_id=\"x\"} 1\n\
                    # EOF\n";
        let cases: &[(&str, Result<f64, &str>)] = &[
            ("queue_depth", Ok(42.0)),
            ("http_requests_total{method=\"get\"}", Ok(1027.0)),
            ("http_requests_total{method=\"post\"}", Ok(3.0)),
            ("http_requests_total{ code = \"400\" , }", Ok(5.0)),
            ("http_requests_total", Ok(1027.0)),
            ("temperature{room=\"a \\\"b\\\"\"}", Ok(-15.0)),
            (
                "http_requests_total{method=\"put\"}",
                Err("no sample matches"),
            ),
            ("missing_metric", Err("no sample matches")),
            ("broken_gauge", Err("the value NaN is not a finite number")),
            ("up_inf", Err("the value inf is not a finite number")),
            ("om_total", Ok(8.0)),
        ];
        for (location, expected) in cases {
            let expected = expected.map_err(String::from);
            assert_eq!(
                get(Format::Prometheus, location, body),
                expected,
                "{location}"
            );
        }
    }

    #[test]
    fn prometheus_selectors_and_garbage() {
        let bad_selectors: &[(&str, &str)] = &[
            ("", "expected a metric name"),
            ("1abc", "expected a metric name"),
            ("m{a!=\"x\"}", "only `=` label matchers"),
            ("m{a=~\"x\"}", "only `=` label matchers"),
            ("m{a=x}", "expected a double-quoted value for label a"),
            ("m{a=\"x\"", "expected , or }"),
            ("m{a=\"x\"} extra", "unexpected text"),
        ];
        for (location, problem) in bad_selectors {
            let err = Location::parse(location, Format::Prometheus).unwrap_err();
            assert!(err.contains(problem), "{location}: {err}");
        }
        let garbage: &[(&str, &str)] = &[
            (
                "<html><body>oops</body></html>",
                "line 1 of the body is not a Prometheus sample",
            ),
            (
                "ok 1\nbad line here\n",
                "line 2 of the body is not a Prometheus sample",
            ),
            ("m abc\n", "line 1 of the body is not a Prometheus sample"),
            (
                "m{a=\"1\"}2\n",
                "line 1 of the body is not a Prometheus sample",
            ),
            (
                "m 1 notatime\n",
                "line 1 of the body is not a Prometheus sample",
            ),
            ("", "no sample matches"),
        ];
        for (body, message) in garbage {
            assert_eq!(
                get(Format::Prometheus, "m", body),
                Err(message.to_string()),
                "{body}"
            );
        }
    }

    #[test]
    fn quantities() {
        let cases: &[(&str, Option<f64>)] = &[
            ("12", Some(12.0)),
            (" 12 ", Some(12.0)),
            ("-3.5", Some(-3.5)),
            ("+2", Some(2.0)),
            (".5", Some(0.5)),
            ("10k", Some(10_000.0)),
            ("250m", Some(0.25)),
            ("2Ki", Some(2048.0)),
            ("1M", Some(1e6)),
            ("3E", Some(3e18)),
            ("1e3", Some(1000.0)),
            ("1E-2", Some(0.01)),
            ("5n", Some(5e-9)),
            ("", None),
            ("k", None),
            ("1.2.3", None),
            ("12 k", None),
            ("1x", None),
            ("1e", None),
            ("1e+-3", None),
            ("NaN", None),
            ("inf", None),
            ("1e999", None),
            ("0x10", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_quantity(text), *expected, "{text:?}");
        }
    }
}
