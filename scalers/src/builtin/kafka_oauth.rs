//! SASL/OAUTHBEARER for the `kafka` trigger: an access token from an OAuth 2.0 token endpoint by
//! the client-credentials grant (RFC 6749 section 4.4), as KEDA's kafka scaler gets one, and the
//! SASL client message that carries it to the broker (RFC 7628, KIP-255 and KIP-342).
//!
//! A [`TokenSource`] belongs to one shared cluster client, so every connection of the cluster
//! presents the same token; it is fetched again 10 seconds before it expires (the margin Go's
//! `oauth2` package keeps, which KEDA uses). The client credentials go in an HTTP Basic header
//! first and, when the endpoint refuses that, in the form body, and the way that worked is kept,
//! as Go's `oauth2` does. The request, the answer and the message are built and read by the
//! pure functions [`token_request_body`], [`read_token_answer`] and [`client_first_message`].

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use tokio::time::Instant;

use crate::http::{error_message, read_body};

/// A token is fetched again this long before it expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// How long one token request may take.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);

/// `application/x-www-form-urlencoded` leaves these as they are (RFC 6749 appendix B).
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_');

/// What a `kafka` trigger's OAUTHBEARER needs. Holds a secret: never printed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct OAuthSettings {
    /// `oauthTokenEndpointUri`.
    pub token_url: String,
    /// `username`: the OAuth client id.
    pub client_id: String,
    /// `password`: the OAuth client secret.
    pub client_secret: String,
    /// `scopes`, comma-separated in the trigger, empty ones dropped.
    pub scopes: Vec<String>,
    /// `oauthExtensions`: SASL extensions (`key=value`) sent beside the token.
    pub extensions: Vec<(String, String)>,
}

impl fmt::Debug for OAuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthSettings")
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .field("extensions", &self.extensions.len())
            .finish_non_exhaustive()
    }
}

/// Parses `oauthExtensions`: `key=value` pairs separated by commas, as KEDA reads them. A key is
/// not empty and not `auth` (the token's own key, which KEDA's client refuses when it connects);
/// keys and values are printable ASCII, so they cannot break the message's framing. (RFC 7628
/// allows letters only in a key; the broker judges that, as it does for KEDA.)
pub fn parse_extensions(raw: &str) -> Result<Vec<(String, String)>, String> {
    if raw.trim().is_empty() {
        return Ok(Vec::new());
    }
    // Messages count the pairs from 1 and never show one: a value may be a credential.
    raw.split(',')
        .enumerate()
        .map(|(i, pair)| {
            let n = i + 1;
            let (key, value) = pair
                .split_once('=')
                .filter(|(_, v)| !v.contains('='))
                .ok_or_else(|| format!("extension {n} is not of the form key=value"))?;
            if key.is_empty() || key == "auth" || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "extension {n}'s key must be printable ASCII, not empty and not \"auth\""
                ));
            }
            if !value
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) || b == b'\t')
            {
                return Err(format!("extension {n}'s value must be printable ASCII"));
            }
            Ok((key.to_string(), value.to_string()))
        })
        .collect()
}

/// The client's first (and only) SASL message: the GS2 header without an authorization
/// identity, the bearer token and the extensions, each ended by `0x01`, and a final `0x01`.
pub fn client_first_message(token: &str, extensions: &[(String, String)]) -> Vec<u8> {
    let mut message = format!("n,,\x01auth=Bearer {token}\x01");
    for (key, value) in extensions {
        message.push_str(&format!("{key}={value}\x01"));
    }
    message.push('\x01');
    message.into_bytes()
}

/// Where the client credentials go in a token request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// An HTTP Basic header (`client_secret_basic`), tried first.
    Header,
    /// `client_id` and `client_secret` in the form body (`client_secret_post`).
    Body,
}

