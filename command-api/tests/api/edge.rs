//! The HTTP edge under abuse: per-token and per-address rate limits (429 + `Retry-After`),
//! failed authentications held back per address, shedding past the in-flight cap (503 +
//! `Retry-After`), and the header-read, body-read and whole-request timeouts. Every refusal has
//! the API error body; operations routes stay reachable.

use std::time::{Duration, Instant};

use command_api::http::edge::EdgeConfig;
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

fn retry_after(r: &Resp) -> u64 {
    r.header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in whole seconds")
}

#[tokio::test]
async fn rate_limits_answer_429_per_token_and_per_address() {
    let app = TestApp::spawn_with_edge(EdgeConfig {
        rate_per_token: 1,
        rate_burst_per_token: 3,
        rate_per_address: 1,
        rate_burst_per_address: 2,
        ..EdgeConfig::default()
    })
    .await;
    let currencies = |token: Option<&'static str>| {
        app.call(Method::GET, "/api/admin/v1/currencies", token, None, &[])
    };
    for _ in 0..3 {
        currencies(Some(ADMIN_TOKEN)).await.expect(200, None);
    }
    let limited = currencies(Some(ADMIN_TOKEN)).await;
    limited.expect(429, Some("rate_limited"));
    assert!(retry_after(&limited) >= 1);
    // Health is not rate limited.
    assert_eq!(
        events::testing::http_get(&app.addr, "/readyz")
            .await
            .unwrap()
            .0,
        200
    );
    // Without a token, the address is the key.
    for _ in 0..2 {
        currencies(None).await.expect(401, Some("unauthenticated"));
    }
    currencies(None).await.expect(429, Some("rate_limited"));
    // The token's allowance comes back after Retry-After.
    tokio::time::sleep(Duration::from_secs(retry_after(&limited))).await;
    currencies(Some(ADMIN_TOKEN)).await.expect(200, None);
    app.shutdown().await;
}

#[tokio::test]
async fn guessing_tokens_is_held_back_per_address() {
    let app = TestApp::spawn_with_edge(EdgeConfig {
        rate_per_address: 1,
        rate_burst_per_address: 3,
        ..EdgeConfig::default()
    })
    .await;
    let mut statuses = Vec::new();
    for n in 0..6 {
        let token = format!("st_{}_{n:064}", uuid::Uuid::new_v4().simple());
        let r = app
            .call(
                Method::GET,
                "/api/admin/v1/currencies",
                Some(&token),
                None,
                &[],
            )
            .await;
        statuses.push(r.status.as_u16());
    }
    assert_eq!(&statuses[..3], &[401, 401, 401], "{statuses:?}");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    // While held back, even a good token from that address waits.
    let held = app
        .call(
            Method::GET,
            "/api/admin/v1/currencies",
            Some(ADMIN_TOKEN),
            None,
            &[],
        )
        .await;
    held.expect(429, Some("rate_limited"));
    tokio::time::sleep(Duration::from_secs(retry_after(&held))).await;
    app.admin(Method::GET, "/currencies", json!({}))
        .await
        .expect(200, None);
    app.shutdown().await;
}

/// A raw request whose headers promise `length` body bytes, of which `sent` are sent.
async fn partial_post(addr: &str, path: &str, length: usize, sent: usize) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![b' '; sent]).await.unwrap();
    stream
}

/// The status code of the response on `stream`, or 0 if the connection closed without one.
async fn status_of(stream: &mut TcpStream, wait: Duration) -> (u16, String) {
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => response.extend_from_slice(&buf[..n]),
            _ => break,
        }
        let text = String::from_utf8_lossy(&response);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            if body.contains('}') || head.contains("content-length: 0") {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

#[tokio::test]
async fn past_the_in_flight_cap_requests_are_shed_with_503() {
    let app = TestApp::spawn_with_edge(EdgeConfig {
        in_flight_max: 1,
        ..EdgeConfig::default()
    })
    .await;
    // One request holds the only slot while its body trickles in.
    let mut holder = partial_post(&app.addr, "/api/admin/v1/enterprises", 64, 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let shed = app.admin(Method::GET, "/currencies", json!({})).await;
    shed.expect(503, Some("overloaded"));
    assert!(retry_after(&shed) >= 1);
    // Health stays reachable while the API sheds.
    assert_eq!(
        events::testing::http_get(&app.addr, "/livez")
            .await
            .unwrap()
            .0,
        200
    );
    let rest = br#"{"name":"Held","oesLicense":true}"#;
    let mut body = rest.to_vec();
    body.resize(63, b' ');
    holder.write_all(&body).await.unwrap();
    let (code, _) = status_of(&mut holder, Duration::from_secs(5)).await;
    assert_eq!(code, 200);
    app.admin(Method::GET, "/currencies", json!({}))
        .await
        .expect(200, None);
    app.shutdown().await;
}

#[tokio::test]
async fn slow_bodies_get_408_and_slow_headers_lose_their_connection() {
    let app = TestApp::spawn_with_edge(EdgeConfig {
        body_read_timeout_ms: 300,
        header_read_timeout_ms: 500,
        ..EdgeConfig::default()
    })
    .await;
    let mut slow_body = partial_post(&app.addr, "/api/admin/v1/enterprises", 100, 10).await;
    let started = Instant::now();
    let (code, text) = status_of(&mut slow_body, Duration::from_secs(5)).await;
    assert_eq!(code, 408, "{text}");
    assert!(text.contains("\"code\":\"timeout\""), "{text}");
    assert!(started.elapsed() < Duration::from_secs(3));

    // Headers one byte at a time, 5 bytes a second: the server hangs up after its timeout.
    let mut slow_headers = TcpStream::connect(&app.addr).await.unwrap();
    let started = Instant::now();
    let mut closed = false;
    for byte in
        b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n"
    {
        if slow_headers.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(200), slow_headers.read(&mut buf)).await
        {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "the connection was closed before the headers were complete"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_request_over_its_time_gets_408() {
    let mut app = TestApp::spawn_with_edge(EdgeConfig {
        request_timeout_ms: 300,
        ..EdgeConfig::default()
    })
    .await;
    let w = world(&app, "baseUnits").await;
    // With the projector stopped, a read that waits for a fresh write outlasts the request.
    app.stop_projector().await;
    let deposit = app
        .admin(
            Method::POST,
            &format!("/enterprises/{}/deposits", w.client.id),
            json!({"currency": "BTC", "quantity": "1", "externalId": "late"}),
        )
        .await;
    let position = deposit.header("x-event-position").unwrap();
    let started = Instant::now();
    app.get_after(
        &format!("/v1/enterprises/{}/clients/balances", w.client.id),
        &w.client.token,
        &position,
    )
    .await
    .expect(408, Some("timeout"));
    assert!(started.elapsed() < Duration::from_millis(1_500));
    app.start_projector().await;
    app.shutdown().await;
}
