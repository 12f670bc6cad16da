//! Subscriptions (validation handshake, expiry clamp, renew, delete,
//! reauthorize), change notifications and lifecycle notifications.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;

use crate::delivery::{enqueue, record, Outgoing};
use crate::error::{ApiError, ApiResult};
use crate::gate::Authed;
use crate::google::push::check_address;
use crate::graph::errors::MErr;
use crate::graph::model::{GraphState, MEvent};
use crate::request_log::Provider;
use crate::state::{lock, Shared};
use crate::timefmt::{graph_instant, parse_rfc3339};

#[derive(Clone, Debug, Serialize)]
pub struct Subscription {
    pub id: String,
    /// Mailbox (UPN, lower case) whose events are watched.
    pub mailbox: String,
    pub resource: String,
    pub change_types: Vec<String>,
    pub notification_url: String,
    pub lifecycle_url: Option<String>,
    pub client_state: Option<String>,
    pub expiration: DateTime<Utc>,
    pub application_id: String,
    pub creator_id: String,
    pub tenant_id: String,
    pub user_id: String,
    /// Set by `reauthorizationRequired`: deliveries pause until reauthorize/renew.
    pub paused: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeType {
    Created,
    Updated,
    Deleted,
}

impl ChangeType {
    fn wire(self) -> &'static str {
        match self {
            ChangeType::Created => "created",
            ChangeType::Updated => "updated",
            ChangeType::Deleted => "deleted",
        }
    }
}

/// Lifecycle notification kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LifecycleEvent {
    ReauthorizationRequired,
    SubscriptionRemoved,
    Missed,
}

impl LifecycleEvent {
    fn wire(self) -> &'static str {
        match self {
            LifecycleEvent::ReauthorizationRequired => "reauthorizationRequired",
            LifecycleEvent::SubscriptionRemoved => "subscriptionRemoved",
            LifecycleEvent::Missed => "missed",
        }
    }
}

fn expiry_text(t: DateTime<Utc>) -> String {
    format!("{}+00:00", crate::timefmt::graph_wall(t.naive_utc()))
}

impl Subscription {
    pub fn render(&self, base: &str) -> Value {
        json!({
            "@odata.context": format!("{base}/$metadata#subscriptions/$entity"),
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.application_id,
            "changeType": self.change_types.join(","),
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "notificationQueryOptions": null,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": graph_instant(self.expiration),
            "creatorId": self.creator_id,
            "includeResourceData": false,
            "latestSupportedTlsVersion": "v1_2",
            "encryptionCertificate": null,
            "encryptionCertificateId": null,
            "notificationUrlAppId": null,
        })
    }

    fn live(&self, now: DateTime<Utc>) -> bool {
        self.expiration > now
    }
}

/// Fan a change out to the mailbox's live subscriptions.
pub fn notify_change(
    shared: &Arc<Shared>,
    st: &mut GraphState,
    upn: &str,
    ev: &MEvent,
    ct: ChangeType,
) {
    let now = shared.now();
    let mut subs: Vec<&Subscription> = st
        .subscriptions
        .values()
        .filter(|s| s.mailbox.eq_ignore_ascii_case(upn) && s.live(now) && !s.paused)
        .filter(|s| s.change_types.iter().any(|c| c == ct.wire()))
        .filter(|s| !s.resource.contains("/calendars/") || s.resource.contains(&ev.calendar_id))
        .collect();
    subs.sort_by(|a, b| a.id.cmp(&b.id));
    // The changed item itself is named: a single event, a master, or an occurrence turned exception.
    let id = ev.id.clone();
    for s in subs {
        let resource = format!("Users/{}/Events/{id}", s.user_id);
        let body = json!({ "value": [ {
            "subscriptionId": s.id,
            "subscriptionExpirationDateTime": expiry_text(s.expiration),
            "clientState": s.client_state,
            "changeType": ct.wire(),
            "resource": resource,
            "tenantId": s.tenant_id,
            "resourceData": { "@odata.type": "#Microsoft.Graph.Event", "@odata.id": resource,
                              "@odata.etag": ev.etag(), "id": id },
        } ] });
        enqueue(
            shared,
            outgoing(shared, s, &s.notification_url, "change", body),
        );
    }
}

