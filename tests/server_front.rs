//! The front of `kmsfs kms serve` against strangers, over real sockets: connections over a
//! client's cap are closed while other clients are served; a slow head, a slow body and an idle
//! connection are cut; a flood over the total cap gets 503 problem documents (never EMFILE) and
//! the server answers normally after; a second server on one data directory refuses to start.
//!
//! The attackers connect from other loopback addresses (127.0.0.2 and up) than the signed
//! client (127.0.0.1), as other machines would.

mod common;

use common::kms_server::{ServerGuard, connect_from, ok, post};
use serde_json::{Value, json};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const ZONE: &str = "ch-gva-2";

/// A server started with `flags` on a fresh data directory, removed after the server is
/// killed.
struct Front {
    srv: ServerGuard,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Front {
    type Target = ServerGuard;
    fn deref(&self) -> &ServerGuard {
        &self.srv
    }
}

impl std::ops::DerefMut for Front {
    fn deref_mut(&mut self) -> &mut ServerGuard {
        &mut self.srv
    }
}

fn server(flags: &[&str]) -> Front {
    let dir = tempfile::Builder::new()
        .prefix("kmsfs-front-")
        .tempdir()
        .expect("tempdir");
    let srv = ServerGuard::start_in(&dir.path().join("data"), ZONE, "127.0.0.1:0", flags);
    Front { srv, _dir: dir }
}

/// What a connection looks like from the client's side, without waiting.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// Still open, nothing to read.
    Open,
    /// The server sent bytes.
    Answered,
    /// The server closed it (end of file or reset).
    Closed,
}

fn look(stream: &mut TcpStream) -> Seen {
    stream.set_nonblocking(true).expect("nonblocking");
    let mut byte = [0u8; 1];
    let seen = match stream.peek(&mut byte) {
        Ok(0) => Seen::Closed,
        Ok(_) => Seen::Answered,
        Err(e) if e.kind() == ErrorKind::WouldBlock => Seen::Open,
        Err(_) => Seen::Closed,
    };
    stream.set_nonblocking(false).expect("blocking");
    seen
}

