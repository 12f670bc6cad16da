//! OData query pieces Graph clients send: the extended-property `$filter`,
//! `$expand` of extended properties, and building `@odata.nextLink` URLs.

use serde_json::{json, Value};
use std::collections::HashMap;

use crate::error::{ApiError, ApiResult};
use crate::graph::model::{MEvent, OutZone};

/// `$filter=singleValueExtendedProperties/any(ep: ep/id eq '...' and ep/value eq '...')`.
pub fn parse_ext_filter(filter: &str) -> ApiResult<(String, String)> {
    let quoted_after = |needle: &str| -> Option<String> {
        let start = filter.find(needle)? + needle.len();
        let rest = &filter[start..];
        let rest = rest.trim_start().strip_prefix('\'')?;
        rest.find('\'').map(|end| rest[..end].to_string())
    };
    if !filter
        .trim_start()
        .starts_with("singleValueExtendedProperties/any(")
    {
        return Err(ApiError::new(
            400,
            "ErrorInvalidUrlQueryFilter",
            "The query filter contains one or more invalid nodes.",
        ));
    }
    match (quoted_after("/id eq"), quoted_after("/value eq")) {
        (Some(id), Some(v)) => Ok((id, v)),
        _ => Err(ApiError::new(
            400,
            "ErrorInvalidUrlQueryFilter",
            "The query filter contains one or more invalid nodes.",
        )),
    }
}

/// `$expand=singleValueExtendedProperties($filter=id eq '...')` → Some(id filter).
pub fn parse_expand(expand: Option<&String>) -> Option<Option<String>> {
    let e = expand?;
    if !e.contains("singleValueExtendedProperties") {
        return None;
    }
    let id = e.find("id eq '").and_then(|i| {
        let rest = &e[i + 7..];
        rest.find('\'').map(|end| rest[..end].to_string())
    });
    Some(id)
}

pub fn render_with(
    ev: &MEvent,
    upn: &str,
    out: &OutZone,
    expand: &Option<Option<String>>,
) -> Value {
    let mut v = ev.render(upn, out);
    if let Some(id_filter) = expand {
        v["singleValueExtendedProperties"] = json!(ev.extended_properties(id_filter.as_deref()));
    }
    v
}

pub fn a_path(p: &HashMap<String, String>) -> String {
    let who = p
        .get("upn")
        .map(|u| format!("users/{u}"))
        .unwrap_or_else(|| "me".into());
    match p.get("cal") {
        Some(c) => format!("/graph/v1.0/{who}/calendars/{c}/events"),
        None => format!("/graph/v1.0/{who}/events"),
    }
}

/// Minimal percent-encoding for query values we generate.
pub fn encode_query(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", pct(k), pct(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'$' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
