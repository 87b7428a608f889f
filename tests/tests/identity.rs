//! Identity and integrity with the real processes: the IdP's word on roles reaches both tasks
//! without a sync, the last way into the admin routes cannot be locked, and hostile input gets a
//! 4xx JSON error from both tasks — never a 5xx.

use reqwest::Method;
use serde_json::{Value, json};
use staleless_tests::{LocalSystem, SystemOptions};

/// Sends `body` as is (not necessarily JSON) to task `index`.
async fn send_raw(
    system: &LocalSystem,
    index: usize,
    method: Method,
    path: &str,
    authorization: Option<&str>,
    body: &str,
) -> anyhow::Result<(u16, Value)> {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", system.task_urls[index]))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

#[tokio::test]
async fn a_demoted_admin_is_refused_on_both_tasks_without_a_sync() -> anyhow::Result<()> {
    let system = LocalSystem::start(SystemOptions::default()).await?;
    let as_admin = system.token("dave", &["Staff", "Admin"]);
    let (status, body) = system.send(0, Method::POST, "/users/me/sync", &as_admin, None).await?;
    anyhow::ensure!(status == 200, "sync: {status} {body}");
    system
        .until_all_tasks("/admin/roles", &as_admin, |status, _| status == 200)
        .await?;

    // The IdP drops Admin; dave presents a fresh token and never syncs.
    let demoted = system.token("dave", &["Staff"]);
    for index in 0..system.task_urls.len() {
        let (status, body) = system.get(index, "/admin/roles", &demoted).await?;
        anyhow::ensure!(
            status == 403,
            "task {index}, first request with the new token: {status} {body}"
        );
    }
    // The stored roles follow, for every task: a token without a roles claim is refused too.
    let plain = system.token_without_roles("dave");
    system
        .until_all_tasks("/admin/roles", &plain, |status, _| status == 403)
        .await?;
    system
        .until_all_tasks("/users/me", &plain, |status, body| {
            status == 200 && body["roles"] == json!(["Staff"]) && body["appRoles"] == json!(["staff"])
        })
        .await?;

    // The operator's path for tokens without the claim: roles granted in the table are honoured.
    let dynamodb = system.aws.dynamodb();
    let grant = infra::operator::UserChange {
        roles: Some(vec!["Staff".into(), "Admin".into()]),
        ..infra::operator::UserChange::default()
    };
    infra::operator::put_user(&dynamodb, &system.stack.users_table, "dave", &grant).await?;
    system
        .until_all_tasks("/admin/roles", &plain, |status, _| status == 200)
        .await?;
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn the_admin_role_cannot_be_locked_and_hostile_input_is_a_4xx_on_both_tasks() -> anyhow::Result<()> {
    let system = LocalSystem::start(SystemOptions::default()).await?;
    let admin = system.admin_token();
    let bearer = format!("Bearer {admin}");
    let lockouts: [(Method, Option<Value>); 4] = [
        (Method::PATCH, Some(json!({"enabled": false}))),
        (Method::PATCH, Some(json!({"jwtRoleMappings": []}))),
        (Method::PATCH, Some(json!({"isSystemRole": false}))),
        (Method::DELETE, None),
    ];
    for index in 0..system.task_urls.len() {
        for (method, body) in &lockouts {
            let (status, answer) = system
                .send(
                    index,
                    method.clone(),
                    "/admin/roles/system_admin",
                    &admin,
                    body.as_ref(),
                )
                .await?;
            anyhow::ensure!(
                status == 409 && answer["error"] == "conflict",
                "task {index} {method} {body:?}: {status} {answer}"
            );
        }
    }
    system
        .until_all_tasks("/admin/roles", &admin, |status, _| status == 200)
        .await?;

    let too_big = format!(r#"{{"description":"{}"}}"#, "x".repeat(100_000));
    let bodies: [(Method, &str, &str, u16); 7] = [
        (Method::PATCH, "/admin/roles/staff", "{", 400),
        (Method::PATCH, "/admin/roles/staff", r#"{"priority":"high"}"#, 400),
        (Method::PATCH, "/admin/roles/staff", r#"{"grantedTools":[1,2]}"#, 400),
        (Method::PATCH, "/admin/roles/staff", r#"{"roleId":"other"}"#, 400),
        (Method::PATCH, "/admin/roles/Not-An-Id", "{}", 400),
        (Method::POST, "/admin/roles", r#"{"roleId":"x","displayName":"X"}"#, 400),
        (Method::PATCH, "/admin/roles/staff", &too_big, 413),
    ];
    let tokens = [
        ("Bearer not.a.jwt", 401),
        ("Bearer ", 401),
        ("Basic YWxpY2U6c2VjcmV0", 401),
        ("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.", 401),
    ];
    for index in 0..system.task_urls.len() {
        for (method, path, body, expected) in &bodies {
            let (status, answer) = send_raw(&system, index, method.clone(), path, Some(&bearer), body).await?;
            anyhow::ensure!(
                status == *expected && answer["error"].is_string() && answer["message"].is_string(),
                "task {index} {method} {path}: {status} {answer}"
            );
        }
        for (authorization, expected) in tokens {
            let (status, answer) =
                send_raw(&system, index, Method::GET, "/admin/roles", Some(authorization), "").await?;
            anyhow::ensure!(
                status == expected && answer["error"] == "unauthorized",
                "task {index} {authorization:?}: {status} {answer}"
            );
        }
        let (status, answer) = send_raw(&system, index, Method::GET, "/users/me", None, "").await?;
        anyhow::ensure!(status == 401, "task {index} without a token: {status} {answer}");
        let pinned = reqwest::Client::new()
            .patch(format!("{}/admin/roles/staff", system.task_urls[index]))
            .bearer_auth(&admin)
            .header("if-match", "not-a-version")
            .json(&json!({"priority": 1}))
            .send()
            .await?;
        anyhow::ensure!(pinned.status() == 400, "task {index} bad If-Match: {}", pinned.status());
    }
    system.stop().await;
    Ok(())
}