/// The form body of a client-credentials token request.
pub fn token_request_body(settings: &OAuthSettings, auth: ClientAuth) -> String {
    let enc = |s: &str| utf8_percent_encode(s, FORM).to_string();
    let mut body = String::from("grant_type=client_credentials");
    if !settings.scopes.is_empty() {
        body.push_str("&scope=");
        body.push_str(&enc(&settings.scopes.join(" ")));
    }
    if auth == ClientAuth::Body {
        body.push_str(&format!(
            "&client_id={}&client_secret={}",
            enc(&settings.client_id),
            enc(&settings.client_secret)
        ));
    }
    body
}

/// The Basic header's value: both parts form-encoded first (RFC 6749 section 2.3.1).
pub fn basic_header(settings: &OAuthSettings) -> String {
    let enc = |s: &str| utf8_percent_encode(s, FORM).to_string();
    let pair = format!(
        "{}:{}",
        enc(&settings.client_id),
        enc(&settings.client_secret)
    );
    format!("Basic {}", BASE64.encode(pair))
}

/// A token and how long it lives, from the endpoint's answer.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// `access_token`.
    pub access_token: String,
    /// `expires_in`, when the answer gives one.
    pub lifetime: Option<Duration>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

/// `expires_in` as a number or a numeric string (some endpoints send one).
#[derive(Deserialize)]
#[serde(untagged)]
enum ExpiresIn {
    Number(f64),
    Text(String),
}

#[derive(Deserialize)]
struct Answer {
    access_token: Option<String>,
    expires_in: Option<ExpiresIn>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Reads a token endpoint's answer: a 2xx JSON body with `access_token` is a token; anything
/// else is an error naming the OAuth `error` (never the body, which may echo a credential).
pub fn read_token_answer(status: u16, body: &[u8]) -> Result<Token, String> {
    let answer: Result<Answer, _> = serde_json::from_slice(body);
    if !(200..300).contains(&status) {
        let detail = match answer {
            Ok(Answer {
                error: Some(error),
                error_description,
                ..
            }) => match error_description {
                Some(d) if d.len() <= 200 && !d.contains('\n') => format!(": {error} ({d})"),
                _ => format!(": {error}"),
            },
            _ => String::new(),
        };
        return Err(format!("the token endpoint answered HTTP {status}{detail}"));
    }
    let answer = answer.map_err(|_| "the token endpoint's answer is not JSON".to_string())?;
    let access_token = answer
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| "the token endpoint's answer has no access_token".to_string())?;
    if !access_token.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Err("the access token is not printable ASCII".into());
    }
    let seconds = match answer.expires_in {
        None => None,
        Some(ExpiresIn::Number(n)) => Some(n),
        Some(ExpiresIn::Text(t)) => Some(
            t.trim()
                .parse::<f64>()
                .map_err(|_| "the token endpoint's expires_in is not a number".to_string())?,
        ),
    };
    let lifetime = seconds
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| Duration::from_secs_f64(s.min(1e9)));
    Ok(Token {
        access_token,
        lifetime,
    })
}

/// The server's answer to the client's first message: empty on success; otherwise an error
/// status (RFC 7628 section 3.2.2) to report.
pub fn read_server_answer(bytes: &[u8]) -> Result<(), String> {
    if bytes.is_empty() {
        return Ok(());
    }
    #[derive(Deserialize)]
    struct Status {
        status: Option<String>,
    }
    let status = serde_json::from_slice::<Status>(bytes)
        .ok()
        .and_then(|s| s.status)
        .unwrap_or_else(|| "an unreadable error".to_string());
    Err(format!("the broker refused the token: {status}"))
}

