//! Helpers for tests that talk to a real server over loopback: start one in-process on an
//! ephemeral port, make raw HTTP requests, and drive WebSocket clients. Every wait is bounded.

#![allow(dead_code)] // Each test file uses its own subset.

#[cfg(feature = "redis")]
pub mod redis;

use async_tungstenite::tungstenite::{self, Message};
use async_tungstenite::WebSocketStream;
use smol::future::or;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use smol::stream::StreamExt;
use smol::Timer;
use smolchat::{Config, Server};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

/// The longest any single step of a test may take before it counts as hung.
pub const STEP: Duration = Duration::from_secs(20);

/// A WebSocket client over a plain TCP stream.
pub type Ws = WebSocketStream<TcpStream>;

/// A command that starts the `smolchat` binary, through `SMOLCHAT_TEST_RUNNER` if set (an
/// emulator such as `qemu-aarch64-static`: under cross tests the kernel cannot run the binary
/// by itself).
pub fn smolchat() -> std::process::Command {
    let binary = env!("CARGO_BIN_EXE_smolchat");
    match std::env::var("SMOLCHAT_TEST_RUNNER") {
        Ok(runner) if !runner.is_empty() => {
            let mut command = std::process::Command::new(runner);
            command.arg(binary);
            command
        }
        _ => std::process::Command::new(binary),
    }
}

/// [`smolchat`] on an ephemeral loopback port with two threads, the way the tests run it.
pub fn smolchat_on_loopback() -> std::process::Command {
    let mut command = smolchat();
    command.args(["--addr", "127.0.0.1:0", "--threads", "2"]);
    command
}

/// Starts [`smolchat_on_loopback`] with `args` and `--data-dir dir`, its stderr read by
/// [`read_log`]: the process, its address and its log lines.
pub fn spawn_on_disk(
    args: &[&str],
    dir: &std::path::Path,
) -> (
    std::process::Child,
    SocketAddr,
    std::sync::mpsc::Receiver<String>,
) {
    use std::process::Stdio;
    let mut child = smolchat_on_loopback()
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start smolchat");
    let (addr, log) = read_log(&mut child);
    (child, addr, log)
}

/// Reads a started binary's stderr: returns the address from its "listening" line, and a
/// channel with every line after it.
pub fn read_log(
    child: &mut std::process::Child,
) -> (SocketAddr, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader};
    let stderr = child.stderr.take().expect("stderr must be piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let line = rx
            .recv_timeout(STEP)
            .expect("no 'listening' line from smolchat");
        if let Some(rest) = line.split("listening on http://").nth(1) {
            return (rest.split_whitespace().next().unwrap().parse().unwrap(), rx);
        }
    }
}

/// Whether the binary runs under an emulator, which adds threads of its own.
pub fn emulated() -> bool {
    std::env::var("SMOLCHAT_TEST_RUNNER").is_ok_and(|r| !r.is_empty())
}

/// A server running in this process; shut down on drop.
pub struct TestServer {
    server: Option<Server>,
    pub addr: SocketAddr,
}

/// The default config on 127.0.0.1:0 with two threads, keeping everything in memory, and
/// sender limits out of the way: many tests post as fast as they can on purpose. The tests of
/// the limits (tests/crowd.rs) start from [`Config::default`]'s.
pub fn config() -> Config {
    Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        threads: 2.try_into().unwrap(),
        data_dir: None,
        messages_per_second: 100_000.try_into().unwrap(),
        message_burst: 100_000.try_into().unwrap(),
        ..Config::default()
    }
}

/// [`config`] with the sender limits of a real server.
pub fn config_with_sender_limits() -> Config {
    let defaults = Config::default();
    Config {
        messages_per_second: defaults.messages_per_second,
        message_burst: defaults.message_burst,
        ..config()
    }
}

/// A fresh, empty directory for one test's data.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("smolchat-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Binds 127.0.0.1:0 and starts a server with `config` on it.
pub fn start(config: Config) -> TestServer {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let server = Server::start(listener, &config).expect("start server");
    let addr = server.local_addr();
    TestServer {
        server: Some(server),
        addr,
    }
}

impl TestServer {
    /// Stops the server; true if every client closed in time.
    pub fn shutdown(mut self) -> bool {
        let server = self.server.take().unwrap();
        smol::block_on(server.shutdown())
    }

    pub fn stats(&self) -> smolchat::Snapshot {
        self.server.as_ref().unwrap().stats()
    }

    /// Reloads the running server with `config` (what SIGHUP does with the re-read file).
    pub fn reload(&self, config: &Config) -> smolchat::Reloaded {
        self.server.as_ref().unwrap().reload(config)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            smol::block_on(server.shutdown());
        }
    }
}

/// Awaits `future`, failing the test if it takes longer than [`STEP`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    or(future, async {
        Timer::after(STEP).await;
        panic!("timed out: {what}");
    })
    .await
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }
}

