//! gjson's path language (github.com/tidwall/gjson, as KEDA does): the `valueLocation` syntax
//! of JSON and YAML bodies, for [`super::extract`]. Implemented here from gjson's documented
//! behaviour (checked against v1.20): a path is parsed once into a [`GjsonPath`], then evaluated
//! on a document read as gjson sees it (JSON and YAML alike), with object members in their order
//! and a key that appears twice kept twice.
//!
//! The syntax:
//! - elements separated by `.`; `\` makes the next character literal (`a\.b` is the key `a.b`);
//! - a key may hold the wildcards `*` (any run of characters) and `?` (one character); as for a
//!   key that appears twice, the first match in document order from which the rest of the path
//!   resolves wins;
//! - an all-digit element indexes an array (`items.0.count`) and is a key in an object;
//! - `#` alone is the length of an array (`items.#`); `items.#.count` applies the rest of the
//!   path to every element and gives the array of the results that exist;
//! - `#(...)` is the first element matching a query and `#(...)#` the array of all matches
//!   (`#[...]` is the old spelling). A query is `path op value`: `path` is a gjson path from the
//!   element (empty: the element itself); `op` is `==` (or `=`), `!=`, `<`, `<=`, `>`, `>=`, `%`
//!   (like: `*` and `?` wildcards) or `!%`; `value` is a number, a double-quoted string, `true`,
//!   `false`, `null`, or `~true`, `~false`, `~null`, `~*` (the value's truthiness, or whether it
//!   exists). A string is compared as text, a number with the number the value reads as (0 when
//!   it reads as none, as in gjson), a boolean with `true` or `false` (false < true); null, arrays
//!   and objects never match. A query with a path and no `op` tests that the path exists;
//! - `|` applies the rest of the path to the result so far instead of to each element, so it
//!   ends a `#.` or `#(...)#` (`items.#(n>3)#|#` counts the matches, `items.#.n|0` is the first);
//! - the modifiers `@this`, `@reverse`, `@flatten` (`@flatten:{"deep":true}`), `@join`
//!   (`@join:{"preserve":true}`), `@keys`, `@values`, `@fromstr`, `@group` and `@dig:key` (every
//!   value of that key, at any depth). gjson's `@pretty`, `@ugly`, `@valid` and `@tostr`, which
//!   only reformat or check JSON text, are refused; an `@name` that is no gjson modifier is a key,
//!   as in gjson.
//!
//! gjson's `!` literals, `[..]`/`{..}` multipaths and `..` JSON Lines are refused with an error
//! naming the feature. A path must end at one value: an array or object there is an error that
//! says so (never a 0), as is a key, index or match that is not there. Where gjson counts a
//! missing value as an empty array (`missing.@keys|#` is 0 there), ebb reports the missing key.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::extract::{ExtractError, fail, index_of, text_number};

// ---------------------------------------------------------------------------------------------
// gjson paths: parsing.

/// Elements a whole path may have, nested ones (queries, `@dig`) included: deep enough for any
/// real path, and a bound on the recursion that evaluates it.
const MAX_ELEMENTS: usize = 256;
/// How deep queries and `@dig` arguments may nest.
const MAX_NESTING: usize = 8;

/// A parsed gjson path (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GjsonPath {
    text: String,
    /// Runs of elements separated by `|`; the elements of a run were separated by `.`.
    segments: Vec<Vec<Element>>,
}

impl fmt::Display for GjsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Element {
    kind: Kind,
    /// Where the element ends in the path's text: messages name the path up to there.
    end: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// A key, or an array index when it is all digits.
    Key(String),
    /// A key with wildcards.
    Pattern(Vec<Glob>),
    /// `#` ending its run: the length of an array.
    Count,
    /// `#` followed by more of its run: the rest applied to every element.
    Each,
    Query(Box<Query>),
    Modifier(Modifier),
}

/// One unit of a wildcard pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Glob {
    Char(char),
    /// `?`
    One,
    /// `*`
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Query {
    /// The path from an element to the value tested; `None` tests the element itself.
    path: Option<GjsonPath>,
    test: Test,
    /// `#(...)#`: every match rather than the first.
    all: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Test {
    /// No operator: the value exists.
    Exists,
    /// Compares the value with `text`, the query's value unquoted; `pattern` is `text` read as
    /// a `%` pattern.
    Compare {
        op: Op,
        text: String,
        pattern: Vec<Glob>,
    },
    /// `~true`, `~false`, `~null`, `~*`: whether the value is truthy (falsy, null, there),
    /// compared with `true`.
    Truthy { op: Op, ish: Ish },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Like,
    NotLike,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ish {
    True,
    False,
    Null,
    Exists,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Modifier {
    This,
    Reverse,
    Flatten { deep: bool },
    Join { preserve: bool },
    Keys,
    Values,
    FromStr,
    Group,
    Dig(GjsonPath),
}

/// gjson's modifiers that ebb refuses, and why.
fn refused_modifier(name: &str) -> Option<&'static str> {
    match name {
        "pretty" | "ugly" => Some("it only reformats JSON text"),
        "valid" => Some("it only checks that the body is JSON, which ebb always does"),
        "tostr" => Some("it turns a value into a string of JSON text"),
        _ => None,
    }
}

fn trim(s: &str) -> &str {
    s.trim_matches(|c: char| c <= ' ')
}

/// The element starting at `start`, as written, for messages.
fn raw_element(text: &str, start: usize) -> &str {
    let mut end = text.len();
    let mut chars = text[start..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '.' | '|' => {
                end = start + i;
                break;
            }
            _ => {}
        }
    }
    &text[start..end]
}

impl GjsonPath {
    /// Parses a whole path (`text` is not blank).
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let mut budget = MAX_ELEMENTS;
        parse_gjson(text, 0, &mut budget)
    }
}

fn parse_gjson(text: &str, nesting: usize, budget: &mut usize) -> Result<GjsonPath, String> {
    if nesting > MAX_NESTING {
        return Err(format!(
            "queries and @dig arguments nest more than {MAX_NESTING} deep"
        ));
    }
    if text.starts_with("..") {
        return Err("gjson's `..` JSON Lines paths are not supported by ebb".into());
    }
    let bytes = text.as_bytes();
    let mut segments = vec![Vec::new()];
    let mut pos = 0;
    let mut number = 0;
    loop {
        number += 1;
        if matches!(bytes.get(pos), None | Some(b'.' | b'|')) {
            return Err(format!(
                "element {number} is empty (two separators in a row, or a leading or trailing \
                 `.` or `|`)"
            ));
        }
        if *budget == 0 {
            return Err(format!("the path has more than {MAX_ELEMENTS} elements"));
        }
        *budget -= 1;
        let (kind, end) = parse_element(text, pos, nesting, budget)?;
        let start = pos;
        pos = end;
        if let Some(run) = segments.last_mut() {
            run.push(Element { kind, end });
        }
        match bytes.get(pos) {
            None => break,
            Some(b'.') => pos += 1,
            Some(b'|') => {
                pos += 1;
                segments.push(Vec::new());
            }
            Some(_) => {
                let next: String = text[pos..].chars().take(1).collect();
                return Err(format!(
                    "unexpected {next:?} after {:?}; expected `.`, `|` or the end",
                    &text[start..end]
                ));
            }
        }
    }
    for run in &mut segments {
        let last = run.len().saturating_sub(1);
        for element in &mut run[..last] {
            if element.kind == Kind::Count {
                element.kind = Kind::Each;
            }
        }
    }
    Ok(GjsonPath {
        text: text.to_owned(),
        segments,
    })
}