fn outgoing(shared: &Shared, s: &Subscription, url: &str, kind: &str, body: Value) -> Outgoing {
    Outgoing {
        provider: Provider::Graph,
        kind: kind.to_string(),
        subject: s.id.clone(),
        target: url.to_string(),
        headers: vec![(
            "User-Agent".into(),
            "Microsoft-Graph-ChangeNotifications/1.0".into(),
        )],
        body: Some(body),
        timeout: std::time::Duration::from_millis(shared.config.graph_notification_timeout_ms),
    }
}

/// Send a lifecycle notification and apply its effect on the subscription.
pub fn lifecycle(
    shared: &Arc<Shared>,
    st: &mut GraphState,
    sub_id: &str,
    event: LifecycleEvent,
) -> ApiResult<()> {
    let s = st.subscriptions.get_mut(sub_id).ok_or_else(sub_not_found)?;
    match event {
        LifecycleEvent::ReauthorizationRequired => s.paused = true,
        LifecycleEvent::SubscriptionRemoved | LifecycleEvent::Missed => {}
    }
    let s = s.clone();
    if event == LifecycleEvent::SubscriptionRemoved {
        st.subscriptions.remove(sub_id);
    }
    if let Some(url) = &s.lifecycle_url {
        let body = json!({ "value": [ {
            "subscriptionId": s.id,
            "subscriptionExpirationDateTime": expiry_text(s.expiration),
            "tenantId": s.tenant_id,
            "clientState": s.client_state,
            "lifecycleEvent": event.wire(),
        } ] });
        enqueue(shared, outgoing(shared, &s, url, "lifecycle", body));
    }
    Ok(())
}

/// Delivery gave up on a change notification: send `missed` if the
/// subscription has a lifecycle URL (the subscriber must resync).
pub fn notify_missed(shared: &Arc<Shared>, sub_id: &str) {
    let mut st = lock(&shared.graph);
    let has_lifecycle = st
        .subscriptions
        .get(sub_id)
        .is_some_and(|s| s.lifecycle_url.is_some());
    if has_lifecycle {
        let _ = lifecycle(shared, &mut st, sub_id, LifecycleEvent::Missed);
    }
}

fn sub_not_found() -> ApiError {
    ApiError::new(404, "ResourceNotFound", "The object was not found.")
}

fn invalid(msg: &str) -> ApiError {
    ApiError::new(400, "InvalidRequest", msg.to_string())
}

