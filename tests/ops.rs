//! What an operator sees and does: `GET /metrics` scraped over HTTP and parsed by a real
//! Prometheus text-format parser, and live reload (in-process through `Server::reload`, and
//! the real binary on `SIGHUP`).
//!
//! The parser is Python's `prometheus_client` (Debian: `python3-prometheus-client`; PyPI:
//! `prometheus-client`). The test fails, never skips, when it is missing.

mod common;

use common::*;
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

/// Parses exposition text with `prometheus_client` and prints, per family, its type, its help
/// and its samples as JSON.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    out[family.name] = {
        "type": family.type,
        "help": family.documentation,
        "samples": [[s.name, s.labels, s.value] for s in family.samples],
    }
print(json.dumps(out))
"#;

/// A parsed family: its type, help, and samples (name, labels, value).
#[derive(Debug)]
struct Family {
    kind: String,
    help: String,
    samples: Vec<(String, HashMap<String, String>, f64)>,
}

/// A Python that has `prometheus_client`: `SMOLCHAT_TEST_PYTHON` if set, else `python3` on the
/// PATH, else the system's (a PATH may put another Python first that lacks Debian's packages).
fn python() -> String {
    let candidates: Vec<String> = match std::env::var("SMOLCHAT_TEST_PYTHON") {
        Ok(python) if !python.is_empty() => vec![python],
        _ => vec!["python3".into(), "/usr/bin/python3".into()],
    };
    for python in &candidates {
        let has_parser = Command::new(python)
            .args(["-c", "import prometheus_client.parser"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if has_parser {
            return python.clone();
        }
    }
    panic!(
        "no Python with prometheus_client among {candidates:?}: install python3-prometheus-client \
         (apt) or prometheus-client (pip), or point SMOLCHAT_TEST_PYTHON at a Python that has it"
    );
}

/// `text` parsed by the real parser; fails the test if it does not parse.
fn parse_exposition(text: &str) -> HashMap<String, Family> {
    let mut child = Command::new(python())
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client cannot parse /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json.as_object()
        .unwrap()
        .iter()
        .map(|(name, f)| {
            let samples = f["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let labels = s[1]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                        .collect();
                    (
                        s[0].as_str().unwrap().to_owned(),
                        labels,
                        s[2].as_f64().unwrap(),
                    )
                })
                .collect();
            let family = Family {
                kind: f["type"].as_str().unwrap().to_owned(),
                help: f["help"].as_str().unwrap().to_owned(),
                samples,
            };
            (name.clone(), family)
        })
        .collect()
}

/// Scrapes `/metrics` and parses it.
async fn scrape(addr: SocketAddr) -> HashMap<String, Family> {
    let reply = get(addr, "/metrics", &[]).await;
    assert_eq!(reply.status, 200);
    let content_type = reply.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
        "{content_type}"
    );
    parse_exposition(&reply.text())
}

/// The value of the sample `name` whose labels include `labels`.
fn value(families: &HashMap<String, Family>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = families
        .values()
        .flat_map(|f| &f.samples)
        .find(|(sample, have, _)| {
            sample == name
                && labels
                    .iter()
                    .all(|(k, v)| have.get(*k).map(String::as_str) == Some(*v))
        });
    match found {
        Some((_, _, value)) => *value,
        None => panic!("no sample {name} {labels:?} in {families:#?}"),
    }
}

async fn healthz(addr: SocketAddr) -> serde_json::Value {
    let reply = get(addr, "/healthz", &[]).await;
    assert_eq!(reply.status, 200);
    serde_json::from_slice(&reply.body).unwrap()
}