/// Parses the element at `start` (not empty); answers it and where it ends.
fn parse_element(
    text: &str,
    start: usize,
    nesting: usize,
    budget: &mut usize,
) -> Result<(Kind, usize), String> {
    let bytes = text.as_bytes();
    match bytes[start] {
        b'#' => match bytes.get(start + 1) {
            None | Some(b'.' | b'|') => Ok((Kind::Count, start + 1)),
            Some(b'(' | b'[') => parse_query(text, start, nesting, budget),
            Some(_) => Err(format!(
                "`#` must be a whole element (`items.#`) or start a query (`items.#(...)`), \
                 not {:?}; write `\\#` for a key that starts with #",
                raw_element(text, start)
            )),
        },
        b'@' => {
            let name_end = text[start + 1..]
                .find(['.', '|', ':'])
                .map_or(text.len(), |i| start + 1 + i);
            let name = &text[start + 1..name_end];
            if let Some(reason) = refused_modifier(name) {
                return Err(format!(
                    "gjson's @{name} modifier is not supported by ebb: {reason}, which cannot \
                     give a number"
                ));
            }
            match parse_modifier(text, name, name_end, nesting, budget)? {
                Some(found) => Ok(found),
                // Not a gjson modifier: gjson reads it as a key, and so does ebb.
                None => parse_key(text, start),
            }
        }
        b'!' => Err(format!(
            "gjson's literals are not supported by ebb (element {:?}); write `\\!` for a key \
             that starts with !",
            raw_element(text, start)
        )),
        b'[' | b'{' => Err(format!(
            "gjson's multipaths are not supported by ebb (element {:?})",
            raw_element(text, start)
        )),
        _ => parse_key(text, start),
    }
}

fn parse_key(text: &str, start: usize) -> Result<(Kind, usize), String> {
    let mut key = String::new();
    let mut globs = Vec::new();
    let mut wild = false;
    let mut end = text.len();
    let mut chars = text[start..].char_indices();
    while let Some((i, c)) = chars.next() {
        let glob = match c {
            '.' | '|' => {
                end = start + i;
                break;
            }
            '\\' => match chars.next() {
                Some((_, next)) => Glob::Char(next),
                None => return Err("ends with a lone backslash".into()),
            },
            '*' => Glob::Any,
            '?' => Glob::One,
            c => Glob::Char(c),
        };
        match glob {
            Glob::Char(c) => key.push(c),
            Glob::One | Glob::Any => wild = true,
        }
        globs.push(glob);
    }
    let kind = if wild {
        Kind::Pattern(globs)
    } else {
        Kind::Key(key)
    };
    Ok((kind, end))
}

/// The index of the quote that closes the string whose opening quote is at `open`.
fn string_end(bytes: &[u8], open: usize) -> Result<usize, String> {
    let mut i = open + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'"' => return Ok(i),
            _ => {}
        }
        i += 1;
    }
    Err("a double-quoted string is not closed".into())
}

/// `#(...)`, `#(...)#` and the old `#[...]`, `#[...]#` at `start`.
fn parse_query(
    text: &str,
    start: usize,
    nesting: usize,
    budget: &mut usize,
) -> Result<(Kind, usize), String> {
    let bytes = text.as_bytes();
    let open = start + 1;
    // Brackets of both kinds balance, as in gjson; quoted strings and escaped characters do not
    // count.
    let mut depth = 1;
    let mut i = open + 1;
    let close = loop {
        match bytes.get(i) {
            None => {
                return Err(format!(
                    "the query {:?} is not closed",
                    text[start..].chars().take(40).collect::<String>()
                ));
            }
            Some(b'\\') => i += 1,
            Some(b'(' | b'[') => depth += 1,
            Some(b')' | b']') => {
                depth -= 1;
                if depth == 0 {
                    break i;
                }
            }
            Some(b'"') => i = string_end(bytes, i)?,
            Some(_) => {}
        }
        i += 1;
    };
    let all = bytes.get(close + 1) == Some(&b'#');
    let end = close + 1 + usize::from(all);
    let query = parse_condition(&text[open + 1..close], all, nesting + 1, budget)
        .map_err(|e| format!("in the query {:?}: {e}", &text[start..end]))?;
    Ok((Kind::Query(Box::new(query)), end))
}

/// The inside of a query: `path`, or `path op value`.
fn parse_condition(
    inner: &str,
    all: bool,
    nesting: usize,
    budget: &mut usize,
) -> Result<Query, String> {
    let bytes = inner.as_bytes();
    let mut depth = 0usize;
    let mut op_at = None;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'(' | b'[' => depth += 1,
            b')' | b']' => depth = depth.saturating_sub(1),
            b'"' => i = string_end(bytes, i)?,
            b'!' | b'=' | b'<' | b'>' | b'%' if depth == 0 => {
                op_at = Some(i);
                break;
            }
            _ => {}
        }
        i += 1;
    }
    let (left, test) = match op_at {
        None => {
            let left = trim(inner);
            if left.is_empty() {
                return Err("it is empty".into());
            }
            (left, Test::Exists)
        }
        Some(at) => (trim(&inner[..at]), parse_test(trim(&inner[at..]))?),
    };
    let path = if left.is_empty() {
        None
    } else {
        Some(parse_gjson(left, nesting, budget)?)
    };
    Ok(Query { path, test, all })
}

/// `op value`, `op` first.
fn parse_test(text: &str) -> Result<Test, String> {
    const OPS: [(&str, Op); 9] = [
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("!%", Op::NotLike),
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("=", Op::Eq),
        ("<", Op::Lt),
        (">", Op::Gt),
        ("%", Op::Like),
    ];
    let Some((written, op, value)) = OPS
        .iter()
        .find_map(|(written, op)| Some((*written, *op, text.strip_prefix(written)?)))
    else {
        return Err("`!` must be part of `!=` or `!%`".into());
    };
    let value = trim(value);
    if value.is_empty() {
        return Err(format!("expected a value after `{written}`"));
    }
    if let Some(word) = value.strip_prefix('~') {
        let ish = match word {
            "true" => Ish::True,
            "false" => Ish::False,
            "null" => Ish::Null,
            "*" => Ish::Exists,
            _ => {
                return Err(format!(
                    "expected ~true, ~false, ~null or ~* after `{written}`, found {value:?}"
                ));
            }
        };
        return Ok(Test::Truthy { op, ish });
    }
    let text = if value.starts_with('"') {
        serde_json::from_str::<String>(value)
            .map_err(|_| format!("{value} is not one double-quoted string"))?
    } else if matches!(value, "true" | "false" | "null") || is_number(value) {
        value.to_owned()
    } else {
        return Err(format!(
            "the value {value:?} must be a number, a double-quoted string (\"{value}\"), true, \
             false or null"
        ));
    };
    let pattern = like_pattern(&text);
    Ok(Test::Compare { op, text, pattern })
}

fn is_number(text: &str) -> bool {
    text.bytes().any(|b| b.is_ascii_digit())
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
        && text.parse::<f64>().is_ok()
}

/// A `%` pattern: `*` and `?` are wildcards, `\` makes the next character literal.
fn like_pattern(text: &str) -> Vec<Glob> {
    let mut globs = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        globs.push(match c {
            '*' => Glob::Any,
            '?' => Glob::One,
            '\\' => Glob::Char(chars.next().unwrap_or('\\')),
            c => Glob::Char(c),
        });
    }
    globs
}

