//! `advanced.scalingModifiers.formula`: an expression over trigger names that yields the
//! composite metric. Compiled once per ScaledObject generation, evaluated at every poll.
//!
//! The language: numbers, trigger names, parentheses; `+ - * / %`, unary `-` and `!`;
//! comparisons `== != < <= > >=`; `&&`, `||` (also `and`, `or`, `not`); the ternary
//! `c ? a : b`; `a ?? b`, which is `b` when `a` is a failed trigger; and the functions `min`,
//! `max` (any number of arguments), `abs`, `ceil`, `floor`, `round`. Booleans and numbers do not
//! mix: `1 + (a > b)` is an error. The result must be a finite number.

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
    Name(String),
    Unary(UnaryOp, Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    Ternary(Box<Expr>, Box<Expr>, Box<Expr>),
    Call(Function, Vec<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum UnaryOp {
    Negate,
    Not,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum BinaryOp {
    Add,
    Subtract,
    Multiply,
    Divide,
    Remainder,
    Equal,
    NotEqual,
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
    And,
    Or,
    Coalesce,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Function {
    Min,
    Max,
    Abs,
    Ceil,
    Floor,
    Round,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    Name(String),
    Symbol(&'static str),
}

/// Longest first, so `<=` is not read as `<`.
const SYMBOLS: &[&str] = &[
    "??", "==", "!=", "<=", ">=", "&&", "||", "+", "-", "*", "/", "%", "<", ">", "!", "?", ":",
    "(", ")", ",",
];

/// Deepest nesting accepted, so a hostile formula cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

fn tokenize(text: &str) -> Result<Vec<(Token, usize)>, FormulaError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let position = i + 1;
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                let mut j = i + 1;
                if j < chars.len() && (chars[j] == '+' || chars[j] == '-') {
                    j += 1;
                }
                if j < chars.len() && chars[j].is_ascii_digit() {
                    i = j;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let literal: String = chars[start..i].iter().collect();
            let value: f64 = literal.parse().map_err(|_| FormulaError::Syntax {
                problem: format!("{literal:?} is not a number"),
                position,
            })?;
            tokens.push((Token::Number(value), position));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            // As in KEDA's formulas, `a-b` is a subtraction: names are letters, digits and `_`.
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let token = match word.as_str() {
                "and" => Token::Symbol("&&"),
                "or" => Token::Symbol("||"),
                "not" => Token::Symbol("!"),
                _ => Token::Name(word),
            };
            tokens.push((token, position));
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let symbol = SYMBOLS
                .iter()
                .find(|s| rest.starts_with(**s))
                .ok_or_else(|| FormulaError::Syntax {
                    problem: format!("unexpected character {c:?}"),
                    position,
                })?;
            tokens.push((Token::Symbol(symbol), position));
            i += symbol.chars().count();
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    next: usize,
    end: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next).map(|(t, _)| t)
    }

    fn position(&self) -> usize {
        self.tokens.get(self.next).map_or(self.end, |(_, p)| *p)
    }

    fn error<T>(&self, problem: impl Into<String>) -> Result<T, FormulaError> {
        Err(FormulaError::Syntax {
            problem: problem.into(),
            position: self.position(),
        })
    }

    fn eat(&mut self, symbol: &str) -> bool {
        if self.peek()
            == Some(&Token::Symbol(
                match SYMBOLS.iter().find(|s| **s == symbol) {
                    Some(s) => s,
                    None => return false,
                },
            ))
        {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, symbol: &str) -> Result<(), FormulaError> {
        if self.eat(symbol) {
            Ok(())
        } else {
            self.error(format!("expected {symbol:?}"))
        }
    }

    fn expression(&mut self) -> Result<Expr, FormulaError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.error(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        let condition = self.binary(0)?;
        let result = if self.eat("?") {
            let then = self.expression()?;
            self.expect(":")?;
            let otherwise = self.expression()?;
            Expr::Ternary(Box::new(condition), Box::new(then), Box::new(otherwise))
        } else {
            condition
        };
        self.depth -= 1;
        Ok(result)
    }

    /// Binary operators by precedence, loosest first.
    fn binary(&mut self, level: usize) -> Result<Expr, FormulaError> {
        const LEVELS: &[&[(&str, BinaryOp)]] = &[
            &[("??", BinaryOp::Coalesce)],
            &[("||", BinaryOp::Or)],
            &[("&&", BinaryOp::And)],
            &[("==", BinaryOp::Equal), ("!=", BinaryOp::NotEqual)],
            &[
                ("<=", BinaryOp::LessEqual),
                (">=", BinaryOp::GreaterEqual),
                ("<", BinaryOp::Less),
                (">", BinaryOp::Greater),
            ],
            &[("+", BinaryOp::Add), ("-", BinaryOp::Subtract)],
            &[
                ("*", BinaryOp::Multiply),
                ("/", BinaryOp::Divide),
                ("%", BinaryOp::Remainder),
            ],
        ];
        if level == LEVELS.len() {
            return self.unary();
        }
        let mut left = self.binary(level + 1)?;
        'more: loop {
            for (symbol, op) in LEVELS[level] {
                if self.eat(symbol) {
                    let right = self.binary(level + 1)?;
                    left = Expr::Binary(*op, Box::new(left), Box::new(right));
                    continue 'more;
                }
            }
            return Ok(left);
        }
    }

    fn unary(&mut self) -> Result<Expr, FormulaError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.error(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        let result = if self.eat("-") {
            Expr::Unary(UnaryOp::Negate, Box::new(self.unary()?))
        } else if self.eat("!") {
            Expr::Unary(UnaryOp::Not, Box::new(self.unary()?))
        } else {
            self.primary()?
        };
        self.depth -= 1;
        Ok(result)
    }

    fn primary(&mut self) -> Result<Expr, FormulaError> {
        match self.peek().cloned() {
            Some(Token::Number(n)) => {
                self.next += 1;
                Ok(Expr::Number(n))
            }
            Some(Token::Name(name)) => {
                self.next += 1;
                if self.eat("(") {
                    let function = match name.as_str() {
                        "min" => Function::Min,
                        "max" => Function::Max,
                        "abs" => Function::Abs,
                        "ceil" => Function::Ceil,
                        "floor" => Function::Floor,
                        "round" => Function::Round,
                        _ => {
                            return self.error(format!(
                                "unknown function {name:?}; expected min, max, abs, ceil, floor or round"
                            ));
                        }
                    };
                    let mut args = Vec::new();
                    if !self.eat(")") {
                        loop {
                            args.push(self.expression()?);
                            if self.eat(")") {
                                break;
                            }
                            self.expect(",")?;
                        }
                    }
                    let arity_ok = match function {
                        Function::Min | Function::Max => !args.is_empty(),
                        _ => args.len() == 1,
                    };
                    if !arity_ok {
                        return self.error(format!("wrong number of arguments to {name}"));
                    }
                    Ok(Expr::Call(function, args))
                } else {
                    Ok(Expr::Name(name))
                }
            }
            Some(Token::Symbol("(")) => {
                self.next += 1;
                let inner = self.expression()?;
                self.expect(")")?;
                Ok(inner)
            }
            Some(Token::Symbol(s)) => self.error(format!("unexpected {s:?}")),
            None => self.error("unexpected end of formula"),
        }
    }
}

impl Formula {
    /// Compiles `text`, checking every name against `trigger_names`.
    pub fn compile(text: &str, trigger_names: &[&str]) -> Result<Self, FormulaError> {
        let tokens = tokenize(text)?;
        if tokens.is_empty() {
            return Err(FormulaError::Syntax {
                problem: "empty formula".into(),
                position: 1,
            });
        }
        let mut parser = Parser {
            tokens,
            next: 0,
            end: text.chars().count() + 1,
            depth: 0,
        };
        let root = parser.expression()?;
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
        match eval(&self.root, values)? {
            Value::Number(n) if n.is_finite() => Ok(n),
            Value::Number(n) => Err(FormulaError::Evaluation(format!(
                "the result is {n}, not a finite number"
            ))),
            Value::Bool(_) => Err(FormulaError::Evaluation(
                "the result is true or false, not a number".into(),
            )),
            Value::Missing(name) => Err(FormulaError::Evaluation(format!(
                "trigger {name:?} failed; use `{name} ?? <value>` to give it a default"
            ))),
        }
    }
}

fn collect_names<'a>(expr: &'a Expr, names: &mut Vec<&'a String>) {
    match expr {
        Expr::Number(_) => {}
        Expr::Name(n) => names.push(n),
        Expr::Unary(_, e) => collect_names(e, names),
        Expr::Binary(_, a, b) => {
            collect_names(a, names);
            collect_names(b, names);
        }
        Expr::Ternary(a, b, c) => {
            collect_names(a, names);
            collect_names(b, names);
            collect_names(c, names);
        }
        Expr::Call(_, args) => args.iter().for_each(|a| collect_names(a, names)),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Number(f64),
    Bool(bool),
    /// A failed trigger, by name.
    Missing(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Number(n) => write!(f, "{n}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Missing(name) => write!(f, "failed trigger {name:?}"),
        }
    }
}

fn eval(expr: &Expr, values: &BTreeMap<String, Option<f64>>) -> Result<Value, FormulaError> {
    let number = |v: Value, what: &str| match v {
        Value::Number(n) => Ok(n),
        Value::Missing(name) => Err(FormulaError::Evaluation(format!(
            "trigger {name:?} failed; use `{name} ?? <value>` to give it a default"
        ))),
        other => Err(FormulaError::Evaluation(format!(
            "{what} needs a number, got {other}"
        ))),
    };
    let boolean = |v: Value, what: &str| match v {
        Value::Bool(b) => Ok(b),
        Value::Missing(name) => Err(FormulaError::Evaluation(format!(
            "trigger {name:?} failed; use `{name} ?? <value>` to give it a default"
        ))),
        other => Err(FormulaError::Evaluation(format!(
            "{what} needs true or false, got {other}"
        ))),
    };
    Ok(match expr {
        Expr::Number(n) => Value::Number(*n),
        Expr::Name(name) => match values.get(name) {
            Some(Some(v)) => Value::Number(*v),
            _ => Value::Missing(name.clone()),
        },
        Expr::Unary(UnaryOp::Negate, e) => Value::Number(-number(eval(e, values)?, "-")?),
        Expr::Unary(UnaryOp::Not, e) => Value::Bool(!boolean(eval(e, values)?, "!")?),
        Expr::Binary(BinaryOp::Coalesce, a, b) => match eval(a, values)? {
            Value::Missing(_) => eval(b, values)?,
            v => v,
        },
        Expr::Binary(BinaryOp::And, a, b) => {
            Value::Bool(boolean(eval(a, values)?, "&&")? && boolean(eval(b, values)?, "&&")?)
        }
        Expr::Binary(BinaryOp::Or, a, b) => {
            Value::Bool(boolean(eval(a, values)?, "||")? || boolean(eval(b, values)?, "||")?)
        }
        Expr::Binary(op, a, b) => {
            let what = format!("{op:?}").to_lowercase();
            let x = number(eval(a, values)?, &what)?;
            let y = number(eval(b, values)?, &what)?;
            match op {
                BinaryOp::Add => Value::Number(x + y),
                BinaryOp::Subtract => Value::Number(x - y),
                BinaryOp::Multiply => Value::Number(x * y),
                BinaryOp::Divide => Value::Number(x / y),
                BinaryOp::Remainder => Value::Number(x % y),
                BinaryOp::Equal => Value::Bool(x == y),
                BinaryOp::NotEqual => Value::Bool(x != y),
                BinaryOp::Less => Value::Bool(x < y),
                BinaryOp::LessEqual => Value::Bool(x <= y),
                BinaryOp::Greater => Value::Bool(x > y),
                BinaryOp::GreaterEqual => Value::Bool(x >= y),
                // Evaluated lazily above; never reached with these.
                BinaryOp::And | BinaryOp::Or | BinaryOp::Coalesce => {
                    return Err(FormulaError::Evaluation(format!("{what} out of place")));
                }
            }
        }
        Expr::Ternary(c, a, b) => {
            if boolean(eval(c, values)?, "the condition of ?:")? {
                eval(a, values)?
            } else {
                eval(b, values)?
            }
        }
        Expr::Call(function, args) => {
            let mut numbers = Vec::with_capacity(args.len());
            for arg in args {
                numbers.push(number(
                    eval(arg, values)?,
                    &format!("{function:?}").to_lowercase(),
                )?);
            }
            let first = numbers.first().copied().unwrap_or(f64::NAN);
            Value::Number(match function {
                Function::Min => numbers.iter().copied().fold(f64::INFINITY, f64::min),
                Function::Max => numbers.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                Function::Abs => first.abs(),
                Function::Ceil => first.ceil(),
                Function::Floor => first.floor(),
                Function::Round => first.round(),
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

    #[test]
    fn evaluates_the_documented_operators() {
        let v = [
            ("queue", Some(10.0)),
            ("backlog", Some(4.0)),
            ("web_rps", Some(2.5)),
        ];
        let cases = [
            ("queue + backlog", 14.0),
            ("(queue + backlog) / 2", 7.0),
            ("queue - backlog * 2", 2.0),
            ("queue % backlog", 2.0),
            ("-queue + 1", -9.0),
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
            ("web_rps * 2", 5.0),
            ("web_rps-1", 1.5),
            ("queue-backlog", 6.0),
        ];
        for (formula, want) in cases {
            assert_eq!(run(formula, &v), Ok(want), "{formula}");
        }
    }

    #[test]
    fn a_failed_trigger_needs_a_default() {
        let v = [
            ("queue", None),
            ("backlog", Some(4.0)),
            ("web_rps", Some(1.0)),
        ];
        assert_eq!(run("(queue ?? 0) + backlog", &v), Ok(4.0));
        assert_eq!(run("backlog ?? 100", &v), Ok(4.0));
        assert_eq!(run("queue ?? backlog ?? 7", &v), Ok(4.0));
        assert_eq!(
            run("queue + backlog", &v),
            Err(FormulaError::Evaluation(
                "trigger \"queue\" failed; use `queue ?? <value>` to give it a default".into()
            ))
        );
        assert!(run("queue", &v).is_err());
    }

    #[test]
    fn bad_formulas_are_refused_with_a_position() {
        let cases = [
            ("", "formula: empty formula at character 1"),
            (
                "queue +",
                "formula: unexpected end of formula at character 8",
            ),
            ("(queue", "formula: expected \")\" at character 7"),
            (
                "queue $ 2",
                "formula: unexpected character '$' at character 7",
            ),
            (
                "queue backlog",
                "formula: unexpected text after the formula at character 7",
            ),
            (
                "sqrt(queue)",
                "formula: unknown function \"sqrt\"; expected min, max, abs, ceil, floor or round at character 6",
            ),
            (
                "abs(queue, backlog)",
                "formula: wrong number of arguments to abs at character 20",
            ),
            ("queue ? 1", "formula: expected \":\" at character 10"),
            ("1..2", "formula: \"1..2\" is not a number at character 1"),
            (
                "orders * 2",
                "formula: unknown trigger name \"orders\"; the named triggers are: queue, backlog, web_rps",
            ),
        ];
        for (formula, want) in cases {
            assert_eq!(
                Formula::compile(formula, NAMES)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(want.to_string()),
                "{formula:?}"
            );
        }
    }

    #[test]
    fn results_must_be_finite_numbers() {
        let v = [("queue", Some(1.0)), ("backlog", Some(0.0))];
        let cases = [
            (
                "queue / backlog",
                "formula: the result is inf, not a finite number",
            ),
            (
                "backlog / backlog",
                "formula: the result is NaN, not a finite number",
            ),
            (
                "queue > backlog",
                "formula: the result is true or false, not a number",
            ),
            ("1 + (queue > 0)", "formula: add needs a number, got true"),
            (
                "queue ? 1 : 2",
                "formula: the condition of ?: needs true or false, got 1",
            ),
        ];
        for (formula, want) in cases {
            assert_eq!(
                run(formula, &v).map_err(|e| e.to_string()),
                Err(want.to_string()),
                "{formula}"
            );
        }
    }

    #[test]
    fn hostile_nesting_is_refused_not_a_stack_overflow() {
        let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
        let err = Formula::compile(&deep, NAMES).unwrap_err();
        assert!(err.to_string().contains("nested deeper than 64"), "{err}");
        let minus = format!("{}1", "-".repeat(10_000));
        assert!(Formula::compile(&minus, NAMES).is_err());
    }
}
