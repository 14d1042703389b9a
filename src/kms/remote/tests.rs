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
    assert!(text.contains("after 3 attempt(s)"), "{text}");
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
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/v2", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let kms = RemoteKms::new(&url, creds()).expect("endpoint");
    let started = Instant::now();
    let err = kms.encrypt(Uuid::new_v4(), b"x", None).unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(started.elapsed() <= http::MAX_CALL_TIME + Duration::from_secs(1));
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
    assert!(kms.client.read().expect("lock").is_none());
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