#[test]
fn metrics_parse_as_prometheus_text_and_agree_with_healthz() {
    let server = start(smolchat::Config {
        memory_budget: Some(64 << 20),
        ..config()
    });
    smol::block_on(async {
        let mut ann = join(server.addr, "lobby", "ann").await;
        let mut bob = join(server.addr, "lobby", "bob").await;
        let _cat = join(server.addr, "other", "cat").await;
        for n in 0..3 {
            say(&mut ann, &format!("hello {n}")).await;
            assert_eq!(next_message(&mut bob).await["text"], format!("hello {n}"));
        }
        // One refusal with a reason: a WebSocket from a foreign page.
        let refused = try_ws_with(
            server.addr,
            "/ws/lobby",
            &[("Origin", "http://elsewhere.example")],
        )
        .await;
        assert!(refused.is_err());

        let families = scrape(server.addr).await;
        for (name, family) in &families {
            assert!(!family.help.is_empty(), "{name} has no HELP");
            assert!(
                ["counter", "gauge"].contains(&family.kind.as_str()),
                "{name}: {}",
                family.kind
            );
            if family.kind == "counter" {
                for (sample, _, _) in &family.samples {
                    assert!(sample.ends_with("_total"), "counter sample {sample}");
                }
            }
        }
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            value(&families, "smolchat_build_info", &[("version", version)]),
            1.0
        );
        assert_eq!(value(&families, "smolchat_connections", &[]), 3.0);
        assert_eq!(value(&families, "smolchat_rooms", &[]), 2.0);
        assert_eq!(
            value(&families, "smolchat_messages_received_total", &[]),
            3.0
        );
        // Each message reached both members of the lobby; joins and presence add more.
        assert!(value(&families, "smolchat_deliveries_total", &[]) >= 6.0);
        let origin = [("reason", "origin")];
        assert_eq!(value(&families, "smolchat_refused_total", &origin), 1.0);
        assert_eq!(
            value(
                &families,
                "smolchat_refused_total",
                &[("reason", "sign_ins")]
            ),
            0.0
        );
        for reason in ["too_slow", "backlog", "flooding"] {
            let labels = [("reason", reason)];
            assert_eq!(value(&families, "smolchat_dropped_total", &labels), 0.0);
        }
        assert_eq!(
            value(
                &families,
                "smolchat_host_actions_total",
                &[("kind", "kick")]
            ),
            0.0
        );
        assert_eq!(
            value(&families, "smolchat_senders_held_back_total", &[]),
            0.0
        );
        assert_eq!(
            value(&families, "smolchat_disk_written_bytes_total", &[]),
            0.0
        );
        assert_eq!(
            value(&families, "smolchat_memory_budget_bytes", &[]),
            (64u64 << 20) as f64
        );
        assert!(value(&families, "process_resident_memory_bytes", &[]) > 1e5);

        // The same atomics behind both routes: nothing was counted for /metrics alone.
        let health = healthz(server.addr).await;
        assert_eq!(health["messages"], 3);
        assert_eq!(health["refused"]["origin"], 1);
        let accounted = value(&families, "smolchat_memory_accounted_bytes", &[]);
        assert!(accounted >= (3 * smolchat::meter::CONNECTION_BYTES) as f64);
        // Presence and pings may have gone out since the scrape, never fewer.
        assert!(
            health["delivered"].as_f64().unwrap()
                >= value(&families, "smolchat_deliveries_total", &[])
        );
    });
}

/// Signs in as `name` with `passcode` and takes a seat in `room`; returns the cookie line and
/// the socket.
async fn seated(addr: SocketAddr, name: &str, passcode: &str, room: &str) -> (String, Ws) {
    let cookie = sign_in(addr, name, passcode).await;
    let ws = within("joining", upgrade_with(addr, room, &cookie))
        .await
        .unwrap();
    (cookie, expect_welcome(ws, name).await)
}

/// A WebSocket upgrade into `room` with the `Cookie:` line `cookie`.
async fn upgrade_with(
    addr: SocketAddr,
    room: &str,
    cookie: &str,
) -> Result<Ws, async_tungstenite::tungstenite::Error> {
    let value = cookie.trim_start_matches("Cookie: ");
    try_ws_with(addr, &format!("/ws/{room}"), &[("Cookie", value)]).await
}

/// The status of a refused upgrade.
async fn refused_status(addr: SocketAddr, room: &str, cookie: &str) -> u16 {
    use async_tungstenite::tungstenite::Error as WsError;
    match within("a refused upgrade", upgrade_with(addr, room, cookie)).await {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Ok(_) => panic!("the upgrade was accepted"),
        Err(other) => panic!("{other}"),
    }
}

#[test]
fn a_reload_changes_the_limits_at_once_and_reports_what_needs_a_restart() {
    let running = smolchat::Config {
        sign_ins_per_minute: 1,
        ..config()
    };
    let server = start(running.clone());
    smol::block_on(async {
        let mut ann = join(server.addr, "lobby", "ann").await;
        sign_in(server.addr, "bob", "").await;
        let over = post_login(server.addr, "bob", "", "/").await;
        assert_eq!(over.status, 429, "the second sign-in this minute");

        let done = server.reload(&smolchat::Config {
            sign_ins_per_minute: 3,
            max_connections: 50,
            history: 7,
            ..running.clone()
        });
        assert_eq!(done.applied, ["max-connections", "sign-ins-per-minute"]);
        assert_eq!(done.needs_restart, ["history"]);
        // The minute's count stays; the new limit allows two more in it.
        for _ in 0..2 {
            sign_in(server.addr, "bob", "").await;
        }
        assert_eq!(post_login(server.addr, "bob", "", "/").await.status, 429);
        let families = scrape(server.addr).await;
        assert_eq!(value(&families, "smolchat_max_connections", &[]), 50.0);

        // Nobody was dropped: the socket opened before the reload still chats.
        let mut cat = join(server.addr, "lobby", "cat").await;
        say(&mut ann, "still here").await;
        assert_eq!(next_message(&mut cat).await["text"], "still here");
        assert_eq!(server.stats().connections, 2);
    });
}