/// The modifier `@name` whose name ends at `name_end`, or `None` when gjson has no such
/// modifier.
fn parse_modifier(
    text: &str,
    name: &str,
    name_end: usize,
    nesting: usize,
    budget: &mut usize,
) -> Result<Option<(Kind, usize)>, String> {
    let bytes = text.as_bytes();
    let has_arg = bytes.get(name_end) == Some(&b':');
    let arg_start = name_end + 1;
    let plain = |modifier| {
        if has_arg {
            Err(format!("@{name} takes no argument"))
        } else {
            Ok(Some((Kind::Modifier(modifier), name_end)))
        }
    };
    match name {
        "this" => plain(Modifier::This),
        "reverse" => plain(Modifier::Reverse),
        "keys" => plain(Modifier::Keys),
        "values" => plain(Modifier::Values),
        "fromstr" => plain(Modifier::FromStr),
        "group" => plain(Modifier::Group),
        "flatten" | "join" => {
            let option = if name == "flatten" {
                "deep"
            } else {
                "preserve"
            };
            let (on, end) = if has_arg {
                json_option(text, arg_start, option).map_err(|()| {
                    format!(
                        "@{name}'s argument must be a JSON object such as {{\"{option}\":true}}"
                    )
                })?
            } else {
                (false, name_end)
            };
            let modifier = if name == "flatten" {
                Modifier::Flatten { deep: on }
            } else {
                Modifier::Join { preserve: on }
            };
            Ok(Some((Kind::Modifier(modifier), end)))
        }
        "dig" => {
            const USAGE: &str = "@dig needs a key to look for at any depth, as in @dig:count";
            let end = if has_arg {
                arg_end(text, arg_start)
            } else {
                name_end
            };
            let arg = text.get(arg_start..end).unwrap_or_default();
            if arg.is_empty() {
                return Err(USAGE.into());
            }
            let path = parse_gjson(arg, nesting + 1, budget)?;
            // Only keys: a key path is cheap to try at every node of the document.
            let keys_only = path.segments.len() == 1
                && path.segments[0]
                    .iter()
                    .all(|e| matches!(e.kind, Kind::Key(_) | Kind::Pattern(_)));
            if !keys_only {
                return Err(format!("{USAGE}, not {arg:?}"));
            }
            Ok(Some((Kind::Modifier(Modifier::Dig(path)), end)))
        }
        _ => Ok(None),
    }
}

/// The JSON object at `start` and the boolean its `option` holds (as gjson reads one: true,
/// a string such as "true" or "1", or a number other than 0), with where the object ends.
fn json_option(text: &str, start: usize, option: &str) -> Result<(bool, usize), ()> {
    let bytes = text.as_bytes();
    if bytes.get(start) != Some(&b'{') {
        return Err(());
    }
    let mut depth = 0usize;
    let mut i = start;
    let end = loop {
        match bytes.get(i) {
            None => return Err(()),
            Some(b'{' | b'[') => depth += 1,
            Some(b'}' | b']') => {
                depth -= 1;
                if depth == 0 {
                    break i + 1;
                }
            }
            Some(b'"') => i = string_end(bytes, i).map_err(|_| ())?,
            Some(_) => {}
        }
        i += 1;
    };
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text[start..end]).map_err(|_| ())?;
    let on = match object.get(option) {
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::Number(n)) => n.as_f64().is_some_and(|n| n != 0.0),
        Some(serde_json::Value::String(s)) => {
            matches!(s.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True")
        }
        _ => false,
    };
    Ok((on, end))
}

/// Where a plain modifier argument starting at `start` ends: at the next `|` outside brackets
/// and strings, as in gjson (a `.` does not end it).
fn arg_end(text: &str, start: usize) -> usize {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'"' => match string_end(bytes, i) {
                Ok(close) => i = close,
                Err(_) => return bytes.len(),
            },
            b'|' if depth == 0 => return i,
            _ => {}
        }
        i += 1;
    }
    bytes.len().min(i)
}

// ---------------------------------------------------------------------------------------------
// gjson paths: evaluation.

/// A JSON or YAML document as gjson sees it: object members keep their order, and a key that
/// appears twice stays twice.
#[derive(Debug, Clone)]
enum Node {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Number(v as f64))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Number(v as f64))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Number(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::String(v))
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut members = Vec::new();
        while let Some(member) = map.next_entry::<String, Node>()? {
            members.push(member);
        }
        Ok(Node::Object(members))
    }
}

fn kind(v: &Node) -> &'static str {
    match v {
        Node::Null => "null",
        Node::Bool(_) => "a boolean",
        Node::Number(_) => "a number",
        Node::String(_) => "a string",
        Node::Array(_) => "an array",
        Node::Object(_) => "an object",
    }
}

/// A value found: borrowed from the document, or made by `#`, a query or a modifier. The error
/// names the path up to the element at fault.
type Found<'a> = Result<Cow<'a, Node>, String>;

impl GjsonPath {
    /// The number this path names in the JSON document `body`.
    pub(super) fn json_number(&self, body: &[u8]) -> Result<f64, ExtractError> {
        let doc: Node = serde_json::from_slice(body)
            .map_err(|e| ExtractError(format!("the body is not valid JSON: {e}")))?;
        self.number(&doc)
    }

    /// The number this path names in the YAML document `body`.
    pub(super) fn yaml_number(&self, body: &[u8]) -> Result<f64, ExtractError> {
        let doc: serde_norway::Value = serde_norway::from_slice(body)
            .map_err(|e| ExtractError(format!("the body is not valid YAML: {e}")))?;
        self.number(&yaml_to_node(doc))
    }

    /// The number this path names in `doc`.
    fn number(&self, doc: &Node) -> Result<f64, ExtractError> {
        match self.eval(doc).map_err(ExtractError)?.as_ref() {
            Node::Number(n) => Ok(*n),
            Node::String(s) => text_number(s),
            Node::Array(items) => fail(format!(
                "expected a number or a numeric string, found an array of {} element{} (end the \
                 path with |# to count them, or |0 for the first)",
                items.len(),
                if items.len() == 1 { "" } else { "s" }
            )),
            other => fail(format!(
                "expected a number or a numeric string, found {}",
                kind(other)
            )),
        }
    }

