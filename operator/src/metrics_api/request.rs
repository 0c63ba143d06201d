//! The pure half of the external metrics API: what a request asks for, and the documents and
//! errors it is answered with. No I/O here.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, GroupVersionForDiscovery, Status, Time,
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::hpa::quantity;

/// The API group and version served.
pub const GROUP: &str = "external.metrics.k8s.io";
/// See [`GROUP`].
pub const VERSION: &str = "v1beta1";
/// The label the HPA selects a ScaledObject's metrics by.
pub const SELECTOR_LABEL: &str = "scaledobject.keda.sh/name";
/// Longest query string accepted.
pub const MAX_QUERY: usize = 4096;

/// A request answered with a Kubernetes `Status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason`: NotFound, BadRequest, Unauthorized, Forbidden, ServiceUnavailable, ...
    pub reason: &'static str,
    /// What went wrong (never a secret).
    pub message: String,
}

impl ApiError {
    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            code: 400,
            reason: "BadRequest",
            message: message.into(),
        }
    }
    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            code: 401,
            reason: "Unauthorized",
            message: message.into(),
        }
    }
    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            code: 403,
            reason: "Forbidden",
            message: message.into(),
        }
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            code: 404,
            reason: "NotFound",
            message: message.into(),
        }
    }
    /// 503: the metric cannot be read now; the HPA holds its current count.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            code: 503,
            reason: "ServiceUnavailable",
            message: message.into(),
        }
    }
    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            code: 500,
            reason: "InternalError",
            message: message.into(),
        }
    }

    /// The `Status` document.
    pub fn status(&self) -> Value {
        to_value(&Status {
            status: Some("Failure".into()),
            message: Some(self.message.clone()),
            reason: Some(self.reason.into()),
            code: Some(self.code.into()),
            ..Status::default()
        })
    }
}

/// The ScaledObject a `labelSelector` names: `scaledobject.keda.sh/name=<so>` (`==` too), alone
/// or among other requirements. The query string is decoded here.
pub fn scaled_object_of(query: Option<&str>) -> Result<String, ApiError> {
    let query = query.unwrap_or("");
    if query.len() > MAX_QUERY {
        return Err(ApiError::bad_request(format!(
            "the query string is {} bytes; at most {MAX_QUERY} are accepted",
            query.len()
        )));
    }
    let selector = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "labelSelector")
        .map(|(_, value)| decode(value))
        .transpose()?
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "expected a labelSelector with {SELECTOR_LABEL}=<scaledobject>"
            ))
        })?;
    for requirement in selector.split(',') {
        let requirement = requirement.trim();
        let (key, value) = match requirement.split_once("==") {
            Some(kv) => kv,
            None => requirement.split_once('=').unwrap_or((requirement, "")),
        };
        if key.trim() == SELECTOR_LABEL {
            let value = value.trim();
            if value.is_empty()
                || !value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
            {
                return Err(ApiError::bad_request(format!(
                    "labelSelector: {SELECTOR_LABEL} must name a ScaledObject"
                )));
            }
            return Ok(value.to_string());
        }
    }
    Err(ApiError::bad_request(format!(
        "labelSelector: expected {SELECTOR_LABEL}=<scaledobject>"
    )))
}

/// Percent-decoding of a query value (`+` is a space).
fn decode(value: &str) -> Result<String, ApiError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| ApiError::bad_request("labelSelector: bad percent-encoding"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request("labelSelector: not UTF-8"))
}

/// The ExternalMetricValueList for one value of `metric`.
pub fn value_list(
    metric: &str,
    scaled_object: &str,
    value: f64,
    at: Time,
) -> Result<Value, ApiError> {
    let quantity = quantity(value).ok_or_else(|| {
        ApiError::internal(format!(
            "metric {metric}: the value {value} cannot be written as a quantity"
        ))
    })?;
    Ok(json!({
        "kind": "ExternalMetricValueList",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": {},
        "items": [{
            "metricName": metric,
            "metricLabels": {SELECTOR_LABEL: scaled_object},
            "timestamp": at,
            "value": quantity,
        }]
    }))
}

/// A k8s-openapi document as JSON. Its types write their own `kind` and `apiVersion`.
fn to_value(document: &impl Serialize) -> Value {
    // Plain structs of strings, numbers and lists: serializing them cannot fail.
    serde_json::to_value(document).unwrap_or(Value::Null)
}

/// `/apis`: the group list.
pub fn api_group_list() -> Value {
    to_value(&APIGroupList {
        groups: vec![group()],
    })
}

