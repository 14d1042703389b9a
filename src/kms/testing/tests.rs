//! The doubles themselves: the in-memory KMS keeps the keyring's rules, each fault does what it
//! says and nothing more.

use super::*;

fn world() -> (FaultyKms<MemoryKms>, Uuid) {
    let kms = MemoryKms::new();
    let key = kms.test_key("k");
    (FaultyKms::new(kms), key)
}

fn wrap(kms: &dyn KeyService, key: Uuid, ctx: &[u8]) -> Vec<u8> {
    kms.encrypt(key, b"secret", Some(ctx)).expect("encrypt")
}

fn refusal(result: Result<SecretBytes, KmsError>) -> Option<Refusal> {
    result.err().and_then(|e| e.refusal())
}

#[test]
fn memory_kms_opens_only_under_its_own_key_and_context() {
    let (kms, key) = world();
    let other = kms.inner().test_key("other");
    let blob = wrap(&kms, key, b"ctx");
    let plain = kms.decrypt(key, &blob, Some(b"ctx")).expect("decrypt");
    assert_eq!(plain.expose_secret(), b"secret");
    for (id, ctx) in [(key, &b"other ctx"[..]), (other, b"ctx")] {
        assert!(matches!(
            kms.decrypt(id, &blob, Some(ctx)),
            Err(KmsError::InvalidCiphertext)
        ));
    }
    let mut altered = blob.clone();
    *altered.last_mut().expect("a blob has bytes") ^= 1;
    assert!(matches!(
        kms.decrypt(key, &altered, Some(b"ctx")),
        Err(KmsError::InvalidCiphertext)
    ));
}

#[test]
fn memory_kms_disables_enables_and_rotates() {
    let (kms, key) = world();
    let old = wrap(&kms, key, b"ctx");
    kms.disable_key(key).expect("disable");
    assert_eq!(
        refusal(kms.decrypt(key, &old, Some(b"ctx"))),
        Some(Refusal::KeyDisabled)
    );
    kms.enable_key(key).expect("enable");
    kms.rotate_key(key).expect("rotate");
    let new = wrap(&kms, key, b"ctx");
    let version = |blob: &[u8]| super::super::blob::BlobHeader::parse(blob).map(|h| h.version);
    assert_eq!((version(&old), version(&new)), (Some(1), Some(2)));
    for blob in [old, new] {
        assert!(kms.decrypt(key, &blob, Some(b"ctx")).is_ok());
    }
    assert_eq!(
        refusal(kms.decrypt(Uuid::new_v4(), b"x", None)),
        Some(Refusal::KeyNotFound)
    );
}

#[test]
fn a_fault_on_one_operation_leaves_the_others_and_every_call_is_counted() {
    let (kms, key) = world();
    kms.fail(Op::GenerateDataKey, Fault::Unavailable);
    let blob = wrap(&kms, key, b"ctx");
    assert!(matches!(
        kms.generate_data_key(key, DataKeySpec::Aes256, None),
        Err(KmsError::Unreachable { .. })
    ));
    assert!(kms.decrypt(key, &blob, Some(b"ctx")).is_ok());
    assert_eq!(kms.calls(Op::GenerateDataKey), 1);
    assert_eq!(kms.calls(Op::Encrypt), 1);
    assert_eq!(kms.calls(Op::Decrypt), 1);
    assert_eq!(kms.total_calls(), 3);
    kms.heal();
    assert!(
        kms.generate_data_key(key, DataKeySpec::Aes256, None)
            .is_ok()
    );
}

#[test]
fn a_predicate_fails_the_decrypt_of_one_ciphertext_only() {
    let (kms, key) = world();
    let (doomed, spared) = (wrap(&kms, key, b"a"), wrap(&kms, key, b"b"));
    let aim = doomed.clone();
    kms.fail_when(
        move |call| call.ciphertext == Some(&aim[..]),
        Fault::KeyDisabled,
    );
    assert_eq!(
        refusal(kms.decrypt(key, &doomed, Some(b"a"))),
        Some(Refusal::KeyDisabled)
    );
    assert!(kms.decrypt(key, &spared, Some(b"b")).is_ok());
}

#[test]
fn every_third_call_fails() {
    let (kms, key) = world();
    kms.fail_every(3, Fault::Forbidden);
    let failed: Vec<bool> = (0..7).map(|_| kms.get_key(key).is_err()).collect();
    assert_eq!(failed, [false, false, true, false, false, true, false]);
}

#[test]
fn a_delay_slows_every_call() {
    let (kms, key) = world();
    kms.set_delay(Duration::from_millis(30));
    let start = Instant::now();
    kms.get_key(key).expect("get");
    kms.list_keys().expect("list");
    assert!(start.elapsed() >= Duration::from_millis(60));
}

#[test]
fn a_hung_call_waits_for_its_release_and_others_pass() {
    let (kms, key) = world();
    let gate = kms.hang_when(|call| call.op == Op::GetKey);
    std::thread::scope(|scope| {
        let hung = scope.spawn(|| kms.get_key(key));
        assert!(
            gate.wait_held(1, Duration::from_secs(5)),
            "the call reached the gate"
        );
        std::thread::sleep(Duration::from_millis(20));
        assert!(!hung.is_finished(), "held until released");
        assert!(kms.list_keys().is_ok(), "other calls pass meanwhile");
        gate.release();
        assert!(hung.join().expect("no panic").is_ok());
    });
    assert!(!gate.wait_held(2, Duration::from_millis(1)));
}