    fn eval<'a>(&self, doc: &'a Node) -> Found<'a> {
        let mut current = Cow::Borrowed(doc);
        for run in &self.segments {
            current = self.then(current, run)?;
        }
        Ok(current)
    }

    /// `elements` applied to a value found so far.
    fn then<'a>(&self, value: Cow<'a, Node>, elements: &[Element]) -> Found<'a> {
        if elements.is_empty() {
            return Ok(value);
        }
        match value {
            Cow::Borrowed(node) => self.walk(node, elements),
            Cow::Owned(node) => self
                .walk(&node, elements)
                .map(|found| Cow::Owned(found.into_owned())),
        }
    }

    fn walk<'a>(&self, node: &'a Node, elements: &[Element]) -> Found<'a> {
        let Some((element, rest)) = elements.split_first() else {
            return Ok(Cow::Borrowed(node));
        };
        let at = &self.text[..element.end];
        match (&element.kind, node) {
            (Kind::Key(key), Node::Object(members)) => self.search(
                members.iter().filter(|(k, _)| k == key).map(|(_, v)| v),
                rest,
                || format!("{at}: no such key"),
            ),
            (Kind::Pattern(pattern), Node::Object(members)) => self.search(
                members
                    .iter()
                    .filter(|(k, _)| glob_match(pattern, k))
                    .map(|(_, v)| v),
                rest,
                || format!("{at}: no key matches"),
            ),
            (Kind::Key(key), Node::Array(items)) => {
                let Some(n) = index_of(key) else {
                    return Err(format!("{at}: an array needs a numeric index"));
                };
                match items.get(n) {
                    Some(item) => self.walk(item, rest),
                    None => Err(format!(
                        "{at}: index {key} is past the end of an array of {}",
                        items.len()
                    )),
                }
            }
            (Kind::Pattern(_), Node::Array(_)) => Err(format!(
                "{at}: wildcards match the keys of an object, found an array"
            )),
            (Kind::Key(_) | Kind::Pattern(_), other) => {
                Err(format!("{at}: cannot descend into {}", kind(other)))
            }
            (Kind::Count, Node::Array(items)) => Ok(Cow::Owned(Node::Number(items.len() as f64))),
            (Kind::Each, Node::Array(items)) => Ok(Cow::Owned(Node::Array(
                items
                    .iter()
                    .filter_map(|item| self.walk(item, rest).ok())
                    .map(Cow::into_owned)
                    .collect(),
            ))),
            (Kind::Count | Kind::Each, other) => {
                Err(format!("{at}: `#` needs an array, found {}", kind(other)))
            }
            (Kind::Query(query), Node::Array(items)) => {
                let mut matches = items.iter().filter(|item| query.matches(item));
                if query.all {
                    Ok(Cow::Owned(Node::Array(
                        matches
                            .filter_map(|item| self.walk(item, rest).ok())
                            .map(Cow::into_owned)
                            .collect(),
                    )))
                } else {
                    match matches.next() {
                        Some(item) => self.walk(item, rest),
                        None => Err(format!("{at}: no element matches")),
                    }
                }
            }
            (Kind::Query(_), other) => Err(format!(
                "{at}: a query needs an array, found {}",
                kind(other)
            )),
            (Kind::Modifier(modifier), _) => {
                let changed = apply(modifier, node, at)?;
                self.then(changed, rest)
            }
        }
    }

    /// The rest of the run from the first of `candidates` (values of matching keys, in document
    /// order) from which it resolves, as gjson searches. A modifier ends the search (gjson reads
    /// `.@name` as a pipe): it applies to the value found.
    fn search<'a>(
        &self,
        candidates: impl Iterator<Item = &'a Node>,
        rest: &[Element],
        missing: impl FnOnce() -> String,
    ) -> Found<'a> {
        let split = rest
            .iter()
            .position(|e| matches!(e.kind, Kind::Each | Kind::Query(_) | Kind::Modifier(_)))
            .filter(|&i| matches!(rest[i].kind, Kind::Modifier(_)))
            .unwrap_or(rest.len());
        let (tried, after) = rest.split_at(split);
        let mut first_error = None;
        for candidate in candidates {
            match self.walk(candidate, tried) {
                Ok(found) => return self.then(found, after),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(missing))
    }
}

impl Query {
    fn matches(&self, item: &Node) -> bool {
        let value = match (&self.path, item) {
            // gjson looks an empty path up as a key, which arrays and objects do not have.
            (None, Node::Array(_) | Node::Object(_)) => None,
            (None, scalar) => Some(Cow::Borrowed(scalar)),
            (Some(path), Node::Array(_) | Node::Object(_)) => path.eval(item).ok(),
            (Some(_), _) => return false,
        };
        let value = value.as_deref();
        match &self.test {
            Test::Exists => value.is_some(),
            Test::Compare { op, text, pattern } => {
                value.is_some_and(|v| compare(v, *op, text, pattern))
            }
            Test::Truthy { op, ish } => {
                let yes = match ish {
                    Ish::True => value.is_some_and(truthy),
                    Ish::False => value.is_none_or(falsy),
                    Ish::Null => value.is_none_or(|v| matches!(v, Node::Null)),
                    Ish::Exists => value.is_some(),
                };
                compare(&Node::Bool(yes), *op, "true", &[])
            }
        }
    }
}

/// gjson's comparison of a value with a query's value `text`.
fn compare(value: &Node, op: Op, text: &str, pattern: &[Glob]) -> bool {
    match value {
        Node::String(s) => match op {
            Op::Eq => s == text,
            Op::Ne => s != text,
            Op::Lt => s.as_str() < text,
            Op::Le => s.as_str() <= text,
            Op::Gt => s.as_str() > text,
            Op::Ge => s.as_str() >= text,
            Op::Like => glob_match(pattern, s),
            Op::NotLike => !glob_match(pattern, s),
        },
        Node::Number(n) => {
            // As gjson: a query value that reads as no number counts as 0.
            let other: f64 = text.parse().unwrap_or(0.0);
            match op {
                Op::Eq => *n == other,
                Op::Ne => *n != other,
                Op::Lt => *n < other,
                Op::Le => *n <= other,
                Op::Gt => *n > other,
                Op::Ge => *n >= other,
                Op::Like | Op::NotLike => false,
            }
        }
        Node::Bool(true) => match op {
            Op::Eq => text == "true",
            Op::Ne => text != "true",
            Op::Gt => text == "false",
            Op::Ge => true,
            _ => false,
        },
        Node::Bool(false) => match op {
            Op::Eq => text == "false",
            Op::Ne => text != "false",
            Op::Lt => text == "true",
            Op::Le => true,
            _ => false,
        },
        Node::Null | Node::Array(_) | Node::Object(_) => false,
    }
}

/// gjson's `~true`: true, a number other than 0, or a string such as "true", "t" or "1".
fn truthy(value: &Node) -> bool {
    match value {
        Node::Bool(b) => *b,
        Node::Number(n) => *n != 0.0,
        Node::String(s) => matches!(s.to_lowercase().as_str(), "1" | "t" | "true"),
        _ => false,
    }
}

/// gjson's `~false`: false, null, 0, or a string such as "false", "f" or "0".
fn falsy(value: &Node) -> bool {
    match value {
        Node::Null | Node::Bool(false) => true,
        Node::Number(n) => *n == 0.0,
        Node::String(s) => matches!(s.to_lowercase().as_str(), "0" | "f" | "false"),
        _ => false,
    }
}

/// Whether `text` matches `pattern` (`*` any run of characters, `?` any one).
fn glob_match(pattern: &[Glob], text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    // The last `*` seen, and where in `text` it is tried to end next.
    let mut star: Option<(usize, usize)> = None;
    while t < chars.len() {
        match pattern.get(p) {
            Some(Glob::Any) => {
                star = Some((p, t));
                p += 1;
            }
            Some(Glob::One) => {
                p += 1;
                t += 1;
            }
            Some(Glob::Char(c)) if *c == chars[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|g| *g == Glob::Any)
}

fn apply<'a>(modifier: &Modifier, node: &'a Node, at: &str) -> Found<'a> {
    let made = |node| Ok(Cow::Owned(node));
    let same = Ok(Cow::Borrowed(node));
    match (modifier, node) {
        (Modifier::This, _) => same,
        (Modifier::Reverse, Node::Array(items)) => {
            made(Node::Array(items.iter().rev().cloned().collect()))
        }
        (Modifier::Reverse, Node::Object(members)) => {
            made(Node::Object(members.iter().rev().cloned().collect()))
        }
        (Modifier::Reverse, _) => same,
        (Modifier::Flatten { deep }, Node::Array(items)) => {
            let mut out = Vec::new();
            flatten_into(items, *deep, &mut out);
            made(Node::Array(out))
        }
        (Modifier::Flatten { .. }, _) => same,
        (Modifier::Join { preserve }, Node::Array(items)) => made(join(items, *preserve)),
        (Modifier::Join { .. }, _) => same,
        (Modifier::Keys, Node::Object(members)) => made(Node::Array(
            members
                .iter()
                .map(|(k, _)| Node::String(k.clone()))
                .collect(),
        )),
        // gjson gives a null for each element of an array, and one for anything else.
        (Modifier::Keys, Node::Array(items)) => made(Node::Array(vec![Node::Null; items.len()])),
        (Modifier::Keys, _) => made(Node::Array(vec![Node::Null])),
        (Modifier::Values, Node::Object(members)) => made(Node::Array(
            members.iter().map(|(_, v)| v.clone()).collect(),
        )),
        (Modifier::Values, Node::Array(_)) => same,
        (Modifier::Values, scalar) => made(Node::Array(vec![scalar.clone()])),
        (Modifier::FromStr, Node::String(s)) => serde_json::from_str::<Node>(s)
            .map(Cow::Owned)
            .map_err(|_| format!("{at}: the string is not JSON")),
        (Modifier::FromStr, Node::Null) => {
            Err(format!("{at}: @fromstr needs a string, found null"))
        }
        (Modifier::FromStr, _) => same,
        (Modifier::Group, Node::Object(members)) => made(group(members)),
        (Modifier::Group, other) => Err(format!(
            "{at}: @group needs an object, found {}",
            kind(other)
        )),
        (Modifier::Dig(path), _) => {
            let mut out = Vec::new();
            dig(path, node, &mut out);
            made(Node::Array(out))
        }
    }
}

