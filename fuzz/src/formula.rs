//! `advanced.scalingModifiers.formula`: arbitrary text, or a sequence of the language's tokens,
//! compiled against fixed trigger names and evaluated with arbitrary values (NaN, infinities
//! and failed triggers included). Compiling answers a formula or an error; an evaluation
//! answers a finite number or an error; neither panics, however deep the nesting.

use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Unstructured};
use ebb_operator::scale::formula::{Formula, FormulaError};

const NAMES: &[&str] = &["queue", "backlog", "rate_1", "x"];

const TOKENS: &[&str] = &[
    "queue", "backlog", "rate_1", "x", "unknown", "(", ")", "+", "-", "*", "/", "%", "!", "==",
    "!=", "<", "<=", ">", ">=", "&&", "||", "and", "or", "not", "?", ":", "??", ",", "min", "max",
    "abs", "ceil", "floor", "round", "0", "1", "2.5", "1e308", "1e-308", ".5", "5.", "0x10", "-0",
    "true", "false", "NaN", "inf", " ", "\t", "é",
];

#[derive(Debug, Arbitrary)]
enum Text {
    Raw(String),
    Tokens(Vec<u8>),
}

/// What one run reads from the fuzzer's bytes.
#[derive(Debug, Arbitrary)]
struct Input {
    text: Text,
    values: [Option<f64>; 4],
}

/// One input: bytes the fuzzer chose, read as structured [`Input`].
pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let text = match input.text {
        Text::Raw(s) => s,
        Text::Tokens(picks) => picks
            .iter()
            .map(|p| TOKENS[usize::from(*p) % TOKENS.len()])
            .collect::<Vec<_>>()
            .join(" "),
    };
    let formula = match Formula::compile(&text, NAMES) {
        Ok(formula) => formula,
        Err(FormulaError::Syntax { position, .. }) => {
            // The position points into the text or just past its end.
            assert!(
                (1..=text.chars().count() + 1).contains(&position),
                "position {position} outside {text:?}"
            );
            return;
        }
        Err(FormulaError::UnknownName { .. }) => return,
        Err(e @ FormulaError::Evaluation(_)) => panic!("compiling gave an evaluation error: {e}"),
    };
    let values: BTreeMap<String, Option<f64>> = NAMES
        .iter()
        .zip(input.values)
        .map(|(name, value)| ((*name).to_string(), value))
        .collect();
    match formula.evaluate(&values) {
        Ok(n) => assert!(n.is_finite(), "{text:?} evaluated to {n}"),
        Err(FormulaError::Evaluation(_)) => {}
        Err(e) => panic!("evaluating gave a compile error: {e}"),
    }
}