/// The token of one cluster client, fetched when needed and kept until shortly before it
/// expires.
pub struct TokenSource {
    settings: OAuthSettings,
    client: reqwest::Client,
    /// 0: not known yet, 1: header, 2: body.
    auth: AtomicU8,
    cached: tokio::sync::Mutex<Option<(String, Option<Instant>)>>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// A source for `settings`, verifying the endpoint's certificate with the system roots.
    pub fn new(settings: OAuthSettings) -> Result<Self, String> {
        let client = crate::http::client(&crate::tls::ClientTls::default(), |b| {
            b.timeout(TOKEN_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
        })?;
        Ok(Self {
            settings,
            client,
            auth: AtomicU8::new(0),
            cached: tokio::sync::Mutex::new(None),
        })
    }

    /// The SASL extensions sent beside the token.
    pub fn extensions(&self) -> &[(String, String)] {
        &self.settings.extensions
    }

    /// The endpoint's host, for messages (the URL's path or query might carry a secret).
    fn endpoint(&self) -> String {
        reqwest::Url::parse(&self.settings.token_url)
            .ok()
            .and_then(|u| {
                u.host_str().map(|h| {
                    format!(
                        "{h}{}",
                        u.port().map(|p| format!(":{p}")).unwrap_or_default()
                    )
                })
            })
            .unwrap_or_else(|| "the token endpoint".into())
    }

    /// A token that is valid for at least [`EXPIRY_MARGIN`] more.
    pub async fn token(&self) -> Result<String, String> {
        let mut cached = self.cached.lock().await;
        if let Some((token, expires)) = cached.as_ref()
            && expires.is_none_or(|at| Instant::now() + EXPIRY_MARGIN < at)
        {
            return Ok(token.clone());
        }
        let fetched_at = Instant::now();
        let token = self
            .fetch()
            .await
            .map_err(|e| format!("getting an OAuth token from {}: {e}", self.endpoint()))?;
        let expires = token.lifetime.map(|l| fetched_at + l);
        *cached = Some((token.access_token.clone(), expires));
        Ok(token.access_token)
    }

    async fn fetch(&self) -> Result<Token, String> {
        match self.auth.load(Ordering::Relaxed) {
            1 => return self.request(ClientAuth::Header).await,
            2 => return self.request(ClientAuth::Body).await,
            _ => {}
        }
        match self.request(ClientAuth::Header).await {
            Ok(token) => {
                self.auth.store(1, Ordering::Relaxed);
                Ok(token)
            }
            Err(header_error) => match self.request(ClientAuth::Body).await {
                Ok(token) => {
                    self.auth.store(2, Ordering::Relaxed);
                    Ok(token)
                }
                // The first answer is the one to report: the header is the standard way.
                Err(_) => Err(header_error),
            },
        }
    }

    async fn request(&self, auth: ClientAuth) -> Result<Token, String> {
        let mut request = self
            .client
            .post(&self.settings.token_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(token_request_body(&self.settings, auth));
        if auth == ClientAuth::Header {
            let mut value =
                reqwest::header::HeaderValue::from_str(&basic_header(&self.settings))
                    .map_err(|_| "the client credentials cannot be sent in a header".to_string())?;
            value.set_sensitive(true);
            request = request.header("authorization", value);
        }
        let response = request.send().await.map_err(error_message)?;
        let status = response.status().as_u16();
        let body = read_body(response).await?;
        read_token_answer(status, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> OAuthSettings {
        OAuthSettings {
            token_url: "https://idp.example/oauth2/token?tenant=x".into(),
            client_id: "kafka client".into(),
            client_secret: "s3cret&=".into(),
            scopes: vec!["kafka".into(), "read".into()],
            extensions: vec![("logicalCluster".into(), "lkc-123".into())],
        }
    }

    #[test]
    fn the_sasl_message_is_rfc_7628_s_with_the_extensions() {
        assert_eq!(
            client_first_message("abc.def.ghi", &[]),
            b"n,,\x01auth=Bearer abc.def.ghi\x01\x01"
        );
        assert_eq!(
            client_first_message("t", &settings().extensions),
            b"n,,\x01auth=Bearer t\x01logicalCluster=lkc-123\x01\x01"
        );
    }

    #[test]
    fn extensions_are_key_value_pairs_as_keda_reads_them() {
        assert_eq!(parse_extensions("").unwrap(), vec![]);
        assert_eq!(
            parse_extensions("a=1,auth=x").unwrap_err(),
            "extension 2's key must be printable ASCII, not empty and not \"auth\""
        );
        assert_eq!(
            parse_extensions("secretvalue").unwrap_err(),
            "extension 1 is not of the form key=value"
        );
        assert_eq!(
            parse_extensions("logicalCluster=1,identityPoolId=pool-1").unwrap(),
            vec![
                ("logicalCluster".to_string(), "1".to_string()),
                ("identityPoolId".to_string(), "pool-1".to_string())
            ]
        );
        // KEDA's rows: a pair without `=`, or with two, is refused.
        assert!(parse_extensions("logicalCluster").is_err());
        assert!(parse_extensions("a=b=c").is_err());
        assert!(parse_extensions("=x").is_err());
        assert!(parse_extensions("a=\u{1}").is_err());
    }

    #[test]
    fn the_token_request_is_the_client_credentials_grant() {
        let s = settings();
        assert_eq!(
            token_request_body(&s, ClientAuth::Header),
            "grant_type=client_credentials&scope=kafka%20read"
        );
        assert_eq!(
            token_request_body(&s, ClientAuth::Body),
            "grant_type=client_credentials&scope=kafka%20read&client_id=kafka%20client&client_secret=s3cret%26%3D"
        );
        let mut no_scope = s.clone();
        no_scope.scopes.clear();
        assert_eq!(
            token_request_body(&no_scope, ClientAuth::Header),
            "grant_type=client_credentials"
        );
        assert_eq!(
            basic_header(&s),
            format!("Basic {}", BASE64.encode("kafka%20client:s3cret%26%3D"))
        );
    }

    #[test]
    fn token_answers_are_read_and_errors_never_echo_the_body() {
        let token = read_token_answer(
            200,
            br#"{"access_token":"eyJ.x.y","token_type":"bearer","expires_in":3599}"#,
        )
        .unwrap();
        assert_eq!(token.access_token, "eyJ.x.y");
        assert_eq!(token.lifetime, Some(Duration::from_secs(3599)));
        assert_eq!(
            read_token_answer(200, br#"{"access_token":"t","expires_in":"60"}"#)
                .unwrap()
                .lifetime,
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            read_token_answer(200, br#"{"access_token":"t"}"#)
                .unwrap()
                .lifetime,
            None
        );
        assert_eq!(
            read_token_answer(
                401,
                br#"{"error":"invalid_client","error_description":"Client authentication failed"}"#
            )
            .unwrap_err(),
            "the token endpoint answered HTTP 401: invalid_client (Client authentication failed)"
        );
        let err = read_token_answer(500, b"client_secret=s3cret was wrong").unwrap_err();
        assert_eq!(err, "the token endpoint answered HTTP 500");
        assert!(read_token_answer(200, b"{}").is_err());
        assert!(read_token_answer(200, br#"{"access_token":""}"#).is_err());
        assert!(read_token_answer(200, br#"{"access_token":"a b"}"#).is_err());
        assert!(read_token_answer(200, b"<html>").is_err());
    }

    #[test]
    fn the_broker_s_error_status_is_reported() {
        assert_eq!(read_server_answer(b""), Ok(()));
        assert_eq!(
            read_server_answer(br#"{"status":"invalid_token"}"#).unwrap_err(),
            "the broker refused the token: invalid_token"
        );
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let shown = format!(
            "{:?} {:?}",
            settings(),
            Token {
                access_token: "eyJ.secret".into(),
                lifetime: None
            }
        );
        assert!(
            !shown.contains("s3cret") && !shown.contains("eyJ.secret"),
            "{shown}"
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn answers_never_panic(status in 0u16..600, body in proptest::collection::vec(any::<u8>(), 0..200)) {
                let _ = read_token_answer(status, &body);
                let _ = read_server_answer(&body);
            }

            #[test]
            fn parsed_extensions_rebuild_a_message_kafka_reads(raw in "[a-zA-Z]{1,8}=[ -+\\--~]{1,8}(,[a-zA-Z]{1,8}=[ -+\\--~]{1,8}){0,3}") {
                if let Ok(ext) = parse_extensions(&raw) {
                    let message = client_first_message("t", &ext);
                    let text = String::from_utf8(message).unwrap();
                    let end = "\x01\x01";
                    prop_assert!(text.ends_with(end));
                    prop_assert_eq!(text.matches('\x01').count(), 3 + ext.len());
                }
            }
        }
    }
}