/// Sends `request` as-is on a new connection and reads the response until the server closes.
pub async fn raw_request(addr: SocketAddr, request: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    within("reading an HTTP response", stream.read_to_end(&mut bytes))
        .await
        .unwrap();
    parse_reply(&bytes)
}

/// Reads from `stream` until what has arrived contains `marker` (the connection stays open);
/// returns all of it. Fails the test if the connection closes first or a read takes too long.
pub async fn read_until(stream: &mut TcpStream, marker: &str, what: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 1024];
    while !String::from_utf8_lossy(&bytes).contains(marker) {
        let n = within(what, stream.read(&mut chunk)).await.unwrap();
        assert!(n > 0, "connection closed before {what}");
        bytes.extend_from_slice(&chunk[..n]);
    }
    bytes
}

/// Sends `request` and returns the status of the first final response, reading only its head
/// (for upgrades, whose connection stays open).
pub async fn status_of(addr: SocketAddr, request: String) -> u16 {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.unwrap();
    let bytes = read_until(&mut stream, "\r\n\r\n", "a response head").await;
    String::from_utf8_lossy(&bytes)
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// A `GET path` request with extra header lines, keeping the connection open.
pub fn get_request(addr: SocketAddr, path: &str, extra: &[&str]) -> String {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for line in extra {
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request
}

/// Parses one response (the last, if a `100 Continue` came first).
pub fn parse_reply(bytes: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(bytes);
    let mut rest: &str = &text;
    while rest.starts_with("HTTP/1.1 100") {
        rest = &rest[rest.find("\r\n\r\n").unwrap() + 4..];
    }
    let (head, _) = rest.split_once("\r\n\r\n").expect("a complete head");
    let body_start = bytes.len() - (rest.len() - head.len() - 4);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    Reply {
        status,
        headers,
        body: bytes[body_start..].to_vec(),
    }
}

/// `GET path` with the given extra header lines, `Connection: close`.
pub async fn get(addr: SocketAddr, path: &str, extra: &[&str]) -> Reply {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for line in extra {
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    raw_request(addr, &request).await
}

/// Signs in through the form; returns the `Cookie` header line that carries the session.
pub async fn sign_in(addr: SocketAddr, name: &str, passcode: &str) -> String {
    let reply = post_login(addr, name, passcode, "/").await;
    assert_eq!(reply.status, 303, "sign-in refused: {}", reply.text());
    session_cookie(&reply)
}

/// Posts the sign-in form.
pub async fn post_login(addr: SocketAddr, name: &str, passcode: &str, next: &str) -> Reply {
    let body = format!(
        "name={}&passcode={}&next={}",
        form_encode(name),
        form_encode(passcode),
        form_encode(next)
    );
    let request = format!(
        "POST /login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw_request(addr, &request).await
}

/// The `Cookie:` header line for the session a response sets.
pub fn session_cookie(reply: &Reply) -> String {
    let set = reply.header("set-cookie").expect("a Set-Cookie header");
    format!("Cookie: {}", set.split(';').next().unwrap())
}

fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Opens a WebSocket to `path` with extra request headers (e.g. a session cookie).
pub async fn try_ws_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, tungstenite::Error> {
    use async_tungstenite::tungstenite::client::IntoClientRequest;
    let stream = TcpStream::connect(addr).await?;
    let mut request = format!("ws://{addr}{path}").into_client_request()?;
    for (name, value) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let (ws, _) = async_tungstenite::client_async(request, stream).await?;
    Ok(ws)
}

/// Opens a WebSocket to `path` (e.g. `/ws/lobby?name=ann`).
pub async fn try_ws(addr: SocketAddr, path: &str) -> Result<Ws, tungstenite::Error> {
    let stream = TcpStream::connect(addr).await?;
    let url = format!("ws://{addr}{path}");
    let (ws, _) = async_tungstenite::client_async(url, stream).await?;
    Ok(ws)
}

/// Opens a WebSocket, failing the test if it cannot.
pub async fn ws(addr: SocketAddr, path: &str) -> Ws {
    within("WebSocket handshake", try_ws(addr, path))
        .await
        .unwrap_or_else(|e| panic!("WebSocket to {path}: {e}"))
}

/// Joins `room` as `name` (by `?name=`), reads the welcome, any history, and its own join.
pub async fn join(addr: SocketAddr, room: &str, name: &str) -> Ws {
    let ws = ws(addr, &format!("/ws/{room}?name={name}")).await;
    expect_welcome(ws, name).await
}

/// Reads the welcome (checking the name), any history, and the client's own join.
pub async fn expect_welcome(mut ws: Ws, name: &str) -> Ws {
    let welcome = next_json(&mut ws).await;
    assert_eq!(
        (welcome["type"].as_str(), welcome["name"].as_str()),
        (Some("welcome"), Some(name))
    );
    // A large room does not announce joins one by one (see `room::presence`).
    if welcome["people"].as_u64().unwrap() > 64 {
        return ws;
    }
    loop {
        let frame = next_json(&mut ws).await;
        if frame["type"] == "join" && frame["name"] == name {
            return ws;
        }
        // History: messages and shared files.
        assert!(
            frame["type"] == "message" || frame["type"] == "file",
            "unexpected {frame}"
        );
    }
}

/// The next text frame, parsed; skips pings and pongs.
pub async fn next_json(ws: &mut Ws) -> serde_json::Value {
    loop {
        match within("next frame", ws.next()).await {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Reads until the next chat message (skipping joins and leaves).
pub async fn next_message(ws: &mut Ws) -> serde_json::Value {
    loop {
        let value = next_json(ws).await;
        if value["type"] == "message" {
            return value;
        }
    }
}

/// Sends `{"text": text}`.
pub async fn say(ws: &mut Ws, text: &str) {
    let frame = serde_json::json!({ "text": text }).to_string();
    ws.send(Message::text(frame)).await.expect("send");
}

/// Reads until the server's close frame; returns its code and reason. Skips other frames.
pub async fn close_frame(ws: &mut Ws) -> (u16, String) {
    loop {
        match within("close frame", ws.next()).await {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string());
            }
            Some(Ok(Message::Close(None))) => return (1005, String::new()),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// Signs in as `name` (with `passcode`) and joins `room`; returns the socket and the cookie.
pub async fn enter(addr: SocketAddr, room: &str, name: &str, passcode: &str) -> (Ws, String) {
    let cookie = sign_in(addr, name, passcode).await;
    let value = cookie.trim_start_matches("Cookie: ").to_owned();
    (tab(addr, room, &value, name).await, value)
}

/// Another tab of the session in `cookie`, in `room`, past its welcome.
pub async fn tab(addr: SocketAddr, room: &str, cookie: &str, name: &str) -> Ws {
    let ws = within(
        "joining",
        try_ws_with(addr, &format!("/ws/{room}"), &[("Cookie", cookie)]),
    )
    .await
    .expect("WebSocket refused");
    expect_welcome(ws, name).await
}

pub async fn act(ws: &mut Ws, action: serde_json::Value) {
    ws.send(Message::text(action.to_string()))
        .await
        .expect("send");
}

/// Reads until a frame of type `kind`.
pub async fn next_of(ws: &mut Ws, kind: &str) -> serde_json::Value {
    loop {
        let frame = next_json(ws).await;
        if frame["type"] == kind {
            return frame;
        }
    }
}

/// Says `text` and returns its id, as the speaker sees it come back (after others' words).
pub async fn said(ws: &mut Ws, text: &str) -> u64 {
    say(ws, text).await;
    loop {
        let message = next_message(ws).await;
        if message["text"] == text {
            return message["id"].as_u64().unwrap();
        }
    }
}

/// Joins by `?name=` (and `?since=`) and returns the ids replayed before the own join.
pub async fn replayed(addr: SocketAddr, room: &str, name: &str, since: Option<u64>) -> Vec<u64> {
    let since = since.map_or(String::new(), |id| format!("&since={id}"));
    let mut ws = ws(addr, &format!("/ws/{room}?name={name}{since}")).await;
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    let mut ids = Vec::new();
    loop {
        let frame = next_json(&mut ws).await;
        match frame["type"].as_str() {
            Some("message") => ids.push(frame["id"].as_u64().unwrap()),
            Some("join") if frame["name"] == name => return ids,
            _ => {}
        }
    }
}

/// A GIF header saying 3 x 2 pixels, then `fill` bytes.
pub fn gif(fill: usize) -> Vec<u8> {
    let mut bytes = b"GIF89a".to_vec();
    bytes.extend_from_slice(&[3, 0, 2, 0, 0, 0, 0]);
    bytes.resize(13 + fill, 0x3b);
    bytes
}

/// Signs in as `name` and takes a seat in `room`; returns the cookie line and the socket.
pub async fn seated(addr: SocketAddr, name: &str, room: &str) -> (String, Ws) {
    let cookie = sign_in(addr, name, "").await;
    let value = cookie.trim_start_matches("Cookie: ").to_owned();
    let ws = within(
        "joining",
        try_ws_with(addr, &format!("/ws/{room}"), &[("Cookie", &value)]),
    )
    .await
    .unwrap();
    (cookie, expect_welcome(ws, name).await)
}

/// POSTs `body` to `path` with the cookie line `cookie` (an upload); the answer.
pub async fn post(addr: SocketAddr, path: &str, cookie: &str, body: &[u8]) -> Reply {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{cookie}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (and close) before taking the body.
    let _ = stream.write_all(body).await;
    let mut bytes = Vec::new();
    let _ = within("an upload's answer", stream.read_to_end(&mut bytes)).await;
    parse_reply(&bytes)
}

/// The answer's body as JSON.
pub fn json(reply: &Reply) -> serde_json::Value {
    serde_json::from_slice(&reply.body).unwrap_or_else(|_| panic!("{}", reply.text()))
}

/// Reads until the next `file` frame.
pub async fn next_file(ws: &mut Ws) -> serde_json::Value {
    loop {
        let frame = next_json(ws).await;
        if frame["type"] == "file" {
            return frame;
        }
    }
}
