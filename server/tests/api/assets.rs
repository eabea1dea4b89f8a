//! Issue 15, on both databases: the front end's files are fingerprinted, served precompressed
//! and cached for good; pages and API answers are compressed, streams are not; the server's
//! log lines carry no colour codes when stderr is not a terminal.
use std::{process::Stdio, time::Duration};

use reqwest::header;

use crate::helpers::{TestApp, TestDb, spawn_app_with, test_settings};

const NAME: &str = "switchyard-0123456789abcdef";

/// A site directory as `scripts/build-frontend.sh` leaves it (with stand-in file contents).
fn site() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    for (file, body) in [
        (
            format!("{NAME}.js"),
            "export default function init() {}".repeat(40),
        ),
        (format!("{NAME}_bg.wasm"), "\0asm".repeat(100)),
        (format!("{NAME}.css"), "body { margin: 0 }\n".repeat(40)),
    ] {
        std::fs::write(pkg.join(&file), &body).unwrap();
        std::fs::write(pkg.join(format!("{file}.br")), format!("br:{file}")).unwrap();
        std::fs::write(pkg.join(format!("{file}.gz")), format!("gz:{file}")).unwrap();
    }
    std::fs::write(
        pkg.join("assets.json"),
        format!("{{\"outputName\": \"{NAME}\"}}"),
    )
    .unwrap();
    dir
}

async fn fetch(app: &TestApp, path: &str, encoding: Option<&str>) -> reqwest::Response {
    let mut req = app.client.get(app.url(path));
    if let Some(e) = encoding {
        req = req.header(header::ACCEPT_ENCODING, e);
    }
    req.send().await.expect("request")
}

fn header_of(res: &reqwest::Response, name: header::HeaderName) -> String {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundle_is_fingerprinted_precompressed_and_cached_for_good() {
    let site = site();
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    settings.site_root = site.path().to_path_buf();
    let app = spawn_app_with(db, settings).await;

    // Pages link the bundle by its fingerprinted name.
    let html = fetch(&app, "/jobs", None).await.text().await.unwrap();
    for link in [
        format!("/pkg/{NAME}.js"),
        format!("/pkg/{NAME}_bg.wasm"),
        format!("/pkg/{NAME}.css"),
    ] {
        assert!(html.contains(&link), "{link} not in the page");
    }

    let wasm = format!("/pkg/{NAME}_bg.wasm");
    for (accept, encoding, body) in [
        (
            Some("gzip, deflate, br"),
            "br",
            format!("br:{NAME}_bg.wasm"),
        ),
        (Some("gzip"), "gzip", format!("gz:{NAME}_bg.wasm")),
        (None, "", "\0asm".repeat(100)),
    ] {
        let res = fetch(&app, &wasm, accept).await;
        assert_eq!(res.status(), 200, "{accept:?}");
        assert_eq!(header_of(&res, header::CONTENT_ENCODING), encoding);
        assert_eq!(
            header_of(&res, header::CACHE_CONTROL),
            "public, max-age=31536000, immutable"
        );
        assert!(
            header_of(&res, header::CONTENT_TYPE).starts_with("application/wasm"),
            "{:?}",
            res.headers()
        );
        assert_eq!(res.text().await.unwrap(), body);
    }
    let css = fetch(&app, &format!("/pkg/{NAME}.css"), Some("br")).await;
    assert_eq!(header_of(&css, header::CONTENT_ENCODING), "br");
    assert!(header_of(&css, header::CONTENT_TYPE).starts_with("text/css"));
    // What is not fingerprinted is revalidated.
    let manifest = fetch(&app, "/pkg/assets.json", None).await;
    assert_eq!(manifest.status(), 200);
    assert_eq!(header_of(&manifest, header::CACHE_CONTROL), "no-cache");
    let missing = fetch(&app, "/pkg/switchyard-ffffffffffffffff.js", None).await;
    assert_eq!(missing.status(), 404);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_answers_are_compressed_and_streams_are_not() {
    let db = TestDb::new().await;
    let settings = test_settings(&db);
    let app = spawn_app_with(db, settings).await;
    app.job("echo", "builtin:noop", serde_json::json!({})).await;
    for (path, accept) in [("/jobs", "br"), ("/api/jobs", "gzip"), ("/", "gzip, br")] {
        let res = fetch(&app, path, Some(accept)).await;
        assert_eq!(res.status(), 200, "{path}");
        let encoding = header_of(&res, header::CONTENT_ENCODING);
        assert!(
            !encoding.is_empty() && accept.contains(&encoding),
            "{path}: {encoding:?}"
        );
    }
    // Streams reach the client as they come: never compressed.
    let events = tokio::time::timeout(
        Duration::from_secs(10),
        app.client
            .get(app.url("/api/events"))
            .header(header::ACCEPT_ENCODING, "gzip, br")
            .header(header::ACCEPT, "text/event-stream")
            .send(),
    )
    .await
    .expect("the stream answers")
    .unwrap();
    assert_eq!(events.status(), 200);
    assert_eq!(header_of(&events, header::CONTENT_ENCODING), "");
    drop(events);
    app.job(
        "nap",
        "builtin:sleep",
        serde_json::json!({"defaultParameters": {"durationMs": 300}}),
    )
    .await;
    let run = app.run("nap", serde_json::json!({})).await;
    let id = run["id"].as_str().unwrap();
    let follow = fetch(
        &app,
        &format!("/api/job-runs/{id}/logs?follow=true"),
        Some("gzip, br"),
    )
    .await;
    assert_eq!(follow.status(), 200);
    assert_eq!(header_of(&follow, header::CONTENT_ENCODING), "");
    assert!(follow.text().await.unwrap().contains("succeeded"));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_on_a_pipe_carry_no_colour_codes() {
    // The worker migrates the fresh database itself.
    let db = TestDb::new().await;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.env_remove("DATABASE_URL")
        .env_remove("NO_COLOR")
        .arg("--data-dir")
        .arg(db.data_dir());
    if let Some(url) = &db.url {
        cmd.arg("--database-url").arg(url);
    }
    let mut child = cmd
        .args(["worker", "--workers", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("worker starts");
    let mut stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&seen).contains("switchyard worker started") {
        use tokio::io::AsyncReadExt as _;
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, stderr.read(&mut buf))
            .await
            .expect("the worker logs its start on stderr")
            .unwrap();
        assert!(n > 0, "stderr closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let _ = child.start_kill();
    let out = child.wait_with_output().await.unwrap();
    assert!(
        !seen.contains(&0x1b),
        "escape codes on a pipe: {:?}",
        String::from_utf8_lossy(&seen)
    );
    assert!(
        out.stdout.is_empty(),
        "logs belong on stderr: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}
