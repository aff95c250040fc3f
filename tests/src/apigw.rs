//! API Gateway HTTP API requests as the issuer receives them: payload format 2.0 with the
//! IAM authorizer's context. Built from the sample event in events/issue-credentials/ (the
//! shape API Gateway sends) with the method, path, body and caller replaced.

use serde_json::{json, Value};

/// A request `caller` (an IAM ARN, as the IAM authorizer verified it) sends. A `?query` in
/// `path` goes to `rawQueryString`, as API Gateway puts it.
pub fn request(method: &str, path: &str, body: Option<&str>, caller: &str) -> Value {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let sample = crate::project_root().join("events/issue-credentials/issue.json");
    let text = std::fs::read_to_string(&sample).expect("read the sample API event");
    let mut event: Value = serde_json::from_str(&text).expect("sample API event is JSON");
    event["routeKey"] = json!("$default");
    event["rawPath"] = json!(path);
    event["rawQueryString"] = json!(query);
    event["requestContext"]["routeKey"] = json!("$default");
    event["requestContext"]["http"]["method"] = json!(method);
    event["requestContext"]["http"]["path"] = json!(path);
    event["requestContext"]["requestId"] = json!(crate::random_token());
    event["requestContext"]["authorizer"]["iam"]["userArn"] = json!(caller);
    if let Some(map) = event.as_object_mut() {
        map.remove("pathParameters");
        match body {
            Some(b) => {
                map.insert("body".into(), json!(b));
            }
            None => {
                map.remove("body");
            }
        }
    }
    event
}

/// The status and JSON body (Null when there is none) of a 2.0 integration's response.
pub fn response(event: &Value) -> (u16, Value) {
    let status = event["statusCode"].as_u64().expect("statusCode") as u16;
    let body = match event["body"].as_str() {
        Some(text) => serde_json::from_str(text).expect("the body is JSON"),
        None => Value::Null,
    };
    (status, body)
}