/// Each element of `items`, with arrays among them replaced by their elements (all the way
/// down when `deep`).
fn flatten_into(items: &[Node], deep: bool, out: &mut Vec<Node>) {
    for item in items {
        match item {
            Node::Array(inner) if deep => flatten_into(inner, true, out),
            Node::Array(inner) => out.extend(inner.iter().cloned()),
            other => out.push(other.clone()),
        }
    }
}

/// The members of the objects among `items` as one object: all of them when `preserve`, else
/// each key once, where it first appears, with the value it has last.
fn join(items: &[Node], preserve: bool) -> Node {
    let mut out: Vec<(String, Node)> = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for item in items {
        let Node::Object(members) = item else {
            continue;
        };
        for (key, value) in members {
            if preserve {
                out.push((key.clone(), value.clone()));
                continue;
            }
            match seen.get(key.as_str()) {
                Some(&i) => out[i].1 = value.clone(),
                None => {
                    seen.insert(key, out.len());
                    out.push((key.clone(), value.clone()));
                }
            }
        }
    }
    Node::Object(out)
}

/// An object of arrays as an array of objects: the i-th object holds the i-th element of each.
fn group(members: &[(String, Node)]) -> Node {
    let mut rows: Vec<Vec<(String, Node)>> = Vec::new();
    for (key, value) in members {
        let Node::Array(items) = value else {
            continue;
        };
        for (i, item) in items.iter().enumerate() {
            let member = (key.clone(), item.clone());
            match rows.get_mut(i) {
                Some(row) => row.push(member),
                None => rows.push(vec![member]),
            }
        }
    }
    Node::Array(rows.into_iter().map(Node::Object).collect())
}

/// What `path` finds from `node` and from everything inside it, in document order.
fn dig(path: &GjsonPath, node: &Node, out: &mut Vec<Node>) {
    if let Ok(found) = path.eval(node) {
        out.push(found.into_owned());
    }
    match node {
        Node::Array(items) => items.iter().for_each(|item| dig(path, item, out)),
        Node::Object(members) => members.iter().for_each(|(_, v)| dig(path, v, out)),
        _ => {}
    }
}

/// YAML as gjson would see it converted to JSON: scalar keys become strings, tags are dropped,
/// and non-finite floats become strings (which then fail as "not a number" rather than vanish).
fn yaml_to_node(value: serde_norway::Value) -> Node {
    use serde_norway::Value as Y;
    match value {
        Y::Null => Node::Null,
        Y::Bool(b) => Node::Bool(b),
        Y::Number(n) => {
            let f = if let Some(i) = n.as_i64() {
                i as f64
            } else if let Some(u) = n.as_u64() {
                u as f64
            } else {
                n.as_f64().unwrap_or(f64::NAN)
            };
            if f.is_finite() {
                Node::Number(f)
            } else {
                Node::String(f.to_string())
            }
        }
        Y::String(s) => Node::String(s),
        Y::Sequence(items) => Node::Array(items.into_iter().map(yaml_to_node).collect()),
        Y::Mapping(map) => Node::Object(
            map.into_iter()
                .filter_map(|(k, v)| {
                    let key = match k {
                        Y::String(s) => s,
                        Y::Number(n) => n.to_string(),
                        Y::Bool(b) => b.to_string(),
                        _ => return None,
                    };
                    Some((key, yaml_to_node(v)))
                })
                .collect(),
        ),
        Y::Tagged(tagged) => yaml_to_node(tagged.value),
    }
}

#[cfg(test)]
mod tests {
    use super::super::extract::{Format, Location};

    fn get(format: Format, location: &str, body: &str) -> Result<f64, String> {
        let loc = Location::parse(location, format)?;
        loc.extract(body.as_bytes(), format).map_err(|e| e.0)
    }

    /// The error for an array where a number is expected.
    macro_rules! array_of {
        ($n:literal) => {
            concat!(
                "expected a number or a numeric string, found an array of ",
                $n,
                " (end the path with |# to count them, or |0 for the first)"
            )
        };
    }

    /// Checks each `(location, expected)` against `body`; an expected error is the whole message.
    fn check(format: Format, body: &str, cases: &[(&str, Result<f64, &str>)]) {
        for (location, expected) in cases {
            let expected = expected.map_err(String::from);
            assert_eq!(get(format, location, body), expected, "{location}");
        }
    }