#[test]
fn a_changed_passcode_signs_everybody_in_again_but_keeps_their_sockets() {
    let running = smolchat::Config {
        passcode: Some("first code".into()),
        ..config()
    };
    let server = start(running.clone());
    smol::block_on(async {
        let (old_cookie, mut ann) = seated(server.addr, "ann", "first code", "lobby").await;
        let done = server.reload(&smolchat::Config {
            passcode: Some("second code".into()),
            ..running.clone()
        });
        assert_eq!(done.applied, ["passcode"]);

        // The old cookie no longer opens a socket or the page...
        assert_eq!(refused_status(server.addr, "lobby", &old_cookie).await, 401);
        let page = get(server.addr, "/", &[&old_cookie]).await;
        assert!(page.text().contains("name=\"passcode\""), "{}", page.text());
        assert_eq!(
            get(server.addr, "/session", &[&old_cookie]).await.status,
            401
        );
        // ...the old passcode does not sign in, the new one does.
        let wrong = post_login(server.addr, "ann", "first code", "/").await;
        assert_eq!(wrong.status, 401);
        let (_, mut bob) = seated(server.addr, "bob", "second code", "lobby").await;

        // Ann's socket from before the change is still in the room, both ways.
        say(&mut ann, "from before").await;
        assert_eq!(next_message(&mut bob).await["text"], "from before");
        assert_eq!(
            next_message(&mut ann).await["text"],
            "from before",
            "her own"
        );
        say(&mut bob, "from after").await;
        assert_eq!(next_message(&mut ann).await["text"], "from after");
    });
}

/// A started binary with a config file, its address and its log lines.
struct Binary {
    child: std::process::Child,
    addr: SocketAddr,
    log: std::sync::mpsc::Receiver<String>,
}

impl Binary {
    fn start(args: &[&str]) -> Binary {
        let mut child = smolchat_on_loopback()
            .args(["--data-dir", "none"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn smolchat");
        let (addr, log) = read_log(&mut child);
        Binary { child, addr, log }
    }

    /// Sends SIGHUP.
    fn hang_up(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Reads log lines until one contains `marker`; returns the lines read up to it.
    fn log_until(&self, marker: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            match self.log.recv_timeout(STEP) {
                Ok(line) => {
                    let found = line.contains(marker);
                    lines.push(line);
                    if found {
                        return lines;
                    }
                }
                Err(e) => panic!("no log line with '{marker}' ({e}); read {lines:?}"),
            }
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sighup_rereads_the_config_file_and_a_bad_file_keeps_the_running_config() {
    let dir = temp_dir("sighup");
    let file = dir.join("smolchat.conf");
    std::fs::write(&file, "sign-ins-per-minute = 1\n").unwrap();
    // The flag wins over the file, at start and at every reload.
    let server = Binary::start(&[
        "--config",
        file.to_str().unwrap(),
        "--max-connections",
        "40",
    ]);
    smol::block_on(async {
        let mut ann = join(server.addr, "lobby", "ann").await;
        sign_in(server.addr, "bob", "").await;
        assert_eq!(post_login(server.addr, "bob", "", "/").await.status, 429);

        std::fs::write(
            &file,
            "sign-ins-per-minute = 3\nmax-connections = 5\nhistory = 9\n",
        )
        .unwrap();
        server.hang_up();
        let said = server.log_until("needs a restart");
        assert!(
            said.iter()
                .any(|l| l.contains("sign-ins-per-minute changed")),
            "{said:?}"
        );
        assert!(said.last().unwrap().contains("history"), "{said:?}");
        sign_in(server.addr, "bob", "").await;
        let families = scrape(server.addr).await;
        assert_eq!(value(&families, "smolchat_max_connections", &[]), 40.0);

        std::fs::write(&file, "sign-ins-per-minute = lots\n").unwrap();
        server.hang_up();
        let said = server.log_until("reload failed");
        let why = said.last().unwrap();
        assert!(
            why.contains("keeping the running config")
                && why.contains("smolchat.conf:1")
                && why.contains("'lots' is not a whole number"),
            "{why}"
        );
        // Still three this minute, as the last good file said.
        sign_in(server.addr, "bob", "").await;
        assert_eq!(post_login(server.addr, "bob", "", "/").await.status, 429);

        // Ann's socket lived through both reloads.
        let mut cat = join(server.addr, "lobby", "cat").await;
        say(&mut ann, "still here").await;
        assert_eq!(next_message(&mut cat).await["text"], "still here");
    });
}

#[test]
fn sighup_without_a_config_file_has_nothing_to_reload() {
    let server = Binary::start(&[]);
    server.hang_up();
    server.log_until("no --config file, nothing to reload");
    let health = smol::block_on(healthz(server.addr));
    assert_eq!(health["connections"], 0);
}
