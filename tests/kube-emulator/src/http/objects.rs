//! Resource paths: resolves `{plural}[/{name}[/{sub}]]` (optionally under `namespaces/{ns}`) to a
//! served type and maps HTTP verbs and query parameters onto [`crate::registry`] calls.

use std::sync::Arc;

use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::{error, json, not_found, watch, App, Request};
use crate::error::ApiError;
use crate::registry::{DeleteOptions, PatchKind, Sub, WriteOptions};
use crate::resource::{Catalog, ResourceDef};
use crate::selector::Selector;
use crate::table::{self, IncludeObject};

/// Where a request points inside a group-version.
struct Target<'a> {
    namespace: Option<&'a str>,
    plural: &'a str,
    name: Option<&'a str>,
    sub: Option<&'a str>,
}

fn parse_target<'a>(rest: &[&'a str]) -> Option<Target<'a>> {
    let namespaced = rest.len() >= 3
        && rest[0] == "namespaces"
        && !(rest.len() == 3 && matches!(rest[2], "status" | "finalize"));
    let (namespace, tail) = if namespaced {
        (Some(rest[1]), &rest[2..])
    } else {
        (None, rest)
    };
    if tail.is_empty() || tail.len() > 3 {
        return None;
    }
    Some(Target {
        namespace,
        plural: tail[0],
        name: tail.get(1).copied(),
        sub: tail.get(2).copied(),
    })
}

fn write_options(req: &Request) -> WriteOptions {
    let manager = req
        .param("fieldManager")
        .map(String::from)
        .unwrap_or_else(|| {
            // kube-apiserver's default manager: the User-Agent up to the first '/'.
            let agent = req.header(header::USER_AGENT);
            let prefix = agent.split('/').next().unwrap_or_default();
            if prefix.is_empty() {
                "unknown".to_string()
            } else {
                prefix.to_string()
            }
        });
    WriteOptions {
        dry_run: req.param("dryRun") == Some("All"),
        manager,
        force: req.flag("force"),
        strict: req.param("fieldValidation") == Some("Strict"),
    }
}

fn selectors(req: &Request) -> Result<(Selector, Selector), ApiError> {
    let parse = |name: &str| {
        Selector::parse(req.param(name).unwrap_or_default())
            .map_err(|e| ApiError::BadRequest(e.to_string()))
    };
    Ok((parse("labelSelector")?, parse("fieldSelector")?))
}

