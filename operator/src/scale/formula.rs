//! `advanced.scalingModifiers.formula`: an expression over trigger names that yields the
//! composite metric. Compiled once per ScaledObject generation, evaluated at every poll.
//!
//! The language is the numeric part of expr (github.com/expr-lang/expr), which KEDA evaluates
//! formulas with, and follows its precedence and semantics:
//!
//! - numbers (`2`, `2.5`, `.5`, `1e3`, `1_000`, `0x1F`, `0o17`, `0b101`), `true`, `false`, trigger
//!   names (letters, digits and `_`; `a-b` is a subtraction), parentheses, `//` and `/* */`
//!   comments;
//! - `+ - * / %`, power `**` or `^` (right-associative and tighter than unary minus: `-2 ** 2` is
//!   -4, `2 ** 3 ** 2` is 512), unary `-` and `+`;
//! - comparisons `== != < <= > >=`, chained as in expr (`1 < a < 3` is `1 < a && a < 3`); `!` or
//!   `not`, `&&` or `and`, `||` or `or`;
//! - `c ? a : b`, `c ?: b`, `if c { a } else { b }` (also `else if`);
//! - `a ?? b`: `b` when trigger `a` failed. As in expr it binds tightest, and mixing it with
//!   another operator needs parentheses (`(a ?? 0) + b`);
//! - arrays `[a, b, c]` and predicates `{# > 1}` (braces optional; `#` is the element, `#index`
//!   its position), taken by `all`, `any`, `none`, `one`, `count`, `filter` and `map`;
//!   `count(array)` counts the `true` elements, `filter` and `map` yield arrays;
//! - the functions `min`, `max`, `mean`, `median` (numbers or arrays, nested arrays flattened),
//!   `sum(array)` and `sum(array, predicate)`, `len(array)`, `abs`, `ceil`, `floor`, `round`,
//!   `float`, `int` (truncates toward zero).
//!
//! What expr has and ebb does not is refused at compile time with an error naming it: string
//! literals, `|` pipes, `..` ranges, `.` and `?.` member access, `[…]` indexing, map literals,
//! `let`, `;`, `nil`, `$env`, `in`, `matches`, `contains`, `startsWith`, `endsWith`, and any other
//! function (the error lists the ones ebb knows). So are unknown trigger names (inside arrays
//! and predicates too), `#` outside a predicate, and nesting deeper than 64 levels.
//!
//! Booleans, numbers and arrays do not mix: `1 + (a > b)` is an error. A failed trigger flows
//! through arrays and predicates; using it where a value is needed is an error naming it. The
//! result must be a finite number (KEDA wraps the formula in `float()`); an evaluation taking
//! more than a million steps (predicates nested over large arrays) is an error.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;

/// Why a formula was refused or could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormulaError {
    /// The text is not a formula.
    #[error("formula: {problem} at character {position}")]
    Syntax {
        /// What was wrong.
        problem: String,
        /// 1-based character position.
        position: usize,
    },
    /// A name is not one of the ScaledObject's trigger names.
    #[error("formula: unknown trigger name {name:?}; the named triggers are: {known}")]
    UnknownName {
        /// The name.
        name: String,
        /// The trigger names, comma-separated.
        known: String,
    },
    /// Evaluation failed.
    #[error("formula: {0}")]
    Evaluation(String),
}