    const JSON: &str = r#"{
        "components": {"worker": {"tasks": 12, "queued": "7", "mem": "1.5Gi", "cpu": "250m",
                       "big": "10k", "neg": -3, "frac": 0.25, "exp": 2e3}},
        "items": [{"count": 4}, {"count": 9}],
        "empty": [],
        "a.b": {"c": 5},
        "weird*": 6,
        "0": 8,
        "flag": true, "nothing": null, "text": "many", "nan": "NaN", "huge": "1e999",
        "obj": {"x": 1},
        "matrix": [[1, 2], [3]]
    }"#;

    #[test]
    fn json_paths_and_values() {
        let cases: &[(&str, f64)] = &[
            ("components.worker.tasks", 12.0),
            ("components.worker.queued", 7.0),
            ("components.worker.mem", 1.5 * 1024.0 * 1024.0 * 1024.0),
            ("components.worker.cpu", 0.25),
            ("components.worker.big", 10_000.0),
            ("components.worker.neg", -3.0),
            ("components.worker.frac", 0.25),
            ("components.worker.exp", 2000.0),
            ("items.0.count", 4.0),
            ("items.1.count", 9.0),
            ("items.#", 2.0),
            ("empty.#", 0.0),
            (r"a\.b.c", 5.0),
            (r"weird\*", 6.0),
            ("0", 8.0),
        ];
        for (location, expected) in cases {
            assert_eq!(
                get(Format::Json, location, JSON),
                Ok(*expected),
                "{location}"
            );
        }
    }

    #[test]
    fn json_errors_name_the_path_and_never_give_zero() {
        check(
            Format::Json,
            JSON,
            &[
                (
                    "components.worker.missing",
                    Err("components.worker.missing: no such key"),
                ),
                (
                    "items.5.count",
                    Err("items.5: index 5 is past the end of an array of 2"),
                ),
                (
                    "items.99999999999999999999999",
                    Err(
                        "items.99999999999999999999999: index 99999999999999999999999 is past the \
                         end of an array of 2",
                    ),
                ),
                (
                    "items.first",
                    Err("items.first: an array needs a numeric index"),
                ),
                (
                    "components.worker.tasks.x",
                    Err("components.worker.tasks.x: cannot descend into a number"),
                ),
                ("obj.#", Err("obj.#: `#` needs an array, found an object")),
                (
                    "flag",
                    Err("expected a number or a numeric string, found a boolean"),
                ),
                (
                    "nothing",
                    Err("expected a number or a numeric string, found null"),
                ),
                (
                    "obj",
                    Err("expected a number or a numeric string, found an object"),
                ),
                ("items", Err(array_of!("2 elements"))),
                (
                    "text",
                    Err("expected a number or a numeric string, found the string \"many\""),
                ),
                (
                    "nan",
                    Err("expected a number or a numeric string, found the string \"NaN\""),
                ),
                (
                    "huge",
                    Err("expected a number or a numeric string, found the string \"1e999\""),
                ),
            ],
        );
        let err = get(Format::Json, "a", "<html>oops</html>").unwrap_err();
        assert!(err.starts_with("the body is not valid JSON"), "{err}");
        assert!(get(Format::Json, "a", "").is_err());
    }

    /// The document of gjson's SYNTAX.md.
    const FRIENDS: &str = r#"{
        "name": {"first": "Tom", "last": "Anderson"},
        "age": 37,
        "children": ["Sara", "Alex", "Jack"],
        "fav.movie": "Deer Hunter",
        "friends": [
            {"first": "Dale", "last": "Murphy", "age": 44, "nets": ["ig", "fb", "tw"]},
            {"first": "Roger", "last": "Craig", "age": 68, "nets": ["fb", "tw"]},
            {"first": "Jane", "last": "Murphy", "age": 47, "nets": ["ig", "tw"]}
        ]
    }"#;

    /// gjson's own examples, each led to a number where gjson's answer is a name.
    #[test]
    fn gjson_documentation_examples() {
        check(
            Format::Json,
            FRIENDS,
            &[
                ("age", Ok(37.0)),
                ("children.#", Ok(3.0)),
                ("friends.#", Ok(3.0)),
                ("friends.1.age", Ok(68.0)),
                ("child*.#", Ok(3.0)),
                ("c?ildren.#", Ok(3.0)),
                (r#"friends.#(last=="Murphy").age"#, Ok(44.0)),
                (r#"friends.#(last="Murphy").age"#, Ok(44.0)),
                (r#"friends.#(last=="Murphy")#|#"#, Ok(2.0)),
                (r#"friends.#(last=="Murphy")#|1.age"#, Ok(47.0)),
                (r#"friends.#(last=="Murphy")#.age|1"#, Ok(47.0)),
                ("friends.#(age>45).age", Ok(68.0)),
                ("friends.#(age>45)#|#", Ok(2.0)),
                ("friends.#(age>99)#|#", Ok(0.0)),
                (r#"friends.#(first%"D*").age"#, Ok(44.0)),
                (r#"friends.#(first!%"D*").age"#, Ok(68.0)),
                (r#"friends.#(nets.#(=="fb")).age"#, Ok(44.0)),
                (r#"friends.#(nets.#(=="fb"))#|#"#, Ok(2.0)),
                ("friends.#(nets.#>2).age", Ok(44.0)),
                ("friends.#.age|2", Ok(47.0)),
                ("friends.#.age|#", Ok(3.0)),
                ("friends|#", Ok(3.0)),
                ("friends|0.age", Ok(44.0)),
                ("friends.0|age", Ok(44.0)),
                ("friends|0|age", Ok(44.0)),
                ("friends.#[age>45]#|#", Ok(2.0)),
                ("children.@reverse.#", Ok(3.0)),
                ("friends.@reverse.0.age", Ok(47.0)),
                ("@this.age", Ok(37.0)),
                ("friends.#.nets|@flatten|#", Ok(7.0)),
                ("friends.0.@keys|#", Ok(4.0)),
                ("@dig:age|#", Ok(4.0)),
                ("@dig:age|3", Ok(47.0)),
                ("friends.#(age>45)#.age", Err(array_of!("2 elements"))),
                ("friends.#.nets.#", Err(array_of!("3 elements"))),
                (
                    r#"children.#(!%"*a*")"#,
                    Err("expected a number or a numeric string, found the string \"Alex\""),
                ),
                (
                    r"fav\.movie",
                    Err("expected a number or a numeric string, found the string \"Deer Hunter\""),
                ),
                (
                    r#"friends.#(last=="Smith").age"#,
                    Err(r#"friends.#(last=="Smith"): no element matches"#),
                ),
                (
                    r#"friends.#(last=="Murphy")#|first"#,
                    Err(r#"friends.#(last=="Murphy")#|first: an array needs a numeric index"#),
                ),
                ("name.#", Err("name.#: `#` needs an array, found an object")),
                (
                    "name.#(a>1)",
                    Err("name.#(a>1): a query needs an array, found an object"),
                ),
                ("friends.#.age.0", Err(array_of!("0 elements"))),
            ],
        );
    }

    #[test]
    fn wildcards_take_the_first_key_in_document_order() {
        let body = r#"{"zeta": {"n": 1}, "alpha": {"n": 2, "m": 3}, "a.b": 4, "a*": 5,
                       "q1": 6, "q22": 7, "list": [1, 2], "dup": 1, "dup": {"x": 9}}"#;
        check(
            Format::Json,
            body,
            &[
                ("*.n", Ok(1.0)),
                ("*.m", Ok(3.0)),
                ("a*.n", Ok(2.0)),
                (r"a\*", Ok(5.0)),
                (r"a\.*", Ok(4.0)),
                ("q?", Ok(6.0)),
                ("q??", Ok(7.0)),
                ("q?2", Ok(7.0)),
                ("l*.#", Ok(2.0)),
                ("*.#", Ok(2.0)),
                ("dup", Ok(1.0)),
                ("dup.x", Ok(9.0)),
                (
                    "*",
                    Err("expected a number or a numeric string, found an object"),
                ),
                (
                    "list.*",
                    Err("list.*: wildcards match the keys of an object, found an array"),
                ),
                ("x*", Err("x*: no key matches")),
                ("*.zz", Err("*.zz: no such key")),
            ],
        );
    }

    #[test]
    fn hash_counts_and_collects_and_pipes_reduce() {
        check(
            Format::Json,
            JSON,
            &[
                ("items.#.count|0", Ok(4.0)),
                ("items.#.count|1", Ok(9.0)),
                ("items.#.count|#", Ok(2.0)),
                ("items.#.missing|#", Ok(0.0)),
                ("matrix.#.#|0", Ok(2.0)),
                ("matrix.#.#|1", Ok(1.0)),
                ("matrix.#.0|1", Ok(3.0)),
                ("items|0.count", Ok(4.0)),
                ("items|#", Ok(2.0)),
                ("items.0|count", Ok(4.0)),
                ("components|worker|tasks", Ok(12.0)),
                (
                    "items.#.count|2",
                    Err("items.#.count|2: index 2 is past the end of an array of 2"),
                ),
                ("items.#|0", Err("items.#|0: cannot descend into a number")),
                ("obj.#.x", Err("obj.#: `#` needs an array, found an object")),
                ("items.#.count", Err(array_of!("2 elements"))),
            ],
        );
    }

    #[test]
    fn queries_compare_like_gjson() {
        // The values of gjson's SYNTAX.md `~` example, with some more.
        let body = r#"{
            "vals": [
                {"a": 1, "b": "data"}, {"a": 2, "b": true}, {"a": 3, "b": false},
                {"a": 4, "b": "0"}, {"a": 5, "b": 0}, {"a": 6, "b": "1"}, {"a": 7, "b": 1},
                {"a": 8, "b": "true"}, {"a": 9, "b": false}, {"a": 10, "b": null}, {"a": 11}
            ],
            "nums": [1, "5", true, false, null, [2], {"k": 3}, "abc"],
            "jobs": [
                {"meta": {"queue": "a", "priority": 2}, "pending": 3, "state": "running"},
                {"meta": {"queue": "b", "priority": 5}, "pending": 7, "state": "waiting"},
                {"meta": {"queue": "a", "priority": 9}, "pending": 1, "state": "wait\"ing"}
            ]
        }"#;
        check(
            Format::Json,
            body,
            &[
                // Numbers: every operator.
                ("vals.#(a==11).a", Ok(11.0)),
                ("vals.#(a!=1)#|#", Ok(10.0)),
                ("vals.#(a<2).a", Ok(1.0)),
                ("vals.#(a<=2)#|#", Ok(2.0)),
                ("vals.#(a>9)#|#", Ok(2.0)),
                ("vals.#(a>=10)#|#", Ok(2.0)),
                ("vals.#( a > 9 )#|#", Ok(2.0)),
                ("vals.#(a>1e1).a", Ok(11.0)),
                ("vals.#(a==-1)#|#", Ok(0.0)),
                // A number against a string reads the string as a number; against true, false
                // or null (no number) it reads 0, as gjson does.
                (r#"vals.#(a=="4").a"#, Ok(4.0)),
                ("vals.#(b==true)#|#", Ok(3.0)),
                ("vals.#(b==true)#.a|1", Ok(5.0)),
                ("vals.#(b==null)#.a|0", Ok(5.0)),
                ("vals.#(b!=null)#|#", Ok(8.0)),
                // Booleans.
                ("vals.#(b!=true)#|#", Ok(6.0)),
                ("vals.#(b>false)#|#", Ok(3.0)),
                ("vals.#(b<true)#|#", Ok(5.0)),
                ("vals.#(b<=true)#|#", Ok(7.0)),
                ("vals.#(b>=false)#|#", Ok(4.0)),
                // Strings and like patterns.
                (r#"vals.#(b=="0")#|#"#, Ok(2.0)),
                (r#"vals.#(b%"*a*")#.a|0"#, Ok(1.0)),
                (r#"vals.#(b!%"*a*")#|#"#, Ok(3.0)),
                (r#"vals.#(b%"?")#|#"#, Ok(2.0)),
                (r#"vals.#(b%"t\\*")#|#"#, Ok(0.0)),
                // Existence.
                ("vals.#(b)#|#", Ok(10.0)),
                // The element itself.
                ("nums.#(==5)#|#", Ok(1.0)),
                (r#"nums.#(>"4")#|#"#, Ok(2.0)),
                ("nums.#(!=1)#|#", Ok(4.0)),
                ("nums.#(==true)#|#", Ok(1.0)),
                ("nums.#(k==3)#|#", Ok(1.0)),
                ("nums.#(k==3).k", Ok(3.0)),
                // A path on the left.
                (r#"jobs.#(meta.queue=="b").pending"#, Ok(7.0)),
                (r#"jobs.#(meta.queue=="a")#|#"#, Ok(2.0)),
                (r#"jobs.#(meta.queue=="c")#|#"#, Ok(0.0)),
                ("jobs.#(meta.priority>=5)#.pending|@reverse|0", Ok(1.0)),
                (r#"jobs.#(state=="wait\"ing").pending"#, Ok(1.0)),
                (r#"jobs.#(state=="waiting")#.pending|0"#, Ok(7.0)),
                (r#"jobs.#(state%"wait*")#|#"#, Ok(2.0)),
                (r#"jobs.#(meta.#(=="a"))#|#"#, Ok(0.0)),
                (
                    r#"jobs.#(meta.queue=="c").pending"#,
                    Err(r#"jobs.#(meta.queue=="c"): no element matches"#),
                ),
                (
                    r#"jobs.#(meta.queue=="a").missing"#,
                    Err(r#"jobs.#(meta.queue=="a").missing: no such key"#),
                ),
            ],
        );
    }

    #[test]
    fn query_truthiness() {
        // gjson's SYNTAX.md example: `vals.#(b==~true)#.a` is [2,6,7,8], and so on.
        let body = r#"{"vals": [
            {"a": 1, "b": "data"}, {"a": 2, "b": true}, {"a": 3, "b": false}, {"a": 4, "b": "0"},
            {"a": 5, "b": 0}, {"a": 6, "b": "1"}, {"a": 7, "b": 1}, {"a": 8, "b": "true"},
            {"a": 9, "b": false}, {"a": 10, "b": null}, {"a": 11}
        ], "nums": [1, "5", true, false, null, [2], {"k": 3}, "abc"]}"#;
        check(
            Format::Json,
            body,
            &[
                ("vals.#(b==~true)#|#", Ok(4.0)),
                ("vals.#(b==~true)#.a|3", Ok(8.0)),
                ("vals.#(b==~false)#|#", Ok(6.0)),
                ("vals.#(b==~false)#.a|5", Ok(11.0)),
                ("vals.#(b==~null)#|#", Ok(2.0)),
                ("vals.#(b==~*)#|#", Ok(10.0)),
                ("vals.#(b!=~*).a", Ok(11.0)),
                ("vals.#(b!=~true)#|#", Ok(7.0)),
                ("nums.#(==~true)#|#", Ok(2.0)),
                ("nums.#(==~false)#|#", Ok(4.0)),
            ],
        );
    }

    #[test]
    fn modifiers() {
        let body = r#"{
            "obj": {"z": 1, "y": 2, "x": 3},
            "nested": [1, [2, [3, [4]]], [], [5]],
            "objs": [{"a": 1, "b": 2}, {"b": 3}, 7, {"c": 4}],
            "s": "{\"q\": 12}", "s2": "12", "s3": "nope", "none": null,
            "grp": {"id": [1, 2, 3], "n": [10, 20], "x": 5},
            "deep": {"a": {"count": 2, "b": {"count": 5}}, "count": 1},
            "@odata.count": 12, "@foo": 3, "num": 4
        }"#;
        check(
            Format::Json,
            body,
            &[
                ("obj.@this.y", Ok(2.0)),
                ("@this|obj|y", Ok(2.0)),
                ("obj.@reverse.@values.0", Ok(3.0)),
                ("obj.@reverse|@keys|#", Ok(3.0)),
                ("obj.@values|2", Ok(3.0)),
                ("obj.@values.0", Ok(1.0)),
                ("obj.@keys.#", Ok(3.0)),
                ("num.@reverse", Ok(4.0)),
                ("num.@values.0", Ok(4.0)),
                ("objs.@keys|#", Ok(4.0)),
                ("nested.@flatten|#", Ok(4.0)),
                ("nested.@flatten.2.0", Ok(3.0)),
                (r#"nested.@flatten:{"deep":true}|#"#, Ok(5.0)),
                (r#"nested.@flatten:{"deep":true}.3"#, Ok(4.0)),
                (r#"nested.@flatten:{"deep":false}|#"#, Ok(4.0)),
                ("objs.@join.b", Ok(3.0)),
                ("objs.@join|@keys|#", Ok(3.0)),
                (r#"objs.@join:{"preserve":true}.b"#, Ok(2.0)),
                (r#"objs.@join:{"preserve":true}|@keys|#"#, Ok(4.0)),
                ("s.@fromstr.q", Ok(12.0)),
                ("s2.@fromstr", Ok(12.0)),
                ("num.@fromstr", Ok(4.0)),
                ("grp.@group|#", Ok(3.0)),
                ("grp.@group.#(id==2).n", Ok(20.0)),
                ("grp.@group.2.id", Ok(3.0)),
                ("deep.@dig:count|#", Ok(3.0)),
                ("deep.@dig:count|0", Ok(1.0)),
                ("deep.@dig:count|2", Ok(5.0)),
                ("@dig:c*|#", Ok(4.0)),
                // No gjson modifier has these names: they are keys, as in gjson.
                (r"@odata\.count", Ok(12.0)),
                ("@foo", Ok(3.0)),
                ("s3.@fromstr", Err("s3.@fromstr: the string is not JSON")),
                (
                    "none.@fromstr",
                    Err("none.@fromstr: @fromstr needs a string, found null"),
                ),
                (
                    "s.@group",
                    Err("s.@group: @group needs an object, found a string"),
                ),
                ("obj.@keys", Err(array_of!("3 elements"))),
                // gjson reads a missing value as an empty array here (0); ebb says what is
                // missing, never 0.
                ("missing.@keys|#", Err("missing: no such key")),
                ("missing.@values|#", Err("missing: no such key")),
                ("missing.@dig:a|#", Err("missing: no such key")),
                (
                    "objs.@join",
                    Err("expected a number or a numeric string, found an object"),
                ),
            ],
        );
    }

    #[test]
    fn unsupported_gjson_syntax_is_refused_up_front() {
        let too_deep = format!("a{}", ".#(b".repeat(10) + &")".repeat(10));
        let too_long = vec!["a"; 300].join(".");
        let cases: &[(&str, &str)] = &[
            ("", "expected a path"),
            ("  ", "expected a path"),
            ("a..b", "element 2 is empty"),
            (".a", "element 1 is empty"),
            ("a.", "element 2 is empty"),
            ("a|", "element 2 is empty"),
            ("|a", "element 1 is empty"),
            ("a|.b", "element 2 is empty"),
            (
                "..a",
                "gjson's `..` JSON Lines paths are not supported by ebb",
            ),
            ("items.#x", "`#` must be a whole element"),
            (
                "@pretty",
                "gjson's @pretty modifier is not supported by ebb: it only reformats JSON text",
            ),
            ("a.@ugly", "gjson's @ugly modifier is not supported"),
            ("a.@valid", "gjson's @valid modifier is not supported"),
            ("a|@tostr", "gjson's @tostr modifier is not supported"),
            ("@pretty:{\"sortKeys\":true}", "@pretty modifier"),
            ("@reverse:x", "@reverse takes no argument"),
            ("@this:", "@this takes no argument"),
            (
                "@flatten:deep",
                "@flatten's argument must be a JSON object such as {\"deep\":true}",
            ),
            ("@flatten:{\"deep\":tru}", "@flatten's argument"),
            (
                "@join:{\"preserve\":true",
                "@join's argument must be a JSON object",
            ),
            ("@dig", "@dig needs a key"),
            ("@dig:", "@dig needs a key"),
            (
                "@dig:a.#",
                "@dig needs a key to look for at any depth, as in @dig:count, not \"a.#\"",
            ),
            ("@dig:#(a>1)", "@dig needs a key"),
            (
                "[a,b]",
                "gjson's multipaths are not supported by ebb (element \"[a,b]\")",
            ),
            ("{a}", "multipaths"),
            ("a.[b]", "multipaths"),
            ("!true", "gjson's literals are not supported by ebb"),
            ("a\\", "lone backslash"),
            ("a.#(b==1", "the query \"#(b==1\" is not closed"),
            ("a.#(b==\"x)", "a double-quoted string is not closed"),
            (
                "a.#(b==x)",
                "in the query \"#(b==x)\": the value \"x\" must be a number, a double-quoted \
                 string (\"x\"), true, false or null",
            ),
            ("a.#(b==)", "expected a value after `==`"),
            ("a.#(b<)", "expected a value after `<`"),
            ("a.#(b!1)", "`!` must be part of `!=` or `!%`"),
            ("a.#(b==~maybe)", "expected ~true, ~false, ~null or ~*"),
            ("a.#()", "in the query \"#()\": it is empty"),
            ("a.#(  )#", "it is empty"),
            ("a.#(b==1)x", "unexpected \"x\" after \"#(b==1)\""),
            ("a.#(b==1)##", "unexpected \"#\" after \"#(b==1)#\""),
            (
                "a.#(b==\"x\" \"y\")",
                "\"x\" \"y\" is not one double-quoted string",
            ),
            ("a.#(b==1e)", "must be a number"),
            ("a.#(b==-inf)", "must be a number"),
            ("a.#(c..d==1)", "element 2 is empty"),
            (
                &too_deep,
                "queries and @dig arguments nest more than 8 deep",
            ),
            (&too_long, "the path has more than 256 elements"),
        ];
        for (location, problem) in cases {
            let err = Location::parse(location, Format::Json).unwrap_err();
            assert!(err.contains(problem), "{location}: {err}");
            let err = Location::parse(location, Format::Yaml).unwrap_err();
            assert!(err.contains(problem), "{location}: {err}");
        }
        // Escaped, the same characters are plain key text.
        let body = r##"{"#": {"@x": {"a|b": {"*": {"!": {"[": 3}}}}}}"##;
        assert_eq!(get(Format::Json, r"\#.\@x.a\|b.\*.\!.\[", body), Ok(3.0));
        // The deepest nesting allowed parses.
        let deep_enough = format!("a{}", ".#(b".repeat(7) + &")".repeat(7));
        assert!(Location::parse(&deep_enough, Format::Json).is_ok());
    }

    #[test]
    fn yaml_uses_the_same_paths() {
        let body = "components:\n  worker:\n    tasks: 12\n    queued: \"7\"\n    mem: 2Ki\n\
                    items:\n  - count: 4\n  - count: 9\n1: 3\nnan: .nan\ninf: .inf\nflag: yes\n\
                    zeta:\n  n: 1\nalpha:\n  n: 2\n\
                    jobs:\n  - {queue: a, pending: 3}\n  - {queue: b, pending: 7}\n  \
                    - {queue: a, pending: 1}\n";
        check(
            Format::Yaml,
            body,
            &[
                ("components.worker.tasks", Ok(12.0)),
                ("components.worker.queued", Ok(7.0)),
                ("components.worker.mem", Ok(2048.0)),
                ("items.1.count", Ok(9.0)),
                ("items.#", Ok(2.0)),
                ("1", Ok(3.0)),
                ("*.n", Ok(1.0)),
                (r#"jobs.#(queue=="a")#|#"#, Ok(2.0)),
                (r#"jobs.#(queue=="b").pending"#, Ok(7.0)),
                ("jobs.#.pending|@reverse|0", Ok(1.0)),
                ("@dig:pending|#", Ok(3.0)),
                ("components.nope", Err("components.nope: no such key")),
                ("jobs.#.pending", Err(array_of!("3 elements"))),
                (
                    "nan",
                    Err("expected a number or a numeric string, found the string \"NaN\""),
                ),
                (
                    "inf",
                    Err("expected a number or a numeric string, found the string \"inf\""),
                ),
                (
                    "flag",
                    Err("expected a number or a numeric string, found the string \"yes\""),
                ),
            ],
        );
        let err = get(Format::Yaml, "a", "a: [1, 2\n").unwrap_err();
        assert!(err.starts_with("the body is not valid YAML"), "{err}");
    }
}