/// Graph's validation handshake: POST `{url}?validationToken=...`, expect
/// 200 + `text/plain` + the decoded token, within the deadline.
async fn handshake(shared: &Shared, sub_id: &str, url: &str) -> ApiResult<()> {
    let token = format!(
        "Validation: Testing client application reachability for subscription Request-Id: {}",
        shared.rng.uuid()
    );
    let timeout = std::time::Duration::from_millis(shared.config.graph_validation_timeout_ms);
    let out = Outgoing {
        provider: Provider::Graph,
        kind: "validation".into(),
        subject: sub_id.to_string(),
        target: url.to_string(),
        headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
        body: None,
        timeout,
    };
    let fail = |m: &str| ApiError::new(400, "ValidationError", m.to_string());
    if let Some(target) = &shared.deliver {
        let sep = if url.contains('?') { '&' } else { '?' };
        let request = crate::state::PushRequest {
            url: format!(
                "{url}{sep}validationToken={}",
                crate::graph::query::pct(&token)
            ),
            headers: out.headers.clone(),
            body: None,
        };
        let answer = match tokio::time::timeout(timeout, target.post(request)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                record(shared, &out, 1, None, Some(e), None);
                return Err(fail("Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request."));
            }
            Err(_) => {
                record(shared, &out, 1, None, Some("timeout".into()), None);
                return Err(fail("Subscription validation request timed out."));
            }
        };
        record(shared, &out, 1, Some(answer.status), None, None);
        let plain = answer
            .content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("text/plain"));
        if answer.status != 200 || !plain || answer.body != token {
            return Err(fail("Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request."));
        }
        return Ok(());
    }
    let result = shared
        .http
        .post(url)
        .query(&[("validationToken", token.as_str())])
        .header("Content-Type", "text/plain; charset=utf-8")
        .timeout(timeout)
        .send()
        .await;
    match result {
        Err(e) if e.is_timeout() => {
            record(shared, &out, 1, None, Some("timeout".into()), None);
            Err(fail("Subscription validation request timed out."))
        }
        Err(e) => {
            record(shared, &out, 1, None, Some(e.to_string()), None);
            Err(fail("Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request."))
        }
        Ok(resp) => {
            let status = resp.status().as_u16();
            let plain = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|c| c.starts_with("text/plain"));
            let body = resp.text().await.unwrap_or_default();
            record(shared, &out, 1, Some(status), None, None);
            if status != 200 {
                return Err(fail("Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request."));
            }
            if !plain || body != token {
                return Err(fail("Subscription validation request failed. Response must exactly match validationToken query parameter."));
            }
            Ok(())
        }
    }
}

fn clamp_expiry(shared: &Shared, v: &Value) -> ApiResult<DateTime<Utc>> {
    let now = shared.now();
    let requested = v
        .as_str()
        .and_then(parse_rfc3339)
        .ok_or_else(|| invalid("expirationDateTime is required and must be a valid date."))?;
    if requested <= now {
        return Err(invalid("Subscription expiration must be in the future."));
    }
    Ok(requested.min(now + Duration::minutes(shared.config.graph_subscription_max_minutes)))
}

/// Which mailbox a `resource` refers to, given the caller.
fn resource_mailbox(resource: &str, caller: &str) -> ApiResult<String> {
    let r = resource.trim_start_matches('/');
    let segs: Vec<&str> = r.split('/').collect();
    let lower: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    let owner = match l.as_slice() {
        ["me", "events"] | ["me", "calendar", "events"] | ["me", "calendars", _, "events"] => {
            caller.to_string()
        }
        ["users", u, "events"]
        | ["users", u, "calendar", "events"]
        | ["users", u, "calendars", _, "events"] => u.to_string(),
        _ => {
            return Err(invalid(&format!(
                "Resource '{resource}' is not supported for change notifications."
            )))
        }
    };
    if !owner.eq_ignore_ascii_case(caller) {
        return Err(ApiError::new(
            403,
            "ExtensionError",
            "Operation: Create; Exception: [Status Code: Forbidden; Reason: Access is denied.]",
        ));
    }
    Ok(owner.to_lowercase())
}

