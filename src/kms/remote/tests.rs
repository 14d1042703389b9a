//! The client's retry, time-limit and error rules, against a socket that answers canned HTTP
//! (the real server is exercised in `tests/remote.rs`).

use super::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn creds() -> Credentials {
    Credentials {
        key: "EXOtest".into(),
        secret: SecretBytes::new(b"secret".to_vec()),
    }
}

/// Reads one request (head and body) and returns its head.
fn read_request(stream: &TcpStream) -> Option<String> {
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some(head)
}

/// Serves `answers` in turn (status, body), one per request, counting requests.
fn canned(answers: Vec<(u16, &'static str)>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/v2", listener.local_addr().expect("addr"));
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        let mut answers = answers.into_iter();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            while let Some(head) = read_request(&stream) {
                assert!(head.contains("authorization: EXO2-HMAC-SHA256 credential=EXOtest"));
                seen.fetch_add(1, Ordering::SeqCst);
                let Some((status, body)) = answers.next() else {
                    return;
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        }
    });
    (url, count)
}

const PROBLEM_DISABLED: &str =
    r#"{"type":"about:blank","title":"Key is Disabled","status":400,"detail":"key k is disabled"}"#;
const UNAVAILABLE: &str = r#"{"title":"Service Unavailable","status":503,"detail":"later"}"#;

#[test]
fn refused_connections_fail_after_three_quick_attempts() {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let kms = RemoteKms::new(&format!("http://127.0.0.1:{port}/v2"), creds()).expect("endpoint");
    let started = Instant::now();
    let err = kms.get_key(Uuid::new_v4()).unwrap_err();
    assert_eq!(err.retry(), crate::kms::Retry::Yes, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("1 endpoint tried, 3 attempts in ") && text.contains(" s, 0 requests sent"),
        "{text}"
    );
    assert!(text.contains("Connection refused"), "{text}");
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(started.elapsed() < http::MAX_CALL_TIME);
}