/// Waits up to `bound` until `stream` is no longer [`Seen::Open`]; returns what it became.
fn wait_not_open(stream: &mut TcpStream, bound: Duration) -> Seen {
    let deadline = Instant::now() + bound;
    loop {
        let seen = look(stream);
        if seen != Seen::Open || Instant::now() >= deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads an HTTP answer to its end (the server closes after it): status, head, body as JSON.
fn read_answer(stream: &mut TcpStream, bound: Duration) -> (u16, String, Value) {
    stream.set_read_timeout(Some(bound)).expect("timeout");
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) => panic!(
                "no complete answer ({e}); got {:?}",
                String::from_utf8_lossy(&raw)
            ),
        }
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head:?}"));
    (
        status,
        head.to_ascii_lowercase(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// Asserts a problem document of `status` in an answer.
fn assert_problem_answer(answer: &(u16, String, Value), status: u16) {
    let (got, head, body) = answer;
    assert_eq!(*got, status, "head {head:?}, body {body}");
    assert!(
        head.contains("content-type: application/problem+json"),
        "{head}"
    );
    assert_eq!(body["status"], status, "{body}");
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
}

/// A signed round trip (encrypt, then decrypt) through `key`; returns how long it took.
fn signed_round_trip(client: &common::kms_server::KmsClient, key: &str) -> Duration {
    let started = Instant::now();
    let sealed = ok(post(
        client,
        key,
        "encrypt",
        json!({"plaintext": "aGVsbG8="}),
    ));
    let opened = ok(post(
        client,
        key,
        "decrypt",
        json!({"ciphertext": sealed["ciphertext"]}),
    ));
    assert_eq!(opened["plaintext"], "aGVsbG8=");
    started.elapsed()
}

#[test]
fn idle_connections_over_a_clients_cap_are_closed_and_other_clients_are_served() {
    // A long request timeout, so that the 16 kept are not cut while the test counts.
    let srv = server(&[
        "--max-connections-per-client",
        "16",
        "--request-timeout",
        "60",
    ]);
    let client = srv.new_client();
    let key = client.create_key("k");
    // 200 idle connections from one stranger: 16 are kept, the others closed at accept.
    let mut idle: Vec<TcpStream> = (0..200)
        .map(|_| connect_from([127, 0, 0, 2], &srv.addr()).expect("connect"))
        .collect();
    let took = signed_round_trip(&client, &key);
    eprintln!("signed encrypt+decrypt during the idle flood: {took:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut open, mut closed) = (0, 0);
    while Instant::now() < deadline {
        let seen: Vec<Seen> = idle.iter_mut().map(look).collect();
        open = seen.iter().filter(|s| **s == Seen::Open).count();
        closed = seen.iter().filter(|s| **s == Seen::Closed).count();
        if closed >= 184 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!((open, closed), (16, 184), "connections kept and closed");
    // Another stranger address has a cap of its own, and the client still gets answers.
    let mut other = connect_from([127, 0, 0, 3], &srv.addr()).expect("connect");
    assert_eq!(look(&mut other), Seen::Open);
    signed_round_trip(&client, &key);
    assert!(srv.log_text().contains("connection limits"));
}

#[test]
fn a_slow_head_and_an_idle_connection_are_cut_within_the_request_timeout() {
    let srv = server(&["--request-timeout", "2"]);
    // A head sent one byte every 200 ms would take 40 s; the server cuts it.
    let mut slow = connect_from([127, 0, 0, 2], &srv.addr()).expect("connect");
    let head = b"GET /v2/kms-key HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let started = Instant::now();
    let mut cut = false;
    for byte in head {
        if slow.write_all(&[*byte]).is_err() || look(&mut slow) == Seen::Closed {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let cut_after = started.elapsed();
    assert!(cut, "a head trickled for {cut_after:?} was not cut");
    assert!(
        cut_after < Duration::from_secs(15),
        "cut after {cut_after:?}"
    );
    eprintln!("slow head cut after {cut_after:?}");
    // A connection that sent nothing, and one idle after a whole request and its answer.
    let mut silent = connect_from([127, 0, 0, 2], &srv.addr()).expect("connect");
    let mut kept = connect_from([127, 0, 0, 2], &srv.addr()).expect("connect");
    kept.write_all(b"GET /v2/kms-key HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let mut first = [0u8; 12];
    kept.read_exact(&mut first).expect("an answer");
    assert_eq!(&first, b"HTTP/1.1 403", "an unsigned request is refused");
    assert_eq!(
        wait_not_open(&mut silent, Duration::from_secs(15)),
        Seen::Closed
    );
    let mut rest = Vec::new();
    kept.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    // The rest of the 403, then the end of the idle connection.
    assert!(
        kept.read_to_end(&mut rest).is_ok(),
        "the idle keep-alive connection was not closed"
    );
}

#[test]
fn a_body_sent_one_byte_a_second_gets_408() {
    let srv = server(&["--request-timeout", "2"]);
    let client = srv.new_client();
    let key = client.create_key("k");
    let mut slow = connect_from([127, 0, 0, 2], &srv.addr()).expect("connect");
    let body = br#"{"plaintext": "aGVsbG8="}"#;
    write!(
        slow,
        "POST /v2/kms-key/{key}/encrypt HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .expect("send the head");
    let started = Instant::now();
    let mut answered = false;
    for byte in body {
        if slow.write_all(&[*byte]).is_err() {
            break;
        }
        if wait_not_open(&mut slow, Duration::from_secs(1)) != Seen::Open {
            answered = true;
            break;
        }
    }
    assert!(
        answered,
        "a body trickled for {:?} was not cut",
        started.elapsed()
    );
    let answer = read_answer(&mut slow, Duration::from_secs(5));
    eprintln!("slow body answered after {:?}", started.elapsed());
    assert_problem_answer(&answer, 408);
    // The same request at full speed works.
    signed_round_trip(&client, &key);
}

#[test]
fn a_flood_over_the_total_cap_gets_503_and_the_server_answers_after() {
    let srv = server(&[
        "--max-connections",
        "32",
        "--max-connections-per-client",
        "1000",
        "--request-timeout",
        "30",
    ]);
    let client = srv.new_client();
    let key = client.create_key("k");
    // Fill the cap with kept-alive connections from many addresses, each past its first
    // request (so none is closed to make room).
    // One after the other, so that none is still without a request when the next comes.
    let mut flood: Vec<TcpStream> = (0..32u8)
        .map(|i| {
            let mut s = connect_from([127, 0, 1, i + 1], &srv.addr()).expect("connect");
            s.write_all(b"GET /v2/kms-key HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("send");
            assert_eq!(
                wait_not_open(&mut s, Duration::from_secs(10)),
                Seen::Answered
            );
            s
        })
        .collect();
    // Over the cap: a request is answered 503 with Retry-After, then closed.
    for i in 0..20u8 {
        let mut over = connect_from([127, 0, 2, i + 1], &srv.addr()).expect("connect");
        over.write_all(b"GET /v2/kms-key HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("send");
        let answer = read_answer(&mut over, Duration::from_secs(10));
        assert_problem_answer(&answer, 503);
        assert!(answer.1.contains("retry-after: 1"), "{}", answer.1);
    }
    // Hundreds more at once: each is answered 503 or closed, none left hanging.
    let mut more: Vec<TcpStream> = (0..300u16)
        .map(|i| connect_from([127, 0, 3, (i % 250) as u8 + 1], &srv.addr()).expect("connect"))
        .collect();
    for stream in &mut more {
        let seen = wait_not_open(stream, Duration::from_secs(10));
        assert_ne!(seen, Seen::Open, "a connection over the cap was left open");
    }
    drop(more);
    // The flood goes away: the server answers normally.
    flood.clear();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = post(&client, &key, "encrypt", json!({"plaintext": "aGk="}));
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "only 503 while the closes are noticed");
        assert!(Instant::now() < deadline, "still 503 after the flood");
        std::thread::sleep(Duration::from_millis(100));
    }
    signed_round_trip(&client, &key);
    let log = srv.log_text();
    assert!(!log.contains("Too many open files"), "{log}");
}

#[test]
fn more_idle_connections_than_the_total_cap_and_a_new_signed_client_is_still_served() {
    let srv = server(&[
        "--max-connections",
        "32",
        "--max-connections-per-client",
        "1000",
        "--request-timeout",
        "30",
    ]);
    // 100 idle connections from 100 addresses: more than the cap, none sends a request.
    let mut idle: Vec<TcpStream> = (0..100u8)
        .map(|i| connect_from([127, 0, 4, i + 1], &srv.addr()).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // A client that connects only now is served: idle strangers make room.
    let client = srv.new_client();
    let key = client.create_key("k");
    let took = signed_round_trip(&client, &key);
    eprintln!("signed encrypt+decrypt with the cap full of idle connections: {took:?}");
    // Those over the cap are closed (those answered 503 after a 2 s wait for their head).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut open;
    loop {
        open = idle
            .iter_mut()
            .map(look)
            .filter(|s| *s == Seen::Open)
            .count();
        if open <= 32 || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        open <= 32,
        "{open} idle connections still open over a cap of 32"
    );
    let log = srv.log_text();
    assert!(!log.contains("Too many open files"), "{log}");
}

/// A process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_second_server_on_one_data_directory_refuses_to_start() {
    let mut first = server(&[]);
    let client = first.new_client();
    let key = client.create_key("k");
    let pid = first.pid().expect("the first server runs");
    let second = common::kms_server::serve_command(ZONE, &first.data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a second server");
    let mut second = Killed(second);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = second.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the second server keeps running");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    let mut stdout = String::new();
    if let Some(mut err) = second.0.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    if let Some(mut out) = second.0.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    assert_eq!(status.code(), Some(1), "the second server: in use");
    assert!(!stdout.contains("listening on"), "{stdout}");
    let dir = std::fs::canonicalize(&first.data).expect("the data directory");
    assert!(
        stderr.contains(&format!(
            "the data directory {} is in use by another kmsfs kms serve (pid {pid})",
            dir.display()
        )),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one sentence: {stderr}");
    // The first server is unaffected; org create still works beside it.
    assert!(first.is_running());
    signed_round_trip(&client, &key);
    let other = first.new_client();
    other.create_key("k2");
    // Once the first has stopped, the directory is free again.
    assert!(first.stop(), "the first server stops cleanly");
    first.restart();
    signed_round_trip(&client, &key);
}

#[test]
fn over_tls_a_silent_handshake_is_cut_and_a_clients_cap_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = common::kms_server::self_signed_cert(dir.path());
    let (cert_arg, key_arg) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    let srv = server(&[
        "--tls-cert",
        cert_arg,
        "--tls-key",
        key_arg,
        "--request-timeout",
        "2",
        "--max-connections-per-client",
        "8",
    ]);
    // 20 connections that never start a handshake: 12 closed at once, 8 after the timeout.
    let mut silent: Vec<TcpStream> = (0..20)
        .map(|_| connect_from([127, 0, 0, 2], &srv.addr()).expect("connect"))
        .collect();
    let pem = std::fs::read(&cert).expect("cert");
    let client = common::kms_server::KmsClient::with_root_pem(
        &srv.url,
        common::kms_server::create_org(&srv.data),
        Some(&pem),
    );
    let key = client.create_key("k");
    signed_round_trip(&client, &key);
    for stream in &mut silent {
        assert_eq!(
            wait_not_open(stream, Duration::from_secs(15)),
            Seen::Closed,
            "a connection without a handshake was left open"
        );
    }
    signed_round_trip(&client, &key);
}