/// `/apis/external.metrics.k8s.io`.
pub fn api_group() -> Value {
    to_value(&group())
}

fn group() -> APIGroup {
    let version = GroupVersionForDiscovery {
        group_version: format!("{GROUP}/{VERSION}"),
        version: VERSION.into(),
    };
    APIGroup {
        name: GROUP.into(),
        versions: vec![version.clone()],
        preferred_version: Some(version),
        ..APIGroup::default()
    }
}

/// `/apis/external.metrics.k8s.io/v1beta1`: one namespaced resource, `externalmetrics`.
pub fn api_resource_list() -> Value {
    to_value(&APIResourceList {
        group_version: format!("{GROUP}/{VERSION}"),
        resources: vec![APIResource {
            name: "externalmetrics".into(),
            singular_name: String::new(),
            namespaced: true,
            kind: "ExternalMetricValueList".into(),
            verbs: vec!["get".into()],
            ..APIResource::default()
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scaled_object_comes_from_the_selector() {
        for (query, expected) in [
            (
                "labelSelector=scaledobject.keda.sh%2Fname%3Dworker",
                "worker",
            ),
            ("labelSelector=scaledobject.keda.sh/name=worker", "worker"),
            (
                "labelSelector=scaledobject.keda.sh%2Fname%3D%3Dworker",
                "worker",
            ),
            (
                "labelSelector=app%3Dx%2Cscaledobject.keda.sh%2Fname%3Dmy-so.1",
                "my-so.1",
            ),
            ("foo=bar&labelSelector=scaledobject.keda.sh%2Fname%3Dw", "w"),
        ] {
            assert_eq!(
                scaled_object_of(Some(query)).as_deref(),
                Ok(expected),
                "{query}"
            );
        }
    }

    #[test]
    fn bad_selectors_are_400_naming_the_problem() {
        for (query, expected) in [
            (None, "expected a labelSelector"),
            (
                Some("labelSelector=app%3Dx"),
                "expected scaledobject.keda.sh/name=<scaledobject>",
            ),
            (
                Some("labelSelector=scaledobject.keda.sh%2Fname%3D"),
                "must name a ScaledObject",
            ),
            (
                Some("labelSelector=scaledobject.keda.sh%2Fname%3Da%20b"),
                "must name a ScaledObject",
            ),
            (Some("labelSelector=%zz"), "bad percent-encoding"),
            (Some("labelSelector=%ff"), "not UTF-8"),
        ] {
            let err = scaled_object_of(query).expect_err("refused");
            assert_eq!(err.code, 400);
            assert!(err.message.contains(expected), "{query:?}: {err}");
        }
        let huge = format!("labelSelector={}", "a".repeat(MAX_QUERY));
        let err = scaled_object_of(Some(&huge)).expect_err("refused");
        assert_eq!((err.code, err.reason), (400, "BadRequest"));
    }

    #[test]
    fn a_value_is_a_quantity_and_an_error_a_status() {
        let at = Time(jiff::Timestamp::UNIX_EPOCH);
        let list = value_list("s0-redis-jobs", "worker", 2.5, at).expect("list");
        assert_eq!(list["items"][0]["value"], "2500m");
        assert_eq!(list["items"][0]["metricName"], "s0-redis-jobs");
        assert_eq!(list["items"][0]["metricLabels"][SELECTOR_LABEL], "worker");
        assert_eq!(
            value_list("m", "w", f64::NAN, Time(jiff::Timestamp::UNIX_EPOCH))
                .expect_err("nan")
                .code,
            500
        );
        assert_eq!(
            ApiError::not_found("no ScaledObject").status(),
            json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "no ScaledObject",
                "reason": "NotFound",
                "code": 404,
            })
        );
    }

    #[test]
    fn discovery_lists_externalmetrics() {
        let version = json!({
            "groupVersion": "external.metrics.k8s.io/v1beta1",
            "version": "v1beta1",
        });
        let group = json!({
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": "external.metrics.k8s.io",
            "versions": [version.clone()],
            "preferredVersion": version,
        });
        assert_eq!(api_group(), group);
        assert_eq!(
            api_group_list(),
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]})
        );
        assert_eq!(
            api_resource_list(),
            json!({
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": "external.metrics.k8s.io/v1beta1",
                "resources": [{
                    "name": "externalmetrics",
                    "singularName": "",
                    "namespaced": true,
                    "kind": "ExternalMetricValueList",
                    "verbs": ["get"],
                }]
            })
        );
    }
}