fn wants_table(req: &Request) -> bool {
    req.header(header::ACCEPT)
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

fn body_json(req: &Request) -> Result<Value, ApiError> {
    if req.body.is_empty() {
        return Ok(json!({}));
    }
    if req
        .header(header::CONTENT_TYPE)
        .starts_with("application/vnd.kubernetes.protobuf")
    {
        return crate::protobuf::decode(&req.body)
            .map_err(|e| ApiError::UnsupportedMediaType(e.to_string()));
    }
    crate::registry::decode_body(&req.body)
}

fn respond(result: Result<Value, ApiError>, code: StatusCode) -> Response {
    match result {
        Ok(v) => json(code, &v),
        Err(e) => error(&e),
    }
}

/// Like [`respond`], for a write: a success carries the API server's warnings about the
/// written object as `Warning` headers.
fn respond_write(def: &ResourceDef, result: Result<Value, ApiError>, code: StatusCode) -> Response {
    let warnings = result
        .as_ref()
        .map(|object| crate::warnings::on_write(&def.group, object))
        .unwrap_or_default();
    let mut response = respond(result, code);
    for text in warnings {
        if let Ok(value) = header::HeaderValue::from_str(&crate::warnings::header_value(&text)) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

/// Handles one resource request.
pub async fn handle(
    app: &Arc<App>,
    catalog: &Catalog,
    group: &str,
    version: &str,
    rest: &[&str],
    req: Request,
) -> Response {
    let Some(target) = parse_target(rest) else {
        return not_found();
    };
    let Some(def) = catalog.find(group, version, target.plural).cloned() else {
        return not_found();
    };
    if target.namespace.is_some() && !def.namespaced {
        return not_found();
    }
    let ns = target.namespace;
    let sub = match target.sub {
        None => Sub::Main,
        Some("status") if def.status => Sub::Status,
        Some("scale") if def.scale.is_some() => Sub::Scale,
        Some(_) => return not_found(),
    };
    match (target.name, req.method.clone()) {
        (None, Method::GET) if req.flag("watch") => match selectors(&req) {
            Ok((labels, fields)) => {
                watch::watch(app.clone(), def, ns.map(String::from), labels, fields, &req)
            }
            Err(e) => error(&e),
        },
        (None, Method::GET) => list(app, &def, ns, &req),
        (None, Method::POST) if def.namespaced && ns.is_none() => {
            error(&ApiError::MethodNotAllowed(format!(
                "the server does not allow this method on {}",
                def.plural
            )))
        }
        (None, Method::POST) => {
            let opts = write_options(&req);
            let result =
                body_json(&req).and_then(|body| app.mutate(|s| s.create(&def, ns, body, &opts)));
            respond_write(&def, result, StatusCode::CREATED)
        }
        (None, Method::DELETE) => delete_collection(app, &def, ns, &req),
        (Some(_), _) if def.namespaced && ns.is_none() => not_found(),
        (Some(name), Method::GET) => get(app, &def, ns, name, sub, &req),
        (Some(name), Method::PUT) => {
            let opts = write_options(&req);
            let result = body_json(&req)
                .and_then(|body| app.mutate(|s| s.replace(&def, ns, name, body, sub, &opts)));
            respond_write(&def, result, StatusCode::OK)
        }
        (Some(name), Method::PATCH) => {
            let Some(kind) = PatchKind::from_content_type(req.header(header::CONTENT_TYPE)) else {
                return error(&ApiError::UnsupportedMediaType(format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml; got {:?}",
                    req.header(header::CONTENT_TYPE)
                )));
            };
            let opts = write_options(&req);
            let existed = app.lock().get(&def, ns, name).is_ok();
            let result = app.mutate(|s| s.patch(&def, ns, name, kind, &req.body, sub, &opts));
            let code = if existed || kind != PatchKind::Apply {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            respond_write(&def, result, code)
        }
        (Some(name), Method::DELETE) if sub == Sub::Main => {
            let body = body_json(&req).unwrap_or_else(|_| json!({}));
            let opts = DeleteOptions::parse(
                &body,
                req.param("propagationPolicy"),
                req.param("dryRun") == Some("All"),
            );
            respond(
                app.mutate(|s| s.delete(&def, ns, name, &opts)),
                StatusCode::OK,
            )
        }
        (_, method) => error(&ApiError::MethodNotAllowed(format!(
            "{method} is not supported on this path"
        ))),
    }
}

fn get(
    app: &Arc<App>,
    def: &ResourceDef,
    ns: Option<&str>,
    name: &str,
    sub: Sub,
    req: &Request,
) -> Response {
    let state = app.lock();
    let result = match sub {
        Sub::Scale => state.get_scale(def, ns, name),
        _ => state.get(def, ns, name),
    };
    match result {
        Ok(object) if wants_table(req) && sub == Sub::Main => {
            let include = IncludeObject::parse(req.param("includeObject"));
            let rv = state.store.revision().to_string();
            json(
                StatusCode::OK,
                &table::render(def, &[object], &rv, include, chrono::Utc::now()),
            )
        }
        other => respond(other, StatusCode::OK),
    }
}

fn list(app: &Arc<App>, def: &ResourceDef, ns: Option<&str>, req: &Request) -> Response {
    let (labels, fields) = match selectors(req) {
        Ok(s) => s,
        Err(e) => return error(&e),
    };
    let list = app.lock().list(def, ns, &labels, &fields);
    if wants_table(req) {
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let rv = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default();
        let include = IncludeObject::parse(req.param("includeObject"));
        return json(
            StatusCode::OK,
            &table::render(def, &items, rv, include, chrono::Utc::now()),
        );
    }
    json(StatusCode::OK, &list)
}

fn delete_collection(
    app: &Arc<App>,
    def: &ResourceDef,
    ns: Option<&str>,
    req: &Request,
) -> Response {
    let (labels, fields) = match selectors(req) {
        Ok(s) => s,
        Err(e) => return error(&e),
    };
    let body = body_json(req).unwrap_or_else(|_| json!({}));
    let opts = DeleteOptions::parse(
        &body,
        req.param("propagationPolicy"),
        req.param("dryRun") == Some("All"),
    );
    let result = app.mutate(|s| {
        let list = s.list(def, ns, &labels, &fields);
        let mut deleted = Vec::new();
        for item in list["items"].as_array().into_iter().flatten() {
            let name = item.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
            let item_ns = item.pointer("/metadata/namespace").and_then(Value::as_str);
            if s.delete(def, item_ns, name, &opts).is_ok() {
                deleted.push(item.clone());
            }
        }
        json!({"apiVersion": def.api_version(), "kind": def.list_kind(), "metadata": {}, "items": deleted})
    });
    json(StatusCode::OK, &result)
}