#[test]
fn refusals_are_not_retried() {
    let (url, count) = canned(vec![(400, PROBLEM_DISABLED), (400, PROBLEM_DISABLED)]);
    let kms = RemoteKms::new(&url, creds()).expect("endpoint");
    let err = kms.decrypt(Uuid::new_v4(), b"blob", None).unwrap_err();
    assert_eq!(err.refusal(), Some(crate::kms::Refusal::KeyDisabled));
    assert_eq!(err.to_string(), "Key is Disabled: key k is disabled");
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[test]
fn server_trouble_is_retried_then_succeeds() {
    let (url, count) = canned(vec![
        (503, UNAVAILABLE),
        (503, UNAVAILABLE),
        (200, r#"{"plaintext":"AAEC"}"#),
    ]);
    let kms = RemoteKms::new(&url, creds()).expect("endpoint");
    let plain = kms
        .decrypt(Uuid::new_v4(), b"blob", Some(b"ctx"))
        .expect("third try");
    assert_eq!(plain.expose_secret(), &[0, 1, 2]);
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

#[test]
fn server_trouble_ends_after_three_attempts_and_create_is_not_repeated() {
    let answers = vec![(503, UNAVAILABLE); 4];
    let (url, count) = canned(answers.clone());
    let kms = RemoteKms::new(&url, creds()).expect("endpoint");
    let err = kms.list_keys().unwrap_err();
    assert!(err.to_string().contains("503 Service Unavailable"), "{err}");
    assert!(
        err.to_string().contains("1 endpoint tried, 3 attempts"),
        "{err}"
    );
    assert!(
        matches!(err, KmsError::Unavailable { status: 503, .. }),
        "{err}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 3);

    let (url, count) = canned(answers);
    let kms = RemoteKms::new(&url, creds()).expect("endpoint");
    let request = wire::CreateKeyRequest {
        name: "n".into(),
        description: None,
        usage: None,
        multi_zone: false,
    };
    assert!(kms.create_key(&request).is_err());
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[test]
fn a_silent_server_is_bounded_by_the_attempt_timeout() {
    // Accepts connections and never answers; counts the requests it read.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/v2", listener.local_addr().expect("addr"));
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            if read_request(&stream).is_some() {
                seen.fetch_add(1, Ordering::SeqCst);
            }
            held.push(stream);
        }
    });
    let kms = RemoteKms::new(&url, creds()).expect("endpoint");
    let started = Instant::now();
    let err = kms.encrypt(Uuid::new_v4(), b"x", None).unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(started.elapsed() <= http::MAX_CALL_TIME + Duration::from_secs(1));
    // The count says what happened: as many attempts and requests as the server read.
    let n = requests.load(Ordering::SeqCst);
    assert!(n >= 1, "{err}");
    let (attempts, sent) = if n == 1 {
        ("1 attempt".to_string(), "1 request sent".to_string())
    } else {
        (format!("{n} attempts"), format!("{n} requests sent"))
    };
    let text = err.to_string();
    assert!(
        text.contains(&attempts) && text.contains(&sent),
        "{n}: {text}"
    );

    // rotate must not happen twice: one request, and the message says one.
    let kms = RemoteKms::new(&url, creds()).expect("endpoint");
    let before = requests.load(Ordering::SeqCst);
    let err = kms.rotate_key(Uuid::new_v4()).unwrap_err();
    assert_eq!(requests.load(Ordering::SeqCst), before + 1, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("1 endpoint tried, 1 attempt in ") && text.contains("1 request sent"),
        "{text}"
    );
}

/// A port nothing listens on.
fn closed_port_url() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    format!("http://127.0.0.1:{port}/v2")
}

const CIPHERTEXT: &str = r#"{"ciphertext":"AAEC"}"#;

#[test]
fn a_refused_connection_moves_on_at_once_and_is_logged_once() {
    let closed = closed_port_url();
    let (good, count) = canned(vec![(200, CIPHERTEXT), (200, CIPHERTEXT)]);
    let kms = RemoteKms::new(&format!("{closed},{good}"), creds()).expect("endpoints");
    let log = crate::captured_log::CapturedLog::default();
    let started = Instant::now();
    let blob = log.capture(|| kms.encrypt(Uuid::new_v4(), b"x", None));
    assert_eq!(blob.expect("the second endpoint answers"), [0, 1, 2]);
    // No pause before the move: well under the first backoff pause.
    assert!(
        started.elapsed() < http::BACKOFF.first,
        "{:?}",
        started.elapsed()
    );
    let moves = log.lines_with("; trying ");
    assert_eq!(moves.len(), 1, "{}", log.text());
    assert!(moves[0].contains("WARN"), "{}", moves[0]);
    assert!(
        moves[0].contains(&format!(
            "KMS endpoint {closed} failed (the KMS is unreachable"
        )) && moves[0].contains(&format!("; trying {good}")),
        "{}",
        moves[0]
    );
    assert!(!log.text().contains("secret"), "{}", log.text());
    // Sticky: the next call goes to the endpoint that answered, and logs no move.
    let log = crate::captured_log::CapturedLog::default();
    log.capture(|| kms.encrypt(Uuid::new_v4(), b"x", None))
        .expect("second call");
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert!(log.lines_with("; trying ").is_empty(), "{}", log.text());
}

#[test]
fn server_trouble_moves_on_and_the_failed_server_cools_down() {
    let (bad, bad_count) = canned(vec![(503, UNAVAILABLE); 4]);
    let (good, good_count) = canned(vec![(200, CIPHERTEXT); 4]);
    let kms = RemoteKms::new(&format!("{bad},{good}"), creds()).expect("endpoints");
    for _ in 0..3 {
        kms.encrypt(Uuid::new_v4(), b"x", None).expect("answered");
    }
    assert_eq!(bad_count.load(Ordering::SeqCst), 1);
    assert_eq!(good_count.load(Ordering::SeqCst), 3);
}

#[test]
fn an_answer_that_judged_the_request_never_moves_on() {
    for (status, problem) in [
        (400, PROBLEM_DISABLED),
        (403, r#"{"title":"Forbidden","status":403,"detail":"no"}"#),
        (
            429,
            r#"{"title":"Too Many Requests","status":429,"detail":"slow"}"#,
        ),
        (
            404,
            r#"{"title":"Not Found","status":404,"detail":"no route"}"#,
        ),
    ] {
        let (first, first_count) = canned(vec![(status, problem); 3]);
        let (second, second_count) = canned(vec![(200, CIPHERTEXT); 3]);
        let kms = RemoteKms::new(&format!("{first},{second}"), creds()).expect("endpoints");
        let err = kms.encrypt(Uuid::new_v4(), b"x", None).unwrap_err();
        assert_eq!(second_count.load(Ordering::SeqCst), 0, "{status}: {err}");
        // 429 is tried again on the same server (three times), any other 4xx once.
        let expected = if status == 429 { 3 } else { 1 };
        assert_eq!(
            first_count.load(Ordering::SeqCst),
            expected,
            "{status}: {err}"
        );
    }
}

#[test]
fn create_and_rotate_move_on_only_when_nothing_was_sent() {
    let request = wire::CreateKeyRequest {
        name: "n".into(),
        description: None,
        usage: None,
        multi_zone: false,
    };
    let created = r#"{"id":"00000000-0000-4000-8000-000000000001"}"#;
    // A 503 may come after the server acted: no second server sees it.
    let (bad, bad_count) = canned(vec![(503, UNAVAILABLE); 2]);
    let (good, good_count) = canned(vec![(200, created); 2]);
    let kms = RemoteKms::new(&format!("{bad},{good}"), creds()).expect("endpoints");
    let err = kms.create_key(&request).unwrap_err();
    assert!(
        matches!(err, KmsError::Unavailable { status: 503, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("1 endpoint tried, 1 attempt"),
        "{err}"
    );
    // (The canned server serves one connection at a time: close this client's.)
    drop(kms);
    let kms = RemoteKms::new(&format!("{bad},{good}"), creds()).expect("endpoints");
    let err = kms.rotate_key(Uuid::new_v4()).unwrap_err();
    assert!(matches!(err, KmsError::Unavailable { .. }), "{err}");
    assert_eq!(bad_count.load(Ordering::SeqCst), 2);
    assert_eq!(good_count.load(Ordering::SeqCst), 0);

    // A refused connection sent nothing: the next server gets it.
    let closed = closed_port_url();
    let (good, good_count) = canned(vec![(200, created)]);
    let kms = RemoteKms::new(&format!("{closed},{good}"), creds()).expect("endpoints");
    assert!(
        kms.create_key(&request).is_err(),
        "the canned key is not a full key"
    );
    assert_eq!(good_count.load(Ordering::SeqCst), 1);
}

#[test]
fn when_every_endpoint_fails_the_error_says_how_many_were_tried() {
    let (a, b) = (closed_port_url(), closed_port_url());
    let kms = RemoteKms::new(&format!("{a},{b}"), creds()).expect("endpoints");
    let log = crate::captured_log::CapturedLog::default();
    let err = log
        .capture(|| kms.decrypt(Uuid::new_v4(), b"blob", None))
        .unwrap_err();
    assert_eq!(err.retry(), crate::kms::Retry::Yes, "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("the KMS is unreachable: 2 endpoints tried, 6 attempts in ")
            && text.contains(" s, 0 requests sent; the last, POST "),
        "{text}"
    );
    assert!(text.contains("Connection refused"), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    // Every move is one line: a→b, b→a, a→b, b→a, a→b over three rounds.
    assert_eq!(log.lines_with("; trying ").len(), 5, "{}", log.text());

    // Both answer 503: still an Unavailable, naming the tries and the last endpoint.
    let (c, _) = canned(vec![(503, UNAVAILABLE); 3]);
    let (d, _) = canned(vec![(503, UNAVAILABLE); 3]);
    let kms = RemoteKms::new(&format!("{c},{d}"), creds()).expect("endpoints");
    let err = kms.list_keys().unwrap_err();
    assert!(
        matches!(err, KmsError::Unavailable { status: 503, .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("(2 endpoints tried, 6 attempts in ")
            && text.contains("6 requests sent; the last to "),
        "{text}"
    );
}

#[test]
fn garbage_answers_are_plain_errors() {
    let (url, _) = canned(vec![(200, "not json"), (200, r#"{"plaintext":"***"}"#)]);
    let kms = RemoteKms::new(&url, creds()).expect("endpoint");
    let err = kms.get_key(Uuid::new_v4()).unwrap_err();
    assert!(err.to_string().contains("cannot read"), "{err}");
    let err = kms.decrypt(Uuid::new_v4(), b"b", None).unwrap_err();
    assert!(err.to_string().contains("not valid base64"), "{err}");
    assert!(
        matches!(
            err,
            KmsError::Malformed {
                operation: "decrypt",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn released_connections_come_back() {
    let ok = r#"{"ciphertext":"AAEC"}"#;
    let (url, count) = canned(vec![(200, ok), (200, ok)]);
    let kms = RemoteKms::new(&url, creds()).expect("endpoint");
    assert_eq!(
        kms.encrypt(Uuid::new_v4(), b"x", None).expect("first"),
        [0, 1, 2]
    );
    kms.release_connections();
    assert!(kms.servers().clients.is_empty());
    assert_eq!(
        kms.encrypt(Uuid::new_v4(), b"x", None).expect("second"),
        [0, 1, 2]
    );
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[test]
fn rate_limits_are_retried_but_credentials_are_not() {
    const LIMITED: &str = r#"{"title":"Too Many Requests","status":429,"detail":"slow"}"#;
    let (url, count) = canned(vec![(429, LIMITED), (200, r#"{"ciphertext":"AAEC"}"#)]);
    let kms = RemoteKms::new(&url, creds()).expect("endpoint");
    let blob = kms.encrypt(Uuid::new_v4(), b"x", None).expect("second try");
    assert_eq!(blob, [0, 1, 2]);
    assert_eq!(count.load(Ordering::SeqCst), 2);

    const FORBIDDEN: &str = r#"{"title":"Forbidden","status":403,"detail":"no"}"#;
    let (url, count) = canned(vec![(403, FORBIDDEN), (403, FORBIDDEN)]);
    let kms = RemoteKms::new(&url, creds()).expect("endpoint");
    let err = kms.encrypt(Uuid::new_v4(), b"x", None).unwrap_err();
    assert!(matches!(err, KmsError::Unauthorized { .. }), "{err}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[test]
fn an_invalid_ciphertext_is_known_by_its_problem_type() {
    const INVALID: &str = r#"{"type":"urn:kmsfs:problem:invalid-ciphertext","title":"Bad Request","status":400,"detail":"-"}"#;
    const WORDED: &str = r#"{"type":"urn:kmsfs:problem:bad-request","title":"Bad Request","status":400,"detail":"the ciphertext is invalid"}"#;
    let (url, count) = canned(vec![(400, INVALID), (400, WORDED)]);
    let kms = RemoteKms::new(&url, creds()).expect("endpoint");
    let err = kms.decrypt(Uuid::new_v4(), b"blob", None).unwrap_err();
    assert!(matches!(err, KmsError::InvalidCiphertext), "{err}");
    let err = kms.decrypt(Uuid::new_v4(), b"blob", None).unwrap_err();
    assert_eq!(
        err.refusal(),
        Some(crate::kms::Refusal::BadRequest),
        "{err}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[test]
fn answers_without_their_fields_are_malformed() {
    let (url, _) = canned(vec![(200, r#"{"ciphertext":"AAEC"}"#)]);
    let kms = RemoteKms::new(&url, creds()).expect("endpoint");
    let err = kms.decrypt(Uuid::new_v4(), b"b", None).unwrap_err();
    assert!(matches!(err, KmsError::Malformed { .. }), "{err}");
    assert!(err.to_string().contains("plaintext"), "{err}");
}
