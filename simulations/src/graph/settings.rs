//! `GET /me/mailboxSettings` (and `/users/{upn}/mailboxSettings`, plus the
//! `/timeZone` sub-resource): the mailbox's preferred zone, which clients
//! need for all-day events whose own zone is a legacy custom one.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

use crate::gate::Authed;
use crate::graph::errors::MErr;
use crate::graph::events::account;
use crate::graph::mailbox;
use crate::state::{lock, Shared};

fn context(p: &HashMap<String, String>, upn: &str, tail: &str) -> String {
    let who = match p.get("upn") {
        Some(_) => format!("users('{upn}')"),
        None => "me".into(),
    };
    format!("https://graph.microsoft.com/v1.0/$metadata#{who}/mailboxSettings{tail}")
}

/// The settings object, in the documented shape; only `timeZone` (and the
/// working hours' zone) vary per mailbox.
pub async fn mailbox_settings_h(
    State(sh): State<Arc<Shared>>,
    Extension(a): Extension<Authed>,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Json<Value>, MErr> {
    let upn = mailbox(&a, &p)?;
    let st = lock(&sh.graph);
    let zone = account(&st, &upn)?.time_zone.clone();
    Ok(Json(json!({
        "@odata.context": context(&p, &upn, ""),
        "archiveFolder": "AAMkARCHIVE",
        "timeZone": zone,
        "automaticRepliesSetting": {
            "status": "disabled", "externalAudience": "all",
            "internalReplyMessage": "", "externalReplyMessage": "",
        },
        "dateFormat": "M/d/yyyy",
        "timeFormat": "h:mm tt",
        "delegateMeetingMessageDeliveryOptions": "sendToDelegateOutOnly",
        "language": { "locale": "en-US", "displayName": "English (United States)" },
        "workingHours": {
            "daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
            "startTime": "08:00:00.0000000", "endTime": "17:00:00.0000000",
            "timeZone": { "name": zone },
        },
        "userPurpose": { "value": "user" },
    })))
}

/// `GET .../mailboxSettings/timeZone` → `{"value": zone}`.
pub async fn time_zone_h(
    State(sh): State<Arc<Shared>>,
    Extension(a): Extension<Authed>,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Json<Value>, MErr> {
    let upn = mailbox(&a, &p)?;
    let st = lock(&sh.graph);
    let zone = account(&st, &upn)?.time_zone.clone();
    Ok(Json(json!({
        "@odata.context": context(&p, &upn, "/timeZone"),
        "value": zone,
    })))
}
