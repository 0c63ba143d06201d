//! The metrics-api scaler's `valueLocation` parsing and value extraction from JSON, YAML, XML
//! and Prometheus bodies, with quantity strings. A location parses or is refused; extraction
//! answers a finite number or an error (never NaN, an infinity or a panic), whatever the body.

use arbitrary::{Arbitrary, Unstructured};
use ebb_scalers::builtin::metrics_api::extract::{Format, Location, parse_quantity};

const LOCATIONS: &[&str] = &[
    "value",
    "a.b.c",
    "items.0.count",
    "items.#",
    "a\\.b",
    "stats.queue.depth",
    "stats.queue.1",
    "stats.queue.#",
    "http_requests_total",
    "http_requests_total{method=\"get\"}",
    "m{a=\"x\",b=\"y\"}",
    "m{a=\"x\\\"y\"}",
    "*",
    "a.#.b",
    "#(x==1)",
    "a|b",
    "@this",
];

const BODIES: &[&str] = &[
    "{\"value\": 5}",
    "{\"a\": {\"b\": {\"c\": \"10k\"}}}",
    "{\"items\": [{\"count\": 1.5}, {\"count\": \"250m\"}]}",
    "{\"value\": 1e308}",
    "{\"value\": \"NaN\"}",
    "{\"value\": \"1e400\"}",
    "value: 5\n",
    "items:\n  - count: 3\n  - count: 4\n",
    "a:\n  b:\n    c: .inf\n",
    "<stats><queue><depth>7</depth></queue></stats>",
    "<stats><queue>1</queue><queue>2</queue></stats>",
    "<!DOCTYPE x [<!ENTITY a \"aaaa\">]><x>&a;</x>",
    "# HELP http_requests_total x\n# TYPE http_requests_total counter\nhttp_requests_total{method=\"get\"} 1027 1395066363000\n",
    "m{a=\"x\",b=\"y\"} +Inf\nm{a=\"x\",b=\"y\"} 3\n",
    "m NaN\n",
];

#[derive(Debug, Arbitrary)]
enum Text {
    Known(u8),
    Mixed(u8, String),
    Raw(String),
}

impl Text {
    fn resolve(self, table: &[&str]) -> String {
        match self {
            Text::Known(i) => table[usize::from(i) % table.len()].to_string(),
            Text::Mixed(i, tail) => format!("{}{tail}", table[usize::from(i) % table.len()]),
            Text::Raw(s) => s,
        }
    }
}

/// What one run reads from the fuzzer's bytes.
#[derive(Debug, Arbitrary)]
struct Input {
    format: u8,
    location: Text,
    body: Text,
    quantity: String,
}

/// One input: bytes the fuzzer chose, read as structured [`Input`].
pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    if let Some(v) = parse_quantity(&input.quantity) {
        assert!(v.is_finite(), "quantity {:?} gave {v}", input.quantity);
    }
    let format = match input.format % 4 {
        0 => Format::Json,
        1 => Format::Yaml,
        2 => Format::Xml,
        _ => Format::Prometheus,
    };
    let Ok(location) = Location::parse(&input.location.resolve(LOCATIONS), format) else {
        return;
    };
    let body = input.body.resolve(BODIES);
    if let Ok(v) = location.extract(body.as_bytes(), format) {
        assert!(v.is_finite(), "{location:?} in {body:?} gave {v}");
    }
}
