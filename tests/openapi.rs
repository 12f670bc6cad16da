//! The OpenAPI document against the router and against itself: every
//! route the HTTP modules register is documented with its methods, every
//! documented operation is served, every documented example validates
//! against its schema (JSON Schema 2020-12, `jsonschema`), the request
//! examples are accepted by the real server, and `/openapi.json` and
//! `calsync openapi` serve the same document.

use calsync::actors::{ActorSettings, Connections};
use calsync::http::{self, AppState};
use calsync::testkit::TestDb;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

fn document() -> Value {
    serde_json::from_str(&calsync::http::openapi::document_json()).unwrap()
}

/// `(path, method)` of every `.route("…", get(…).post(…))` in the source
/// of `src/http/` (every file, so a new module is covered too).
fn routes_in_source() -> BTreeSet<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        let mut rest = source.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            let open = rest.find('"').unwrap();
            let close = open + 1 + rest[open + 1..].find('"').unwrap();
            let route = rest[open + 1..close].to_string();
            // The handler expression: up to the `)` closing `.route(`.
            let mut depth = 1;
            let mut end = close + 1;
            for (i, c) in rest[close + 1..].char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end = close + 1 + i;
                    break;
                }
            }
            let handlers = &rest[close + 1..end];
            let mut methods = 0;
            for method in ["get", "post", "put", "delete", "patch"] {
                let called = handlers
                    .match_indices(&format!("{method}("))
                    .any(|(i, _)| i == 0 || !handlers.as_bytes()[i - 1].is_ascii_alphanumeric());
                if called {
                    found.insert((route.clone(), method.to_string()));
                    methods += 1;
                }
            }
            assert!(methods > 0, "no method found for route {route} in {path:?}");
        }
    }
    found
}

#[test]
fn every_route_of_the_router_is_documented() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let routes = routes_in_source();
    // The parser sees the routes it must (a guard against it finding none).
    for expected in [
        ("/v1/bookings", "post"),
        ("/admin/connections", "get"),
        ("/admin/connections", "post"),
        ("/admin/allowlist/providers/{provider}", "delete"),
        ("/webhooks/graph/lifecycle", "post"),
        ("/openapi.json", "get"),
    ] {
        assert!(
            routes.contains(&(expected.0.to_string(), expected.1.to_string())),
            "{expected:?} not found in the source: {routes:?}"
        );
    }
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((path.clone(), method.clone()));
        }
    }
    let missing: Vec<_> = routes.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the document: {missing:?}"
    );
    let extra: Vec<_> = documented.difference(&routes).collect();
    assert!(extra.is_empty(), "documented but not routed: {extra:?}");
    // Every authenticated operation documents its error answers.
    for (path, method) in &documented {
        let op = &doc["paths"][path][method];
        if path.starts_with("/v1/") || path.starts_with("/admin/") {
            for status in ["400", "401", "403", "503"] {
                assert_eq!(
                    op["responses"][status]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} lacks its {status}"
                );
            }
        }
    }
}

/// A validator for `schema` with the document's components in reach of
/// its `$ref`s.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = schema.clone();
    if let Value::Object(map) = &mut root {
        map.insert("components".into(), doc["components"].clone());
        map.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
    }
    jsonschema::validator_for(&root).unwrap()
}

/// Every example in the document with the schema it illustrates.
fn examples(doc: &Value) -> Vec<(String, Value, Value)> {
    let mut out = Vec::new();
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        if let Some(example) = schema.get("example") {
            out.push((
                format!("schema {name}"),
                json!({"$ref": format!("#/components/schemas/{name}")}),
                example.clone(),
            ));
        }
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, response) in op["responses"].as_object().unwrap() {
                let Some(content) = response["content"].as_object() else {
                    continue;
                };
                for media in content.values() {
                    if let Some(example) = media.get("example") {
                        out.push((
                            format!("{method} {path} {status}"),
                            media["schema"].clone(),
                            example.clone(),
                        ));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn every_documented_example_validates_against_its_schema() {
    let doc = document();
    let all = examples(&doc);
    assert!(all.len() >= 10, "too few examples: {}", all.len());
    for (what, schema, example) in &all {
        let v = validator(&doc, schema);
        let errors: Vec<String> = v.iter_errors(example).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "{what}: {example} does not validate: {errors:?}"
        );
    }
    // The validator does check: broken examples are refused.
    let booking = json!({"$ref": "#/components/schemas/BookingBody"});
    let mut bad = doc["components"]["schemas"]["BookingBody"]["example"].clone();
    bad["surprise"] = json!(1);
    assert!(!validator(&doc, &booking).is_valid(&bad));
    let mut bad = doc["components"]["schemas"]["BookingBody"]["example"].clone();
    bad["status"] = json!("maybe");
    assert!(!validator(&doc, &booking).is_valid(&bad));
    let mut bad = doc["components"]["schemas"]["CreateConnection"]["example"].clone();
    bad.as_object_mut().unwrap().remove("account");
    assert!(!validator(
        &doc,
        &json!({"$ref": "#/components/schemas/CreateConnection"})
    )
    .is_valid(&bad));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_serves_every_documented_operation_and_takes_the_examples() {
    let db = TestDb::new().await;
    let connections = Connections::start(db.store(), ActorSettings::default())
        .await
        .unwrap();
    let state = AppState {
        connect: None,
        channels: Default::default(),
        store: db.store(),
        connections,
        admin_token: Some("t".into()),
        drills_enabled: true,
        settings: calsync::settings::SettingsHandle::start(db.store(), Duration::from_millis(250))
            .await
            .unwrap(),
        webhooks: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(http::serve(listener, state, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();

    // /openapi.json is the document, open to everyone.
    let served: Value = client
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let doc = document();
    assert_eq!(served, doc);

    // Every documented operation is routed: no 405, and no router 404
    // (a handler's 404 has a JSON error body).
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{id}", "00000000-0000-4000-8000-000000000001")
                .replace("{provider}", "google")
                .replace("{flag}", "sync_enabled")
                .replace("{action}", "pause");
            let response = client
                .request(
                    method.to_uppercase().parse().unwrap(),
                    format!("{base}{concrete}"),
                )
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            assert_ne!(status, 405, "{method} {path}");
            assert!(
                status != 404 || body.contains("\"error\""),
                "{method} {path}: not routed"
            );
        }
    }

    // The request examples are what the server takes.
    let example = |name: &str| doc["components"]["schemas"][name]["example"].clone();
    let call = |method: &str, path: &str, body: Value| {
        client
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .bearer_auth("t")
            .json(&body)
            .send()
    };
    assert_eq!(
        call("POST", "/admin/connections", example("CreateConnection"))
            .await
            .unwrap()
            .status(),
        201
    );
    assert_eq!(
        call("PUT", "/admin/flags/jobs_enabled", example("SetToggle"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        call(
            "POST",
            "/admin/allowlist/providers/google",
            example("Reason")
        )
        .await
        .unwrap()
        .status(),
        200
    );
    assert_eq!(
        call("POST", "/admin/drill/kill", example("KillRequest"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        call("POST", "/v1/bookings", example("BookingBody"))
            .await
            .unwrap()
            .status(),
        200
    );
    for (path, name) in [
        (
            "/v1/providers/stylist-7/availability",
            "AvailabilityRequest",
        ),
        ("/v1/availability", "GroupAvailabilityRequest"),
    ] {
        let response = call("POST", path, example(name)).await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        // Parsed: any refusal is about the data (no such provider), not the shape.
        assert!(
            status == 200 || body["message"].as_str().unwrap_or("").contains("provider"),
            "{name}: {status} {body}"
        );
    }
}