/// A compiled formula.
#[derive(Debug, Clone, PartialEq)]
pub struct Formula {
    root: Expr,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Number(f64),
    Bool(bool),
    Name(String),
    /// `#` or `#index`, inside a predicate.
    Pointer(Pointer),
    Array(Vec<Expr>),
    Unary(UnaryOp, Box<Expr>),
    /// `first op e op e …`, applied left to right. Flat, so a long sum does not nest deeply.
    Chain(Box<Expr>, Vec<(BinaryOp, Expr)>),
    /// `a < b <= c`: each adjacent pair compared (and-ed), each operand evaluated once.
    Compare(Box<Expr>, Vec<(CompareOp, Expr)>),
    Ternary(Box<Expr>, Box<Expr>, Box<Expr>),
    /// A function; for one taking a predicate, the second argument is the predicate's body.
    Call(Function, Vec<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Pointer {
    Element,
    Index,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum UnaryOp {
    Negate,
    Plus,
    Not,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum BinaryOp {
    Add,
    Subtract,
    Multiply,
    Divide,
    Remainder,
    Power,
    And,
    Or,
    Coalesce,
}

impl BinaryOp {
    fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Subtract => "subtract",
            BinaryOp::Multiply => "multiply",
            BinaryOp::Divide => "divide",
            BinaryOp::Remainder => "remainder",
            BinaryOp::Power => "power",
            BinaryOp::And => "&&",
            BinaryOp::Or => "||",
            BinaryOp::Coalesce => "??",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CompareOp {
    Equal,
    NotEqual,
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
}

impl CompareOp {
    fn symbol(self) -> &'static str {
        match self {
            CompareOp::Equal => "==",
            CompareOp::NotEqual => "!=",
            CompareOp::Less => "<",
            CompareOp::LessEqual => "<=",
            CompareOp::Greater => ">",
            CompareOp::GreaterEqual => ">=",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Function {
    Abs,
    All,
    Any,
    Ceil,
    Count,
    Filter,
    Float,
    Floor,
    Int,
    Len,
    Map,
    Max,
    Mean,
    Median,
    Min,
    NoneOf,
    One,
    Round,
    Sum,
}

/// ebb's functions, alphabetically (the order an unknown function's error lists them in).
const FUNCTIONS: &[(&str, Function)] = &[
    ("abs", Function::Abs),
    ("all", Function::All),
    ("any", Function::Any),
    ("ceil", Function::Ceil),
    ("count", Function::Count),
    ("filter", Function::Filter),
    ("float", Function::Float),
    ("floor", Function::Floor),
    ("int", Function::Int),
    ("len", Function::Len),
    ("map", Function::Map),
    ("max", Function::Max),
    ("mean", Function::Mean),
    ("median", Function::Median),
    ("min", Function::Min),
    ("none", Function::NoneOf),
    ("one", Function::One),
    ("round", Function::Round),
    ("sum", Function::Sum),
];

impl Function {
    fn named(name: &str) -> Option<Self> {
        FUNCTIONS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    fn name(self) -> &'static str {
        FUNCTIONS
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("?", |(n, _)| n)
    }

    /// For a function taking an array and a predicate: whether the predicate is optional.
    fn predicate(self) -> Option<bool> {
        match self {
            Function::All
            | Function::Any
            | Function::NoneOf
            | Function::One
            | Function::Filter
            | Function::Map => Some(false),
            Function::Count | Function::Sum => Some(true),
            _ => None,
        }
    }

    fn usage(self) -> String {
        let name = self.name();
        match self {
            Function::Min | Function::Max | Function::Mean | Function::Median => {
                format!("{name}(a, b, ...) or {name}(array)")
            }
            Function::Len => "len(array)".into(),
            Function::Count | Function::Sum => format!("{name}(array) or {name}(array, predicate)"),
            _ if self.predicate().is_some() => format!("{name}(array, predicate)"),
            _ => format!("{name}(number)"),
        }
    }

    fn arity_ok(self, args: usize) -> bool {
        match self {
            Function::Min | Function::Max | Function::Mean | Function::Median => args >= 1,
            Function::Count | Function::Sum => args == 1 || args == 2,
            _ if self.predicate().is_some() => args == 2,
            _ => args == 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    Name(String),
    /// `#` followed by its name, if any (`#index`).
    Pointer(String),
    /// An operator, bracket or keyword.
    Symbol(&'static str),
}

/// Longest first, so `<=` is not read as `<`.
const SYMBOLS: &[&str] = &[
    "??", "==", "!=", "<=", ">=", "&&", "||", "**", "+", "-", "*", "/", "%", "^", "<", ">", "!",
    "?", ":", "(", ")", ",", "[", "]", "{", "}",
];

/// Deepest nesting accepted, so a hostile formula cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

/// Most evaluation steps, so predicates nested over large arrays cannot take minutes.
const MAX_STEPS: usize = 1_000_000;

fn refuse<T>(problem: impl Into<String>, position: usize) -> Result<T, FormulaError> {
    Err(FormulaError::Syntax {
        problem: problem.into(),
        position,
    })
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn word_end(chars: &[char], start: usize) -> usize {
    let mut end = start;
    while chars.get(end).is_some_and(|c| is_word_char(*c)) {
        end += 1;
    }
    end
}

/// The length of the number literal at the start of `chars`, read as expr's lexer reads it:
/// an optional `0x`/`0o`/`0b` prefix, digits and `_`, a fraction unless `..` follows, and an
/// exponent.
fn scan_number(chars: &[char]) -> usize {
    let mut digits: fn(char) -> bool = |c| c.is_ascii_digit() || c == '_';
    let mut end = 0;
    if chars.first() == Some(&'0') {
        end = 1;
        let prefixed: Option<fn(char) -> bool> = match chars.get(1) {
            Some('x' | 'X') => Some(|c| c.is_ascii_hexdigit() || c == '_'),
            Some('o' | 'O') => Some(|c| ('0'..='7').contains(&c) || c == '_'),
            Some('b' | 'B') => Some(|c| c == '0' || c == '1' || c == '_'),
            _ => None,
        };
        if let Some(prefixed) = prefixed {
            digits = prefixed;
            end = 2;
        }
    }
    let run = |mut end: usize| {
        while chars.get(end).is_some_and(|c| digits(*c)) {
            end += 1;
        }
        end
    };
    end = run(end);
    if chars.get(end) == Some(&'.') {
        if chars.get(end + 1) == Some(&'.') {
            // `1..2`: the number ends before the range.
            return end;
        }
        end = run(end + 1);
    }
    if matches!(chars.get(end), Some('e' | 'E')) {
        end += 1;
        if matches!(chars.get(end), Some('+' | '-')) {
            end += 1;
        }
        end = run(end);
    }
    end
}

/// The value of a number literal, as expr reads it (`_` ignored).
fn number_value(literal: &str) -> Option<f64> {
    let cleaned: String = literal
        .chars()
        .filter(|c| *c != '_')
        .collect::<String>()
        .to_ascii_lowercase();
    let integer = |digits: &str, radix| i64::from_str_radix(digits, radix).ok().map(|n| n as f64);
    if let Some(hex) = cleaned.strip_prefix("0x") {
        integer(hex, 16)
    } else if cleaned.contains(['.', 'e']) {
        cleaned.parse().ok()
    } else if let Some(binary) = cleaned.strip_prefix("0b") {
        integer(binary, 2)
    } else if let Some(octal) = cleaned.strip_prefix("0o") {
        integer(octal, 8)
    } else {
        cleaned.parse().ok()
    }
}

fn tokenize(text: &str) -> Result<Vec<(Token, usize)>, FormulaError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let position = i + 1;
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            match (i + 2..chars.len().saturating_sub(1))
                .find(|j| chars[*j] == '*' && chars[*j + 1] == '/')
            {
                Some(j) => i = j + 2,
                None => return refuse("unclosed comment", position),
            }
        } else if c.is_ascii_digit() || (c == '.' && next.is_some_and(|n| n.is_ascii_digit())) {
            let end = i + scan_number(&chars[i..]);
            if chars
                .get(end)
                .is_some_and(|c| is_word_char(*c) || *c == '$')
            {
                let literal: String = chars[i..=end].iter().collect();
                return refuse(format!("{literal:?} is not a number"), position);
            }
            let literal: String = chars[i..end].iter().collect();
            let Some(value) = number_value(&literal) else {
                return refuse(format!("{literal:?} is not a number"), position);
            };
            if value.is_infinite() {
                return refuse(format!("the number {literal} is too large"), position);
            }
            tokens.push((Token::Number(value), position));
            i = end;
        } else if c == '"' || c == '\'' || c == '`' {
            return refuse(
                "string literals are not supported in ebb's formulas",
                position,
            );
        } else if c == '#' {
            let end = word_end(&chars, i + 1);
            tokens.push((Token::Pointer(chars[i + 1..end].iter().collect()), position));
            i = end;
        } else if c == '$'
            && chars[i + 1..word_end(&chars, i + 1)]
                .iter()
                .copied()
                .eq("env".chars())
        {
            return refuse(
                "`$env` is not supported in ebb's formulas; name the triggers directly",
                position,
            );
        } else if c.is_alphabetic() || c == '_' {
            // As in KEDA's formulas, `a-b` is a subtraction: names are letters, digits and `_`.
            let end = word_end(&chars, i);
            let word: String = chars[i..end].iter().collect();
            let token = match word.as_str() {
                "and" => Token::Symbol("&&"),
                "or" => Token::Symbol("||"),
                "not" => Token::Symbol("!"),
                "true" => Token::Symbol("true"),
                "false" => Token::Symbol("false"),
                "if" => Token::Symbol("if"),
                "else" => Token::Symbol("else"),
                "let" => {
                    return refuse(
                        "`let` variables are not supported in ebb's formulas",
                        position,
                    );
                }
                "nil" => {
                    return refuse(
                        "`nil` is not supported in ebb's formulas; a failed trigger is caught with `??`",
                        position,
                    );
                }
                "in" | "matches" | "contains" | "startsWith" | "endsWith" => {
                    return refuse(
                        format!("the `{word}` operator is not supported in ebb's formulas"),
                        position,
                    );
                }
                _ => Token::Name(word),
            };
            tokens.push((token, position));
            i = end;
        } else if c == '.' && next == Some('.') {
            return refuse("ranges `..` are not supported in ebb's formulas", position);
        } else if c == '.' {
            return refuse(
                "member access `.` is not supported in ebb's formulas",
                position,
            );
        } else if c == '?'
            && next == Some('.')
            && !chars.get(i + 2).is_some_and(char::is_ascii_digit)
        {
            return refuse(
                "member access `?.` is not supported in ebb's formulas",
                position,
            );
        } else if c == '|' && next != Some('|') {
            return refuse(
                "the pipe operator `|` is not supported in ebb's formulas",
                position,
            );
        } else if c == ';' {
            return refuse(
                "`;` (a sequence of expressions) is not supported in ebb's formulas",
                position,
            );
        } else if c == ':' && next == Some(':') {
            return refuse("`::` is not supported in ebb's formulas", position);
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let Some(symbol) = SYMBOLS.iter().find(|s| rest.starts_with(**s)) else {
                return refuse(format!("unexpected character {c:?}"), position);
            };
            tokens.push((Token::Symbol(symbol), position));
            i += symbol.chars().count();
        }
    }
    Ok(tokens)
}

/// How a binary operator is parsed: its kind and expr's precedence.
enum Operator {
    /// A left-to-right operator; `true` when right-associative (`**`).
    Binary(BinaryOp, bool),
    Compare(CompareOp),
}

fn binary_operator(symbol: &str) -> Option<(Operator, u16)> {
    Some(match symbol {
        "||" => (Operator::Binary(BinaryOp::Or, false), 10),
        "&&" => (Operator::Binary(BinaryOp::And, false), 15),
        "==" => (Operator::Compare(CompareOp::Equal), 20),
        "!=" => (Operator::Compare(CompareOp::NotEqual), 20),
        "<" => (Operator::Compare(CompareOp::Less), 20),
        "<=" => (Operator::Compare(CompareOp::LessEqual), 20),
        ">" => (Operator::Compare(CompareOp::Greater), 20),
        ">=" => (Operator::Compare(CompareOp::GreaterEqual), 20),
        "+" => (Operator::Binary(BinaryOp::Add, false), 30),
        "-" => (Operator::Binary(BinaryOp::Subtract, false), 30),
        "*" => (Operator::Binary(BinaryOp::Multiply, false), 60),
        "/" => (Operator::Binary(BinaryOp::Divide, false), 60),
        "%" => (Operator::Binary(BinaryOp::Remainder, false), 60),
        "**" | "^" => (Operator::Binary(BinaryOp::Power, true), 100),
        "??" => (Operator::Binary(BinaryOp::Coalesce, false), 500),
        _ => return None,
    })
}

/// `first` followed by `rest`, as one expression.
fn chain(first: Expr, rest: Vec<(BinaryOp, Expr)>) -> Expr {
    if rest.is_empty() {
        first
    } else {
        Expr::Chain(Box::new(first), rest)
    }
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    next: usize,
    end: usize,
    depth: usize,
    /// How many predicates the parser is inside (where `#` means the element).
    predicates: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next).map(|(t, _)| t)
    }

    fn position(&self) -> usize {
        self.tokens.get(self.next).map_or(self.end, |(_, p)| *p)
    }

    fn error<T>(&self, problem: impl Into<String>) -> Result<T, FormulaError> {
        refuse(problem, self.position())
    }

    fn at(&self, symbol: &str) -> bool {
        matches!(self.peek(), Some(Token::Symbol(s)) if *s == symbol)
    }

    fn eat(&mut self, symbol: &str) -> bool {
        let found = self.at(symbol);
        if found {
            self.next += 1;
        }
        found
    }

    fn expect(&mut self, symbol: &str) -> Result<(), FormulaError> {
        if self.eat(symbol) {
            Ok(())
        } else {
            self.error(format!("expected {symbol:?}"))
        }
    }

    /// An expression whose binary operators bind at least as tightly as `precedence` (0: any,
    /// with the ternary). Every nested expression passes here, so the depth guard covers all.
    fn expression(&mut self, precedence: u16) -> Result<Expr, FormulaError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.error(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        let result = self.operators(precedence)?;
        self.depth -= 1;
        Ok(result)
    }

    /// Precedence climbing as expr does it: left-associative operators collect into one flat
    /// chain, `**` recurses on its right, comparisons chain.
    fn operators(&mut self, precedence: u16) -> Result<Expr, FormulaError> {
        if precedence == 0 && self.at("if") {
            return self.if_else();
        }
        let mut first = self.unary()?;
        let mut rest = Vec::new();
        let mut previous = None;
        while let Some(Token::Symbol(symbol)) = self.peek() {
            let symbol: &'static str = symbol;
            let Some((operator, level)) = binary_operator(symbol) else {
                break;
            };
            if level < precedence {
                break;
            }
            if previous == Some("??") && symbol != "??" {
                return self.error(format!(
                    "`??` and `{symbol}` cannot be mixed without parentheses; wrap one of them in parentheses"
                ));
            }
            self.next += 1;
            match operator {
                Operator::Compare(op) => {
                    let mut comparisons = vec![(op, self.expression(level + 1)?)];
                    while let Some(Token::Symbol(s)) = self.peek() {
                        let Some((Operator::Compare(op), _)) = binary_operator(s) else {
                            break;
                        };
                        self.next += 1;
                        comparisons.push((op, self.expression(level + 1)?));
                    }
                    let left = chain(first, std::mem::take(&mut rest));
                    first = Expr::Compare(Box::new(left), comparisons);
                }
                Operator::Binary(op, right_associative) => {
                    let right =
                        self.expression(if right_associative { level } else { level + 1 })?;
                    rest.push((op, right));
                }
            }
            previous = Some(symbol);
        }
        let mut result = chain(first, rest);
        if precedence == 0 {
            while self.eat("?") {
                let (then, otherwise) = if self.eat(":") {
                    // `c ?: b` is `c ? c : b`; `c` is true or false, so when it holds it is true.
                    (Expr::Bool(true), self.expression(0)?)
                } else {
                    let then = self.expression(0)?;
                    self.expect(":")?;
                    (then, self.expression(0)?)
                };
                result = Expr::Ternary(Box::new(result), Box::new(then), Box::new(otherwise));
            }
        }
        Ok(result)
    }

    /// `if c { a } else { b }`, `else if` chaining: expr's other spelling of the ternary.
    fn if_else(&mut self) -> Result<Expr, FormulaError> {
        self.next += 1;
        let condition = self.expression(0)?;
        self.expect("{")?;
        let then = self.expression(0)?;
        self.expect("}")?;
        self.expect("else")?;
        let otherwise = if self.at("if") {
            self.expression(0)?
        } else {
            self.expect("{")?;
            let otherwise = self.expression(0)?;
            self.expect("}")?;
            otherwise
        };
        Ok(Expr::Ternary(
            Box::new(condition),
            Box::new(then),
            Box::new(otherwise),
        ))
    }

    /// A unary operator applies to what binds at least as tightly as it does: `-` to a power
    /// (`-2 ** 2` is -4), `!` to a product.
    fn unary(&mut self) -> Result<Expr, FormulaError> {
        let (op, precedence) = match self.peek() {
            Some(Token::Symbol("-")) => (UnaryOp::Negate, 90),
            Some(Token::Symbol("+")) => (UnaryOp::Plus, 90),
            Some(Token::Symbol("!")) => (UnaryOp::Not, 50),
            _ => return self.primary(),
        };
        self.next += 1;
        let operand = self.expression(precedence)?;
        self.postfix(Expr::Unary(op, Box::new(operand)))
    }

    /// What expr allows after a value and ebb does not.
    fn postfix(&self, expr: Expr) -> Result<Expr, FormulaError> {
        if self.at("[") {
            return self.error("indexing and slicing `[...]` are not supported in ebb's formulas");
        }
        Ok(expr)
    }

    fn primary(&mut self) -> Result<Expr, FormulaError> {
        let position = self.position();
        let expr = match self.peek().cloned() {
            Some(Token::Number(n)) => {
                self.next += 1;
                Expr::Number(n)
            }
            Some(Token::Symbol(b @ ("true" | "false"))) => {
                self.next += 1;
                Expr::Bool(b == "true")
            }
            Some(Token::Name(name)) => {
                self.next += 1;
                if self.at("(") {
                    self.call(&name, position)?
                } else {
                    Expr::Name(name)
                }
            }
            Some(Token::Pointer(name)) => {
                if self.predicates == 0 {
                    return self.error(format!(
                        "`#{name}` is only allowed inside a predicate, as in count(array, {{# > 1}})"
                    ));
                }
                let pointer = match name.as_str() {
                    "" => Pointer::Element,
                    "index" => Pointer::Index,
                    "acc" => {
                        return self.error(
                            "`#acc` is not supported in ebb's formulas (it belongs to reduce, which is not supported)",
                        );
                    }
                    _ => {
                        return self.error(format!(
                            "unknown `#{name}`; a predicate knows `#` and `#index`"
                        ));
                    }
                };
                self.next += 1;
                Expr::Pointer(pointer)
            }
            Some(Token::Symbol("(")) => {
                self.next += 1;
                let inner = self.expression(0)?;
                self.expect(")")?;
                inner
            }
            Some(Token::Symbol("[")) => {
                self.next += 1;
                Expr::Array(self.list("]")?)
            }
            Some(Token::Symbol("{")) => {
                return self.error(
                    "map literals `{...}` are not supported in ebb's formulas; braces only wrap a predicate, as in count(array, {# > 1})",
                );
            }
            Some(Token::Symbol(s)) => return self.error(format!("unexpected {s:?}")),
            None => return self.error("unexpected end of formula"),
        };
        self.postfix(expr)
    }

    /// Comma-separated expressions up to `close` (a trailing comma allowed, as in expr).
    fn list(&mut self, close: &str) -> Result<Vec<Expr>, FormulaError> {
        let mut items = Vec::new();
        while !self.eat(close) {
            if !items.is_empty() {
                self.expect(",")?;
                if self.eat(close) {
                    break;
                }
            }
            items.push(self.expression(0)?);
        }
        Ok(items)
    }

    /// A call of `name`, the parser at its `(`.
    fn call(&mut self, name: &str, position: usize) -> Result<Expr, FormulaError> {
        let Some(function) = Function::named(name) else {
            let known: Vec<&str> = FUNCTIONS.iter().map(|(n, _)| *n).collect();
            let known = match known.split_last() {
                Some((last, others)) => format!("{} and {last}", others.join(", ")),
                None => String::new(),
            };
            return refuse(
                format!("unknown function {name:?}; ebb's formulas know {known}"),
                position,
            );
        };
        self.next += 1;
        let wrong = |parser: &Self| {
            parser.error(format!(
                "wrong number of arguments to {name}; expected {}",
                function.usage()
            ))
        };
        let args = match function.predicate() {
            Some(optional) => {
                if self.at(")") {
                    return wrong(self);
                }
                let mut args = vec![self.expression(0)?];
                if !(optional && self.at(")")) {
                    if self.at(")") {
                        return wrong(self);
                    }
                    self.expect(",")?;
                    args.push(self.predicate()?);
                    self.eat(",");
                }
                self.expect(")")?;
                args
            }
            None => self.list(")")?,
        };
        if !function.arity_ok(args.len()) {
            return wrong(self);
        }
        Ok(Expr::Call(function, args))
    }

    /// A predicate's body: `{...}`, or with the braces left out, as expr allows.
    fn predicate(&mut self) -> Result<Expr, FormulaError> {
        self.predicates += 1;
        let body = if self.eat("{") {
            let body = self.expression(0)?;
            self.expect("}")?;
            body
        } else {
            self.expression(0)?
        };
        self.predicates -= 1;
        Ok(body)
    }
}

impl Formula {
    /// Compiles `text`, checking every name against `trigger_names`.
    pub fn compile(text: &str, trigger_names: &[&str]) -> Result<Self, FormulaError> {
        let tokens = tokenize(text)?;
        if tokens.is_empty() {
            return refuse("empty formula", 1);
        }
        let mut parser = Parser {
            tokens,
            next: 0,
            end: text.chars().count() + 1,
            depth: 0,
            predicates: 0,
        };
        let root = parser.expression(0)?;
        if parser.next < parser.tokens.len() {
            return parser.error("unexpected text after the formula");
        }
        let formula = Self { root };
        let mut names = Vec::new();
        collect_names(&formula.root, &mut names);
        if let Some(unknown) = names.iter().find(|n| !trigger_names.contains(&n.as_str())) {
            return Err(FormulaError::UnknownName {
                name: (*unknown).clone(),
                known: trigger_names.join(", "),
            });
        }
        Ok(formula)
    }

    /// Evaluates with each trigger's value, `None` for a trigger that failed.
    pub fn evaluate(&self, values: &BTreeMap<String, Option<f64>>) -> Result<f64, FormulaError> {
        let steps = Cell::new(0);
        let scope = Scope {
            values,
            element: None,
            steps: &steps,
        };
        match eval(&self.root, &scope)? {
            Value::Number(n) if n.is_finite() => Ok(n),
            Value::Number(n) => Err(FormulaError::Evaluation(format!(
                "the result is {n}, not a finite number"
            ))),
            Value::Bool(_) => Err(FormulaError::Evaluation(
                "the result is true or false, not a number".into(),
            )),
            Value::Array(_) => Err(FormulaError::Evaluation(
                "the result is an array, not a number".into(),
            )),
            Value::Missing(name) => Err(failed(&name)),
        }
    }
}

fn collect_names<'a>(expr: &'a Expr, names: &mut Vec<&'a String>) {
    match expr {
        Expr::Number(_) | Expr::Bool(_) | Expr::Pointer(_) => {}
        Expr::Name(n) => names.push(n),
        Expr::Unary(_, e) => collect_names(e, names),
        Expr::Array(items) | Expr::Call(_, items) => {
            items.iter().for_each(|e| collect_names(e, names));
        }
        Expr::Chain(first, rest) => {
            collect_names(first, names);
            rest.iter().for_each(|(_, e)| collect_names(e, names));
        }
        Expr::Compare(first, rest) => {
            collect_names(first, names);
            rest.iter().for_each(|(_, e)| collect_names(e, names));
        }
        Expr::Ternary(a, b, c) => {
            collect_names(a, names);
            collect_names(b, names);
            collect_names(c, names);
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Number(f64),
    Bool(bool),
    Array(Vec<Value>),
    /// A failed trigger, by name.
    Missing(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// Elements shown of an array in an error.
        const SHOWN: usize = 5;
        match self {
            Value::Number(n) => write!(f, "{n}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Array(items) => {
                write!(f, "[")?;
                for (i, item) in items.iter().take(SHOWN).enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{item}")?;
                }
                if items.len() > SHOWN {
                    write!(f, ", ...")?;
                }
                write!(f, "]")
            }
            Value::Missing(name) => write!(f, "failed trigger {name:?}"),
        }
    }
}

/// What an expression is evaluated against.
struct Scope<'a> {
    values: &'a BTreeMap<String, Option<f64>>,
    /// Inside a predicate: the element and its index.
    element: Option<(&'a Value, usize)>,
    steps: &'a Cell<usize>,
}

fn failed(name: &str) -> FormulaError {
    FormulaError::Evaluation(format!(
        "trigger {name:?} failed; use `{name} ?? <value>` to give it a default"
    ))
}

fn number(value: Value, what: &str) -> Result<f64, FormulaError> {
    match value {
        Value::Number(n) => Ok(n),
        Value::Missing(name) => Err(failed(&name)),
        other => Err(FormulaError::Evaluation(format!(
            "{what} needs a number, got {other}"
        ))),
    }
}

fn boolean(value: Value, what: &str) -> Result<bool, FormulaError> {
    match value {
        Value::Bool(b) => Ok(b),
        Value::Missing(name) => Err(failed(&name)),
        other => Err(FormulaError::Evaluation(format!(
            "{what} needs true or false, got {other}"
        ))),
    }
}

fn array(value: Value, what: &str) -> Result<Vec<Value>, FormulaError> {
    match value {
        Value::Array(items) => Ok(items),
        Value::Missing(name) => Err(failed(&name)),
        other => Err(FormulaError::Evaluation(format!(
            "{what} needs an array, got {other}"
        ))),
    }
}

/// The numbers in `values`, arrays flattened, as expr's aggregate functions read them.
fn flatten(values: Vec<Value>, what: &str, numbers: &mut Vec<f64>) -> Result<(), FormulaError> {
    for value in values {
        match value {
            Value::Array(items) => flatten(items, what, numbers)?,
            other => numbers.push(number(other, what)?),
        }
    }
    Ok(())
}

fn eval(expr: &Expr, scope: &Scope<'_>) -> Result<Value, FormulaError> {
    let steps = scope.steps.get() + 1;
    if steps > MAX_STEPS {
        return Err(FormulaError::Evaluation(format!(
            "the formula takes more than {MAX_STEPS} steps to evaluate"
        )));
    }
    scope.steps.set(steps);
    Ok(match expr {
        Expr::Number(n) => Value::Number(*n),
        Expr::Bool(b) => Value::Bool(*b),
        Expr::Name(name) => match scope.values.get(name) {
            Some(Some(v)) => Value::Number(*v),
            _ => Value::Missing(name.clone()),
        },
        Expr::Pointer(pointer) => match (pointer, scope.element) {
            (Pointer::Element, Some((element, _))) => element.clone(),
            (Pointer::Index, Some((_, index))) => Value::Number(index as f64),
            (_, None) => {
                return Err(FormulaError::Evaluation("`#` outside a predicate".into()));
            }
        },
        Expr::Array(items) => Value::Array(
            items
                .iter()
                .map(|e| eval(e, scope))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Unary(UnaryOp::Negate, e) => Value::Number(-number(eval(e, scope)?, "-")?),
        Expr::Unary(UnaryOp::Plus, e) => Value::Number(number(eval(e, scope)?, "+")?),
        Expr::Unary(UnaryOp::Not, e) => Value::Bool(!boolean(eval(e, scope)?, "!")?),
        Expr::Chain(first, rest) => {
            let mut value = eval(first, scope)?;
            for (op, right) in rest {
                value = match op {
                    BinaryOp::Coalesce => match value {
                        Value::Missing(_) => eval(right, scope)?,
                        present => present,
                    },
                    BinaryOp::And => {
                        Value::Bool(boolean(value, "&&")? && boolean(eval(right, scope)?, "&&")?)
                    }
                    BinaryOp::Or => {
                        Value::Bool(boolean(value, "||")? || boolean(eval(right, scope)?, "||")?)
                    }
                    op => {
                        let x = number(value, op.name())?;
                        let y = number(eval(right, scope)?, op.name())?;
                        Value::Number(match op {
                            BinaryOp::Add => x + y,
                            BinaryOp::Subtract => x - y,
                            BinaryOp::Multiply => x * y,
                            BinaryOp::Divide => x / y,
                            BinaryOp::Remainder => x % y,
                            _ => x.powf(y),
                        })
                    }
                };
            }
            value
        }
        Expr::Compare(first, rest) => {
            let mut left = eval(first, scope)?;
            for (op, right) in rest {
                let right = eval(right, scope)?;
                if !compare(*op, &left, &right)? {
                    return Ok(Value::Bool(false));
                }
                left = right;
            }
            Value::Bool(true)
        }
        Expr::Ternary(c, a, b) => {
            if boolean(eval(c, scope)?, "the condition of ?:")? {
                eval(a, scope)?
            } else {
                eval(b, scope)?
            }
        }
        Expr::Call(function, args) => call(*function, args, scope)?,
    })
}

fn compare(op: CompareOp, left: &Value, right: &Value) -> Result<bool, FormulaError> {
    let symbol = op.symbol();
    match (left, right) {
        (Value::Missing(name), _) | (_, Value::Missing(name)) => Err(failed(name)),
        (Value::Number(x), Value::Number(y)) => Ok(match op {
            CompareOp::Equal => x == y,
            CompareOp::NotEqual => x != y,
            CompareOp::Less => x < y,
            CompareOp::LessEqual => x <= y,
            CompareOp::Greater => x > y,
            CompareOp::GreaterEqual => x >= y,
        }),
        (Value::Bool(x), Value::Bool(y)) if op == CompareOp::Equal => Ok(x == y),
        (Value::Bool(x), Value::Bool(y)) if op == CompareOp::NotEqual => Ok(x != y),
        _ if matches!(op, CompareOp::Equal | CompareOp::NotEqual) => Err(FormulaError::Evaluation(
            format!("{symbol} needs two numbers or two booleans, got {left} and {right}"),
        )),
        (Value::Number(_), other) | (other, _) => Err(FormulaError::Evaluation(format!(
            "{symbol} needs a number, got {other}"
        ))),
    }
}

/// `body` evaluated with `item` (at `index`) as `#`.
fn apply(
    body: &Expr,
    item: &Value,
    index: usize,
    scope: &Scope<'_>,
) -> Result<Value, FormulaError> {
    eval(
        body,
        &Scope {
            values: scope.values,
            element: Some((item, index)),
            steps: scope.steps,
        },
    )
}

fn call(function: Function, args: &[Expr], scope: &Scope<'_>) -> Result<Value, FormulaError> {
    let name = function.name();
    let arity = || FormulaError::Evaluation(format!("wrong number of arguments to {name}"));
    if function.predicate().is_some() {
        let (first, rest) = args.split_first().ok_or_else(arity)?;
        let items = array(eval(first, scope)?, name)?;
        let body = rest.first();
        let what = format!("the predicate of {name}");
        // Without a predicate (count), each element is the answer itself.
        let holds = |item: &Value, index: usize| match body {
            Some(body) => boolean(apply(body, item, index, scope)?, &what),
            None => boolean(item.clone(), name),
        };
        let mapped = |items: Vec<Value>| -> Result<Vec<Value>, FormulaError> {
            match body {
                Some(body) => items
                    .iter()
                    .enumerate()
                    .map(|(index, item)| apply(body, item, index, scope))
                    .collect(),
                None => Ok(items),
            }
        };
        return Ok(match function {
            Function::All | Function::Any | Function::NoneOf => {
                // all stops at the first false, any and none at the first true.
                let stop_at = function != Function::All;
                for (index, item) in items.iter().enumerate() {
                    if holds(item, index)? == stop_at {
                        return Ok(Value::Bool(function == Function::Any));
                    }
                }
                Value::Bool(function != Function::Any)
            }
            Function::One | Function::Count => {
                let mut count = 0_usize;
                for (index, item) in items.iter().enumerate() {
                    if holds(item, index)? {
                        count += 1;
                    }
                }
                if function == Function::One {
                    Value::Bool(count == 1)
                } else {
                    Value::Number(count as f64)
                }
            }
            Function::Filter => {
                let mut kept = Vec::new();
                for (index, item) in items.into_iter().enumerate() {
                    if holds(&item, index)? {
                        kept.push(item);
                    }
                }
                Value::Array(kept)
            }
            Function::Map => Value::Array(mapped(items)?),
            _ => {
                let mut numbers = Vec::new();
                flatten(mapped(items)?, name, &mut numbers)?;
                Value::Number(numbers.iter().sum())
            }
        });
    }
    let values = args
        .iter()
        .map(|e| eval(e, scope))
        .collect::<Result<Vec<_>, _>>()?;
    let single = |values: Vec<Value>| -> Result<Value, FormulaError> {
        <[Value; 1]>::try_from(values)
            .map(|[v]| v)
            .map_err(|_| arity())
    };
    Ok(match function {
        Function::Min | Function::Max | Function::Mean | Function::Median => {
            let mut numbers = Vec::new();
            flatten(values, name, &mut numbers)?;
            match function {
                Function::Mean if numbers.is_empty() => Value::Number(0.0),
                Function::Mean => Value::Number(numbers.iter().sum::<f64>() / numbers.len() as f64),
                Function::Median => {
                    // As Go's sort.Float64s: NaN first.
                    numbers.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Less,
                        (false, true) => std::cmp::Ordering::Greater,
                        (false, false) => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
                    });
                    let n = numbers.len();
                    Value::Number(match numbers.get(n / 2) {
                        None => 0.0,
                        Some(middle) if n % 2 == 1 => *middle,
                        Some(middle) => (numbers[n / 2 - 1] + middle) / 2.0,
                    })
                }
                _ => {
                    // As expr: the first number, replaced by each one beyond it (NaN never is).
                    let mut numbers = numbers.into_iter();
                    let Some(mut best) = numbers.next() else {
                        return Err(FormulaError::Evaluation(format!(
                            "{name} of an empty array"
                        )));
                    };
                    for n in numbers {
                        if (function == Function::Max && best < n)
                            || (function == Function::Min && best > n)
                        {
                            best = n;
                        }
                    }
                    Value::Number(best)
                }
            }
        }
        Function::Len => Value::Number(array(single(values)?, name)?.len() as f64),
        _ => {
            let x = number(single(values)?, name)?;
            Value::Number(match function {
                Function::Abs => x.abs(),
                Function::Ceil => x.ceil(),
                Function::Floor => x.floor(),
                Function::Round => x.round(),
                Function::Int => {
                    // Go's int conversion truncates toward zero; 64 bits hold no more.
                    let limit = -(i64::MIN as f64);
                    if !(-limit..limit).contains(&x.trunc()) {
                        return Err(FormulaError::Evaluation(format!(
                            "int needs a number within the 64-bit integer range, got {x}"
                        )));
                    }
                    x.trunc()
                }
                _ => x,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[&str] = &["queue", "backlog", "web_rps"];

    fn values(pairs: &[(&str, Option<f64>)]) -> BTreeMap<String, Option<f64>> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn run(formula: &str, pairs: &[(&str, Option<f64>)]) -> Result<f64, FormulaError> {
        Formula::compile(formula, NAMES)?.evaluate(&values(pairs))
    }

    const HEALTHY: [(&str, Option<f64>); 3] = [
        ("queue", Some(10.0)),
        ("backlog", Some(4.0)),
        ("web_rps", Some(2.5)),
    ];

    /// queue is 10, backlog 4, web_rps 2.5.
    fn check(cases: &[(&str, f64)]) {
        for (formula, want) in cases {
            assert_eq!(run(formula, &HEALTHY), Ok(*want), "{formula}");
        }
    }

    /// Each formula compiles; evaluating it fails with the message.
    fn check_evaluation_errors(pairs: &[(&str, Option<f64>)], cases: &[(&str, &str)]) {
        for (formula, want) in cases {
            let compiled = Formula::compile(formula, NAMES)
                .unwrap_or_else(|e| panic!("{formula:?} does not compile: {e}"));
            assert_eq!(
                compiled.evaluate(&values(pairs)).map_err(|e| e.to_string()),
                Err(format!("formula: {want}")),
                "{formula}"
            );
        }
    }

    /// Each formula is refused at compile time with the message.
    fn check_refusals(cases: &[(&str, &str)]) {
        for (formula, want) in cases {
            assert_eq!(
                Formula::compile(formula, NAMES)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(format!("formula: {want}")),
                "{formula:?}"
            );
        }
    }

    #[test]
    fn evaluates_the_documented_operators() {
        check(&[
            ("queue + backlog", 14.0),
            ("(queue + backlog) / 2", 7.0),
            ("queue - backlog * 2", 2.0),
            ("queue % backlog", 2.0),
            ("-queue + 1", -9.0),
            ("+queue", 10.0),
            ("1.5e1 - .5", 14.5),
            ("queue > backlog ? queue : backlog", 10.0),
            ("queue < backlog ? 1 : queue >= 10 ? 2 : 3", 2.0),
            ("queue == 10 && backlog != 4 ? 1 : 0", 0.0),
            ("queue == 10 and not (backlog > 5) ? 1 : 0", 1.0),
            ("queue < 5 || backlog < 5 ? 1 : 0", 1.0),
            ("min(queue, backlog, web_rps)", 2.5),
            ("max(queue, backlog)", 10.0),
            ("abs(backlog - queue)", 6.0),
            ("ceil(web_rps) + floor(web_rps) + round(web_rps)", 8.0),
            ("round(-2.5)", -3.0),
            ("web_rps * 2", 5.0),
            ("web_rps-1", 1.5),
            ("queue-backlog", 6.0),
        ]);
    }

    #[test]
    fn evaluates_keda_documented_examples() {
        const TRIGGERS: &[&str] = &["trig_one", "trig_two", "trig_three"];
        let cases: &[(&str, [f64; 3], f64)] = &[
            ("(trig_one + trig_two)/2", [1.0, 3.0, 0.0], 2.0),
            (
                "trig_one > 2 ? trig_one + trig_two : 1",
                [3.0, 4.0, 0.0],
                7.0,
            ),
            (
                "trig_one > 2 ? trig_one + trig_two : 1",
                [2.0, 4.0, 0.0],
                1.0,
            ),
            (
                "count([trig_one,trig_two,trig_three],{#>1}) > 1 ? 5 : 0",
                [2.0, 3.0, 0.0],
                5.0,
            ),
            (
                "count([trig_one,trig_two,trig_three],{#>1}) > 1 ? 5 : 0",
                [2.0, 1.0, 0.0],
                0.0,
            ),
            (
                "trig_one < 2 ? trig_one+trig_two >= 2 ? 5 : 10 : 0",
                [1.0, 1.0, 0.0],
                5.0,
            ),
            (
                "trig_one < 2 ? trig_one+trig_two >= 2 ? 5 : 10 : 0",
                [1.0, 0.0, 0.0],
                10.0,
            ),
            (
                "trig_one < 2 ? trig_one+trig_two >= 2 ? 5 : 10 : 0",
                [3.0, 0.0, 0.0],
                0.0,
            ),
            (
                "float(trig_one < 2 ? trig_one+trig_two >= 2 ? 5 : 10 : 0)",
                [1.0, 1.0, 0.0],
                5.0,
            ),
            (
                "float(trig_one < 2 ? trig_one+trig_two >= 2 ? 5 : 10 : 0)",
                [1.0, 0.0, 0.0],
                10.0,
            ),
        ];
        for (formula, readings, want) in cases {
            let values = TRIGGERS
                .iter()
                .zip(readings)
                .map(|(name, value)| ((*name).to_string(), Some(*value)))
                .collect();
            let got = Formula::compile(formula, TRIGGERS).and_then(|f| f.evaluate(&values));
            assert_eq!(got, Ok(*want), "{formula} with {readings:?}");
        }
    }

    #[test]
    fn evaluates_arrays_and_aggregates() {
        check(&[
            ("sum([queue, backlog, web_rps])", 16.5),
            ("sum([queue, backlog,])", 14.0),
            ("sum([])", 0.0),
            ("mean([queue, backlog])", 7.0),
            ("mean(1, 2, [3, 6])", 3.0),
            ("mean([])", 0.0),
            ("median([queue, backlog, web_rps])", 4.0),
            ("median([4, 1, 3, 2])", 2.5),
            ("median([])", 0.0),
            ("len([queue, backlog, 1, 2])", 4.0),
            ("len([])", 0.0),
            ("len([[1, 2], [3]])", 2.0),
            ("max([queue, backlog])", 10.0),
            ("min([queue, backlog], web_rps)", 2.5),
            ("max(1, [2, [30]], 4)", 30.0),
            ("min([7])", 7.0),
            ("max(1, 2,)", 2.0),
        ]);
    }

    #[test]
    fn evaluates_predicates() {
        check(&[
            ("count([queue, backlog, web_rps], {# > 3})", 2.0),
            ("count([queue, backlog, web_rps], { # > 3 })", 2.0),
            ("count([queue, backlog, web_rps], # > 3)", 2.0),
            ("count([queue, backlog, web_rps], {# > 3},)", 2.0),
            ("count([queue > 5, backlog > 5, true])", 2.0),
            ("count([], {# > 3})", 0.0),
            ("all([queue, backlog], {# > 1}) ? 1 : 0", 1.0),
            ("all([queue, backlog], {# > 5}) ? 1 : 0", 0.0),
            ("all([], {# > 1}) ? 1 : 0", 1.0),
            ("any([queue, backlog], {# > 5}) ? 1 : 0", 1.0),
            ("any([queue, backlog], {# > 50}) ? 1 : 0", 0.0),
            ("any([], {# > 1}) ? 1 : 0", 0.0),
            ("none([queue, backlog], {# > 50}) ? 1 : 0", 1.0),
            ("none([queue, backlog], {# > 5}) ? 1 : 0", 0.0),
            ("none([], {# > 1}) ? 1 : 0", 1.0),
            ("one([queue, backlog], {# > 5}) ? 1 : 0", 1.0),
            ("one([queue, backlog], {# > 1}) ? 1 : 0", 0.0),
            ("one([], {# > 1}) ? 1 : 0", 0.0),
            ("sum(filter([queue, backlog, web_rps], {# < 5}))", 6.5),
            ("len(filter([queue, backlog], {# > 100}))", 0.0),
            ("sum(map([queue, backlog], {# * 2}))", 28.0),
            ("sum([queue, backlog], {# * 2})", 28.0),
            ("sum(map([7, 7, 7], {#index}))", 3.0),
            ("count(map([queue, backlog], {[#, 1]}), {len(#) == 2})", 2.0),
            // The inner `#` is the inner element.
            ("count([[1, 2], [3], []], {count(#, {# > 1}) > 0})", 2.0),
            ("max(map([queue, backlog], {# / 2}))", 5.0),
        ]);
    }

    #[test]
    fn evaluates_powers_conversions_and_literals() {
        check(&[
            ("2 ** 3", 8.0),
            ("2 ^ 3", 8.0),
            ("-2 ** 2", -4.0),
            ("-2 ^ 2", -4.0),
            ("2 ** -1", 0.5),
            ("2 ** 3 ** 2", 512.0),
            ("(2 ** 3) ** 2", 64.0),
            ("2 * 3 ** 2", 18.0),
            ("web_rps ** 2", 6.25),
            ("float(queue)", 10.0),
            ("float(7 / 2)", 3.5),
            ("int(web_rps)", 2.0),
            ("int(-2.7)", -2.0),
            ("int(7 / 2)", 3.0),
            ("1_000 + 0x10 + 0o10 + 0b11", 1027.0),
            ("5. + .5", 5.5),
            ("queue /* the queue */ + 1 // and one", 11.0),
            ("true ? 1 : 0", 1.0),
            ("false || queue > 1 ? 1 : 0", 1.0),
            ("1 < 2 < 3 ? 1 : 0", 1.0),
            ("3 > 2 > 1 ? 1 : 0", 1.0),
            ("1 < 3 < 2 ? 1 : 0", 0.0),
            ("(queue > 1) == true ? 1 : 0", 1.0),
            ("true != false ? 1 : 0", 1.0),
            ("(queue > 5 ?: false) ? 1 : 2", 1.0),
            ("(queue > 50 ?: false) ? 1 : 2", 2.0),
            ("if queue > 5 { 1 } else { 2 }", 1.0),
            (
                "if queue > 50 { 1 } else if backlog > 1 { 2 } else { 3 }",
                2.0,
            ),
            ("1 + queue ?? 0", 11.0),
            ("queue * (backlog ?? 1)", 40.0),
        ]);
    }

    #[test]
    fn a_failed_trigger_needs_a_default() {
        let v = [
            ("queue", None),
            ("backlog", Some(4.0)),
            ("web_rps", Some(1.0)),
        ];
        let cases = [
            ("(queue ?? 0) + backlog", 4.0),
            ("backlog ?? 100", 4.0),
            ("queue ?? backlog ?? 7", 4.0),
            ("1 + queue ?? 0", 1.0),
            ("-queue ?? 2", -2.0),
            ("2 ** queue ?? 3", 8.0),
        ];
        for (formula, want) in cases {
            assert_eq!(run(formula, &v), Ok(want), "{formula}");
        }
        check_evaluation_errors(
            &v,
            &[
                (
                    "queue + backlog",
                    "trigger \"queue\" failed; use `queue ?? <value>` to give it a default",
                ),
                (
                    "queue",
                    "trigger \"queue\" failed; use `queue ?? <value>` to give it a default",
                ),
            ],
        );
    }

    #[test]
    fn a_failed_trigger_flows_through_arrays_and_predicates() {
        let v = [
            ("queue", None),
            ("backlog", Some(4.0)),
            ("web_rps", Some(1.0)),
        ];
        let cases = [
            ("count([queue ?? 0, backlog], {# > 1})", 1.0),
            ("count([queue, backlog], {(# ?? 0) > 1})", 1.0),
            ("sum(map([queue, backlog], {# ?? 10}))", 14.0),
            ("len([queue, backlog])", 2.0),
            ("len(filter([queue, backlog], {(# ?? 0) > 1}))", 1.0),
            // any stops at the first true, before reaching the failed trigger.
            ("any([backlog, queue], {# > 1}) ? 1 : 0", 1.0),
        ];
        for (formula, want) in cases {
            assert_eq!(run(formula, &v), Ok(want), "{formula}");
        }
        let failed = "trigger \"queue\" failed; use `queue ?? <value>` to give it a default";
        check_evaluation_errors(
            &v,
            &[
                ("count([queue, backlog], {# > 1})", failed),
                ("count([backlog, queue], # > 1)", failed),
                ("all([backlog, queue], {# > 1}) ? 1 : 0", failed),
                ("sum([queue, backlog])", failed),
                ("mean([backlog, [queue]])", failed),
                ("max(queue, backlog)", failed),
                ("sum(map([queue], {#}))", failed),
                ("count([queue])", failed),
                ("queue < backlog ? 1 : 0", failed),
                ("1 < backlog < queue ? 1 : 0", failed),
                ("int(queue)", failed),
            ],
        );
    }

    #[test]
    fn bad_formulas_are_refused_with_a_position() {
        check_refusals(&[
            ("", "empty formula at character 1"),
            ("// only a comment", "empty formula at character 1"),
            ("queue +", "unexpected end of formula at character 8"),
            ("(queue", "expected \")\" at character 7"),
            ("queue $ 2", "unexpected character '$' at character 7"),
            ("queue = 2", "unexpected character '=' at character 7"),
            (
                "queue backlog",
                "unexpected text after the formula at character 7",
            ),
            (
                "abs(queue, backlog)",
                "wrong number of arguments to abs; expected abs(number) at character 20",
            ),
            (
                "min()",
                "wrong number of arguments to min; expected min(a, b, ...) or min(array) at character 6",
            ),
            (
                "all([queue])",
                "wrong number of arguments to all; expected all(array, predicate) at character 12",
            ),
            (
                "count()",
                "wrong number of arguments to count; expected count(array) or count(array, predicate) at character 7",
            ),
            ("queue ? 1", "expected \":\" at character 10"),
            ("2abc", "\"2a\" is not a number at character 1"),
            ("0x", "\"0x\" is not a number at character 1"),
            ("1e", "\"1e\" is not a number at character 1"),
            ("1e999", "the number 1e999 is too large at character 1"),
            ("queue +/* open", "unclosed comment at character 8"),
            ("[queue", "expected \",\" at character 7"),
            ("if queue > 1 { 1 }", "expected \"else\" at character 19"),
            (
                "1 + if true { 1 } else { 2 }",
                "unexpected \"if\" at character 5",
            ),
            ("queue **", "unexpected end of formula at character 9"),
            (
                "orders * 2",
                "unknown trigger name \"orders\"; the named triggers are: queue, backlog, web_rps",
            ),
            (
                "count([queue, orders], {# > 1})",
                "unknown trigger name \"orders\"; the named triggers are: queue, backlog, web_rps",
            ),
            (
                "count([queue], {# > orders})",
                "unknown trigger name \"orders\"; the named triggers are: queue, backlog, web_rps",
            ),
        ]);
    }

    #[test]
    fn what_expr_has_and_ebb_does_not_is_refused_by_name() {
        check_refusals(&[
            (
                "\"5\" + queue",
                "string literals are not supported in ebb's formulas at character 1",
            ),
            (
                "queue + 'x'",
                "string literals are not supported in ebb's formulas at character 9",
            ),
            (
                "`raw`",
                "string literals are not supported in ebb's formulas at character 1",
            ),
            (
                "[queue, backlog] | sum()",
                "the pipe operator `|` is not supported in ebb's formulas at character 18",
            ),
            (
                "sum(1..3)",
                "ranges `..` are not supported in ebb's formulas at character 6",
            ),
            (
                "queue.value",
                "member access `.` is not supported in ebb's formulas at character 6",
            ),
            (
                "queue?.value",
                "member access `?.` is not supported in ebb's formulas at character 6",
            ),
            (
                "[queue, backlog][0]",
                "indexing and slicing `[...]` are not supported in ebb's formulas at character 17",
            ),
            (
                "{a: 1}",
                "map literals `{...}` are not supported in ebb's formulas; braces only wrap a predicate, as in count(array, {# > 1}) at character 1",
            ),
            (
                "let x = queue; x * 2",
                "`let` variables are not supported in ebb's formulas at character 1",
            ),
            (
                "queue; 1",
                "`;` (a sequence of expressions) is not supported in ebb's formulas at character 6",
            ),
            (
                "queue ?? nil",
                "`nil` is not supported in ebb's formulas; a failed trigger is caught with `??` at character 10",
            ),
            (
                "$env.queue",
                "`$env` is not supported in ebb's formulas; name the triggers directly at character 1",
            ),
            (
                "::max(1)",
                "`::` is not supported in ebb's formulas at character 1",
            ),
            (
                "queue in [1, 2] ? 1 : 0",
                "the `in` operator is not supported in ebb's formulas at character 7",
            ),
            (
                "queue not in [1, 2] ? 1 : 0",
                "the `in` operator is not supported in ebb's formulas at character 11",
            ),
            (
                "queue matches 1",
                "the `matches` operator is not supported in ebb's formulas at character 7",
            ),
            (
                "queue contains 1",
                "the `contains` operator is not supported in ebb's formulas at character 7",
            ),
            (
                "queue startsWith 1",
                "the `startsWith` operator is not supported in ebb's formulas at character 7",
            ),
            (
                "queue endsWith 1",
                "the `endsWith` operator is not supported in ebb's formulas at character 7",
            ),
            (
                "sqrt(queue)",
                "unknown function \"sqrt\"; ebb's formulas know abs, all, any, ceil, count, filter, float, floor, int, len, map, max, mean, median, min, none, one, round and sum at character 1",
            ),
            (
                "1 + reduce([1], #acc + #)",
                "unknown function \"reduce\"; ebb's formulas know abs, all, any, ceil, count, filter, float, floor, int, len, map, max, mean, median, min, none, one, round and sum at character 5",
            ),
            (
                "# > 1",
                "`#` is only allowed inside a predicate, as in count(array, {# > 1}) at character 1",
            ),
            (
                "count([1], {# > 1}) + #index",
                "`#index` is only allowed inside a predicate, as in count(array, {# > 1}) at character 23",
            ),
            (
                "count([queue], {#acc > 1})",
                "`#acc` is not supported in ebb's formulas (it belongs to reduce, which is not supported) at character 17",
            ),
            (
                "count([queue], {#foo > 1})",
                "unknown `#foo`; a predicate knows `#` and `#index` at character 17",
            ),
            (
                "queue ?? backlog + 1",
                "`??` and `+` cannot be mixed without parentheses; wrap one of them in parentheses at character 18",
            ),
            (
                "queue ?? 1 > 0 ? 1 : 0",
                "`??` and `>` cannot be mixed without parentheses; wrap one of them in parentheses at character 12",
            ),
        ]);
    }

    #[test]
    fn results_must_be_finite_numbers() {
        let v = [("queue", Some(1.0)), ("backlog", Some(0.0))];
        check_evaluation_errors(
            &v,
            &[
                ("queue / backlog", "the result is inf, not a finite number"),
                (
                    "backlog / backlog",
                    "the result is NaN, not a finite number",
                ),
                (
                    "queue > backlog",
                    "the result is true or false, not a number",
                ),
                ("float(queue > backlog)", "float needs a number, got true"),
                ("[queue, backlog]", "the result is an array, not a number"),
                (
                    "map([queue], {# + 1})",
                    "the result is an array, not a number",
                ),
                ("1 + (queue > 0)", "add needs a number, got true"),
                ("1 + [queue]", "add needs a number, got [1]"),
                (
                    "queue ? 1 : 2",
                    "the condition of ?: needs true or false, got 1",
                ),
                ("not queue > 0 ? 1 : 2", "! needs true or false, got 1"),
                ("true < false ? 1 : 2", "< needs a number, got true"),
                (
                    "queue == true ? 1 : 2",
                    "== needs two numbers or two booleans, got 1 and true",
                ),
                // Chained as expr chains it: `backlog < queue && queue == true`.
                (
                    "backlog < queue == true ? 1 : 2",
                    "== needs two numbers or two booleans, got 1 and true",
                ),
                (
                    "count([queue], {# + 1})",
                    "the predicate of count needs true or false, got 2",
                ),
                ("count([1, 2])", "count needs true or false, got 1"),
                ("count(queue, {# > 1})", "count needs an array, got 1"),
                ("len(queue)", "len needs an array, got 1"),
                ("sum([queue, queue > 0])", "sum needs a number, got true"),
                ("max([])", "max of an empty array"),
                ("min([], [])", "min of an empty array"),
                ("abs([queue])", "abs needs a number, got [1]"),
                (
                    "int(1e19)",
                    "int needs a number within the 64-bit integer range, got 10000000000000000000",
                ),
                (
                    "int(backlog / backlog)",
                    "int needs a number within the 64-bit integer range, got NaN",
                ),
                (
                    "1 + [1, 2, 3, 4, 5, 6, 7]",
                    "add needs a number, got [1, 2, 3, 4, 5, ...]",
                ),
            ],
        );
    }

    #[test]
    fn hostile_nesting_is_refused_not_a_stack_overflow() {
        let cases = [
            format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000)),
            format!("{}1", "-".repeat(10_000)),
            format!("{}1", "!".repeat(10_000)),
            format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000)),
            format!("{}1{}", "abs(".repeat(10_000), ")".repeat(10_000)),
            format!("{}1{}", "count([1], {".repeat(10_000), "})".repeat(10_000)),
            format!("2{}", " ** 2".repeat(10_000)),
            format!("1{}", " ? 1 : 1".repeat(10_000)),
            format!("{}1", "if true { 1 } else ".repeat(10_000)),
        ];
        for formula in cases {
            let err = Formula::compile(&formula, NAMES).unwrap_err();
            assert!(
                err.to_string().contains("nested deeper than 64"),
                "{}: {err}",
                &formula[..20]
            );
        }
    }

    #[test]
    fn the_deepest_accepted_formulas_evaluate() {
        let v = [("queue", Some(1.0))];
        let shapes: [(&str, &str, &str); 7] = [
            ("(", "queue", ")"),
            ("-", "queue", ""),
            ("[", "queue", "]"),
            ("abs(", "queue", ")"),
            ("sum(map([1], {", "queue", "}))"),
            ("count([1], {", "true", "}) > 0"),
            ("2 ** ", "queue", ""),
        ];
        for (open, inner, close) in shapes {
            let nest = |n: usize| format!("{}{inner}{}", open.repeat(n), close.repeat(n));
            let deepest = (1..=MAX_DEPTH)
                .take_while(|n| Formula::compile(&nest(*n), NAMES).is_ok())
                .last()
                .unwrap_or_else(|| panic!("{open}: not even one level compiles"));
            // Evaluating succeeds or fails, without overflowing the test thread's stack.
            let _ = run(&nest(deepest), &v);
        }
    }

    /// xorshift64: deterministic, so a failure reproduces.
    struct Random(u64);

    impl Random {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[usize::try_from(self.next()).unwrap_or(0) % items.len()]
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        /// A well-formed formula using every construct, `#` only inside predicates.
        fn formula(&mut self, depth: usize, in_predicate: bool) -> String {
            const NUMBERS: &[&str] = &["0", "1", "2.5", ".5", "-3", "1e308", "0x10", "1_0"];
            let choices = if depth == 0 { 3 } else { 14 };
            let sub = |r: &mut Self, p| r.formula(depth.saturating_sub(1), p);
            match self.below(choices) {
                0 => self.pick(&["queue", "backlog", "web_rps"]).to_string(),
                1 if in_predicate => self.pick(&["#", "#index", "(# ?? 0)"]).to_string(),
                1 => self.pick(NUMBERS).to_string(),
                2 => self.pick(&["true", "false", "1", "2"]).to_string(),
                3 => {
                    let op = self.pick(&[
                        "+", "-", "*", "/", "%", "**", "^", "==", "!=", "<", "<=", ">", ">=", "&&",
                        "||", "??", "and", "or",
                    ]);
                    let (a, b) = (sub(self, in_predicate), sub(self, in_predicate));
                    format!("({a} {op} {b})")
                }
                4 => {
                    let op = self.pick(&["-", "+", "!", "not "]);
                    format!("{op}{}", sub(self, in_predicate))
                }
                5 => {
                    let (c, a, b) = (
                        sub(self, in_predicate),
                        sub(self, in_predicate),
                        sub(self, in_predicate),
                    );
                    format!("({c} ? {a} : {b})")
                }
                6 => {
                    let items: Vec<String> = (0..self.below(4))
                        .map(|_| sub(self, in_predicate))
                        .collect();
                    format!("[{}]", items.join(", "))
                }
                7 => {
                    let f = self.pick(&["abs", "ceil", "floor", "round", "float", "int", "len"]);
                    format!("{f}({})", sub(self, in_predicate))
                }
                8 => {
                    let f = self.pick(&["min", "max", "mean", "median"]);
                    let (a, b) = (sub(self, in_predicate), sub(self, in_predicate));
                    format!("{f}({a}, {b})")
                }
                9 => {
                    let f =
                        self.pick(&["all", "any", "none", "one", "count", "filter", "map", "sum"]);
                    let (array, body) = (sub(self, in_predicate), sub(self, true));
                    if self.below(2) == 0 {
                        format!("{f}({array}, {{{body}}})")
                    } else {
                        format!("{f}({array}, {body})")
                    }
                }
                10 => {
                    let f = self.pick(&["count", "sum", "mean", "median", "min", "max"]);
                    format!("{f}({})", sub(self, in_predicate))
                }
                11 => {
                    let (c, a, b) = (
                        sub(self, in_predicate),
                        sub(self, in_predicate),
                        sub(self, in_predicate),
                    );
                    format!("(if {c} {{ {a} }} else {{ {b} }})")
                }
                12 => format!(
                    "({} ?: {})",
                    sub(self, in_predicate),
                    sub(self, in_predicate)
                ),
                _ => format!(
                    "({} < {} <= {})",
                    sub(self, in_predicate),
                    sub(self, in_predicate),
                    sub(self, in_predicate)
                ),
            }
        }
    }

    /// The fuzz target's assertions: evaluating answers a finite number or an evaluation error.
    fn evaluates_soundly(formula: &Formula, text: &str, round: usize) {
        let readings = [
            [Some(1.0), Some(2.0), None],
            [None, Some(f64::NAN), Some(f64::INFINITY)],
            [Some(-0.5), Some(1e308), Some(0.0)],
            [Some(3.0), Some(4.0), Some(5.0)],
        ];
        let pairs: Vec<(&str, Option<f64>)> = NAMES
            .iter()
            .copied()
            .zip(readings[round % readings.len()])
            .collect();
        match formula.evaluate(&values(&pairs)) {
            Ok(n) => assert!(n.is_finite(), "{text:?} evaluated to {n}"),
            Err(FormulaError::Evaluation(_)) => {}
            Err(e) => panic!("evaluating {text:?} gave {e}"),
        }
    }

    /// Well-formed formulas of every construct compile, and evaluate soundly.
    #[test]
    fn random_formulas_compile_and_evaluate_soundly() {
        let mut random = Random(0x9e37_79b9_7f4a_7c15);
        let mut numbers = 0;
        for round in 0..5_000 {
            let text = random.formula(5, false);
            let formula = Formula::compile(&text, NAMES)
                .unwrap_or_else(|e| panic!("{text:?} does not compile: {e}"));
            evaluates_soundly(&formula, &text, round);
            numbers += usize::from(run(&text, &HEALTHY).is_ok());
        }
        // Not all evaluate to numbers (types mix, triggers fail), but many do.
        assert!(numbers > 500, "only {numbers} evaluated to a number");
    }

    /// Pseudo-random token sequences, as the fuzz target makes them with this module's newer
    /// tokens: compiling answers a formula or a compile error positioned in the text, and a
    /// formula evaluates soundly.
    #[test]
    fn random_token_sequences_hold_the_fuzz_assertions() {
        const TOKENS: &[&str] = &[
            "queue", "backlog", "web_rps", "orders", "(", ")", "[", "]", "{", "}", ",", "#",
            "#index", "+", "-", "*", "/", "%", "**", "^", "!", "==", "<", ">=", "&&", "||", "?",
            ":", "??", "?:", "true", "false", "if", "else", "count", "all", "any", "none", "one",
            "filter", "map", "sum", "mean", "median", "len", "min", "max", "int", "float", "abs",
            "0", "1", "2.5", "1e308", ".5", "0x10", "1_0", "\"s\"", "|", "..", ".", "in", "/*",
            "*/",
        ];
        let mut random = Random(0x2545_f491_4f6c_dd1d);
        for round in 0..20_000 {
            let len = random.below(24);
            let text = (0..len)
                .map(|_| random.pick(TOKENS))
                .collect::<Vec<_>>()
                .join(" ");
            match Formula::compile(&text, NAMES) {
                Ok(formula) => evaluates_soundly(&formula, &text, round),
                Err(FormulaError::Syntax { position, .. }) => assert!(
                    (1..=text.chars().count() + 1).contains(&position),
                    "position {position} outside {text:?}"
                ),
                Err(FormulaError::UnknownName { .. }) => {}
                Err(e) => panic!("compiling {text:?} gave {e}"),
            }
        }
    }

    #[test]
    fn long_flat_formulas_do_not_nest() {
        let v = [("queue", Some(1.0))];
        let sum = format!("queue{}", " + 1".repeat(50_000));
        assert_eq!(run(&sum, &v), Ok(50_001.0));
        let compare = format!("(0{}) ? 1 : 0", " < 1".repeat(50_000));
        assert_eq!(run(&compare, &v), Ok(0.0));
        let coalesce = format!("queue{}", " ?? 1".repeat(50_000));
        assert_eq!(run(&coalesce, &v), Ok(1.0));
        let array = format!("len([{}])", "queue, ".repeat(50_000));
        assert_eq!(run(&array, &v), Ok(50_000.0));
    }

    #[test]
    fn predicates_nested_over_large_arrays_are_cut_short() {
        let array = format!("[{}]", "1, ".repeat(200));
        let formula =
            format!("count({array}, {{count({array}, {{count({array}, {{# > 0}}) > 0}}) > 0}})");
        assert_eq!(
            run(&formula, &[]).map_err(|e| e.to_string()),
            Err("formula: the formula takes more than 1000000 steps to evaluate".into())
        );
    }
}
