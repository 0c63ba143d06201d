//! What the stream and queue scalers read from their servers: NATS's `/jsz` and `/varz`
//! monitoring answers, SQS's `GetQueueAttributes` answers, and for Kafka's OAUTHBEARER an OAuth
//! token endpoint's answer and the broker's answer to the token. Any body reads as a value or an
//! error, never a panic; leader candidates are URLs of the endpoint's scheme, a failed SQS call
//! never reads as a count, a non-2xx token answer is never a token, and an error never echoes
//! the answer's body.

use arbitrary::{Arbitrary, Unstructured};
use ebb_scalers::builtin::aws_sqs_queue::read_answer;
use ebb_scalers::builtin::kafka_oauth::{read_server_answer, read_token_answer};
use ebb_scalers::builtin::nats_jetstream::{
    Lookup, Varz, find_lag, leader_candidates, read_json, read_jsz,
};
use reqwest::Url;

const JSZ: &[&str] = &[
    r#"{"meta_cluster":{"cluster_size":3},"account_details":[{"name":"$G","id":"$G","stream_detail":[{"name":"s","consumer_detail":[{"name":"c","num_pending":7,"num_ack_pending":3,"cluster":{"leader":"n1"}}]}]}]}"#,
    r#"{"account_details":[{"name":"$G","stream_detail":[{"name":"s","consumer_detail":[{"name":"c","num_pending":18446744073709551615,"num_ack_pending":5}]}]}]}"#,
    r#"{"account_details":[{"name":"$G","stream_detail":[{"name":"s"}]}]}"#,
    r#"{"account_details":null}"#,
    "{}",
];

const VARZ: &[&str] = &[
    r#"{"server_name":"n0","connect_urls":["10.0.0.1:4222","[::1]:4222","nats-2.nats.svc:4222"]}"#,
    r#"{"server_name":"n0","cluster":{"urls":["n1.nats.svc:6222","nats-route://n2.x:6222",".:1",""]}}"#,
    "{}",
];

const SQS: &[&str] = &[
    r#"{"Attributes":{"ApproximateNumberOfMessages":"200","ApproximateNumberOfMessagesNotVisible":"100","ApproximateNumberOfMessagesDelayed":"50"}}"#,
    r#"{"Attributes":{"ApproximateNumberOfMessages":"18446744073709551615","ApproximateNumberOfMessagesNotVisible":"18446744073709551615"}}"#,
    r#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"gone"}"#,
    r#"{"Message":"x","__type":"y"}"#,
];

const TOKENS: &[&str] = &[
    r#"{"access_token":"eyJ.a.b","token_type":"bearer","expires_in":3599,"scope":"kafka"}"#,
    r#"{"access_token":"t","expires_in":"60"}"#,
    r#"{"error":"invalid_client","error_description":"Client authentication failed"}"#,
    r#"{"status":"invalid_token"}"#,
];

const ATTRIBUTES: [&str; 3] = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
];

/// Drives the parsers with one input.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let pick = |u: &mut Unstructured, seeds: &[&str]| -> Vec<u8> {
        let base = u.choose(seeds).copied().unwrap_or("{}");
        let cut = usize::arbitrary(u).unwrap_or(base.len()) % (base.len() + 1);
        let mut body = base.as_bytes()[..cut].to_vec();
        body.extend_from_slice(u.peek_bytes(u.len().min(64)).unwrap_or_default());
        body
    };
    let body = if bool::arbitrary(&mut u).unwrap_or(false) {
        pick(&mut u, JSZ)
    } else {
        u.bytes(u.len().min(256)).unwrap_or_default().to_vec()
    };
    if let Ok(jsz) = read_jsz(&body) {
        let _ = jsz.clustered();
        // The first seed's consumer, whole: its lag is what it holds (7 + 3).
        if body == JSZ[0].as_bytes() {
            assert!(matches!(
                find_lag(&jsz, "$G", "$G", "s", "c"),
                Lookup::Found { lag: 10, .. }
            ));
        } else {
            let _ = find_lag(&jsz, "$G", "$G", "s", "c");
        }
    }
    let body = pick(&mut u, VARZ);
    if let Ok(varz) = read_json::<Varz>(&body) {
        let endpoint = Url::parse("https://nats.nats.svc:8222/jsz?acc=%24G").expect("a URL");
        for candidate in leader_candidates(&varz, &endpoint) {
            assert_eq!(candidate.base.scheme(), "https");
        }
    }
    let body = pick(&mut u, SQS);
    let success = bool::arbitrary(&mut u).unwrap_or(true);
    if let Ok(sum) = read_answer(success, &body, &ATTRIBUTES) {
        assert!(success, "a failed call read as {sum}");
    }
    let body = pick(&mut u, TOKENS);
    let status = u16::arbitrary(&mut u).unwrap_or(200) % 600;
    match read_token_answer(status, &body) {
        Ok(token) => {
            assert!(
                (200..300).contains(&status),
                "HTTP {status} read as a token"
            );
            assert!(!token.access_token.is_empty());
        }
        Err(e) => {
            // A JSON body is never echoed in the message (messages hold no brace).
            if body.starts_with(b"{") {
                assert!(!e.contains(&*String::from_utf8_lossy(&body)), "{e}");
            }
        }
    }
    if let Err(e) = read_server_answer(&body) {
        assert!(e.starts_with("the broker refused the token"), "{e}");
    }
}