pub async fn create_h(
    State(sh): State<Arc<Shared>>,
    Extension(Authed(caller)): Extension<Authed>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, MErr> {
    let b = body
        .map(|Json(v)| v)
        .map_err(|_| ApiError::new(400, "InvalidRequest", "Cannot read the request body."))?;
    let resource = b["resource"]
        .as_str()
        .ok_or_else(|| invalid("resource is required."))?
        .to_string();
    let mailbox = resource_mailbox(&resource, &caller)?;
    let change_types: Vec<String> = b["changeType"]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    if change_types
        .iter()
        .any(|c| !matches!(c.as_str(), "created" | "updated" | "deleted"))
    {
        return Err(invalid(
            "changeType must be a comma-separated list of created, updated, deleted.",
        )
        .into());
    }
    let url = b["notificationUrl"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let lifecycle_url = b["lifecycleNotificationUrl"].as_str().map(str::to_string);
    for u in std::iter::once(&url).chain(lifecycle_url.iter()) {
        if !check_address(u) {
            return Err(invalid("The Notification Url must be HTTPS.").into());
        }
    }
    let client_state = b["clientState"].as_str().map(str::to_string);
    if client_state.as_ref().is_some_and(|c| c.len() > 128) {
        return Err(invalid("clientState must be at most 128 characters.").into());
    }
    let expiration = clamp_expiry(&sh, &b["expirationDateTime"])?;
    let id = sh.rng.uuid().to_string();
    handshake(&sh, &id, &url).await?;
    if let Some(l) = &lifecycle_url {
        handshake(&sh, &id, l).await?;
    }
    let mut st = lock(&sh.graph);
    let acct = st
        .accounts
        .get(&mailbox)
        .ok_or_else(|| invalid("Unknown mailbox."))?;
    let sub = Subscription {
        id: id.clone(),
        mailbox,
        resource,
        change_types,
        notification_url: url,
        lifecycle_url,
        client_state,
        expiration,
        application_id: acct.client_id.clone(),
        creator_id: acct.user_id.clone(),
        tenant_id: acct.tenant_id.clone(),
        user_id: acct.user_id.clone(),
        paused: false,
    };
    let out = sub.render(&sh.graph_base());
    st.subscriptions.insert(id, sub);
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

fn own_live<'a>(
    st: &'a mut GraphState,
    caller: &str,
    id: &str,
    now: DateTime<Utc>,
) -> ApiResult<&'a mut Subscription> {
    st.subscriptions
        .get_mut(id)
        .filter(|s| s.mailbox.eq_ignore_ascii_case(caller) && s.live(now))
        .ok_or_else(sub_not_found)
}

pub async fn get_h(
    State(sh): State<Arc<Shared>>,
    Extension(Authed(caller)): Extension<Authed>,
    Path(id): Path<String>,
) -> Result<Json<Value>, MErr> {
    let mut st = lock(&sh.graph);
    Ok(Json(
        own_live(&mut st, &caller, &id, sh.now())?.render(&sh.graph_base()),
    ))
}

pub async fn list_h(
    State(sh): State<Arc<Shared>>,
    Extension(Authed(caller)): Extension<Authed>,
) -> Json<Value> {
    let st = lock(&sh.graph);
    let now = sh.now();
    let mut subs: Vec<&Subscription> = st
        .subscriptions
        .values()
        .filter(|s| s.mailbox.eq_ignore_ascii_case(&caller) && s.live(now))
        .collect();
    subs.sort_by(|a, b| a.id.cmp(&b.id));
    let base = sh.graph_base();
    Json(json!({ "value": subs.iter().map(|s| s.render(&base)).collect::<Vec<_>>() }))
}

/// Renew: PATCH `expirationDateTime` (clamped); also lifts a reauthorization pause.
pub async fn renew_h(
    State(sh): State<Arc<Shared>>,
    Extension(Authed(caller)): Extension<Authed>,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, MErr> {
    let b = body
        .map(|Json(v)| v)
        .map_err(|_| invalid("Cannot read the request body."))?;
    let expiration = clamp_expiry(&sh, &b["expirationDateTime"])?;
    let mut st = lock(&sh.graph);
    let s = own_live(&mut st, &caller, &id, sh.now())?;
    s.expiration = expiration;
    s.paused = false;
    Ok(Json(s.render(&sh.graph_base())))
}

pub async fn delete_h(
    State(sh): State<Arc<Shared>>,
    Extension(Authed(caller)): Extension<Authed>,
    Path(id): Path<String>,
) -> Result<Response, MErr> {
    let mut st = lock(&sh.graph);
    own_live(&mut st, &caller, &id, sh.now())?;
    st.subscriptions.remove(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn reauthorize_h(
    State(sh): State<Arc<Shared>>,
    Extension(Authed(caller)): Extension<Authed>,
    Path(id): Path<String>,
) -> Result<Response, MErr> {
    let mut st = lock(&sh.graph);
    own_live(&mut st, &caller, &id, sh.now())?.paused = false;
    Ok(StatusCode::NO_CONTENT.into_response())
}
