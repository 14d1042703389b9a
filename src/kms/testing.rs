//! KMS doubles for unit tests: [`MemoryKms`], the keyring's rules in memory (real keys, real
//! AEAD, so a wrong key or context fails as the real backends do), and [`FaultyKms`], a wrapper
//! around any [`KeyService`] that delays, fails or holds the calls a test chooses and counts
//! every call by operation.
//!
//! A test builds the filesystem over `Arc<FaultyKms>` (as an `Arc<dyn KeyService>`), keeps a
//! clone of the `Arc`, and changes the faults while the filesystem runs.

use super::keyring::Keyring;
use super::{
    Applied, DataKey, DataKeySpec, KeyService, KmsError, KmsKey, Refusal, RotationConfig,
    RotationEntry, wire,
};
use crate::crypto::SecretBytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use uuid::Uuid;

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test double holds no invariant a panicking holder could break half-way.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The keyring's rules over keys held in memory: nothing is written anywhere.
pub struct MemoryKms {
    keyring: Mutex<Keyring>,
}

impl Default for MemoryKms {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryKms {
    /// An empty KMS of zone `test`.
    pub fn new() -> Self {
        MemoryKms {
            keyring: Mutex::new(Keyring::new("test")),
        }
    }

    /// Makes an enabled key named `name` and returns its id.
    pub fn test_key(&self, name: &str) -> Uuid {
        let request = wire::CreateKeyRequest {
            name: name.into(),
            description: None,
            usage: None,
            multi_zone: false,
        };
        self.create_key(&request)
            .expect("BUG: a test key name is valid and not taken")
            .id
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn read<T>(&self, op: impl FnOnce(&Keyring, OffsetDateTime) -> T) -> T {
        op(&locked(&self.keyring), Self::now())
    }

    fn change<T>(&self, op: impl FnOnce(&mut Keyring, OffsetDateTime) -> T) -> T {
        op(&mut locked(&self.keyring), Self::now())
    }
}

impl KeyService for MemoryKms {
    fn create_key(&self, request: &wire::CreateKeyRequest) -> Result<KmsKey, KmsError> {
        self.change(|k, now| k.create_key(request, now))
    }

    fn list_keys(&self) -> Result<Vec<KmsKey>, KmsError> {
        self.read(|k, now| Ok(k.list_keys(now)))
    }

    fn get_key(&self, id: Uuid) -> Result<KmsKey, KmsError> {
        self.read(|k, now| k.get_key(id, now))
    }

    fn rotate_key(&self, id: Uuid) -> Result<RotationConfig, KmsError> {
        self.change(|k, now| k.rotate_key(id, now))
    }

    fn enable_key(&self, id: Uuid) -> Result<Applied, KmsError> {
        self.change(|k, now| k.enable_key(id, now))
    }

    fn disable_key(&self, id: Uuid) -> Result<Applied, KmsError> {
        self.change(|k, now| k.disable_key(id, now))
    }

    fn enable_rotation(&self, id: Uuid, days: Option<i64>) -> Result<RotationConfig, KmsError> {
        self.change(|k, now| k.enable_rotation(id, days, now))
    }

    fn disable_rotation(&self, id: Uuid) -> Result<RotationConfig, KmsError> {
        self.change(|k, now| k.disable_rotation(id, now))
    }

    fn schedule_deletion(&self, id: Uuid, days: Option<i64>) -> Result<OffsetDateTime, KmsError> {
        self.change(|k, now| k.schedule_deletion(id, days, now))
    }

    fn cancel_deletion(&self, id: Uuid) -> Result<Applied, KmsError> {
        self.change(|k, now| k.cancel_deletion(id, now))
    }

    fn list_rotations(&self, id: Uuid) -> Result<Vec<RotationEntry>, KmsError> {
        self.read(|k, now| k.list_rotations(id, now))
    }

    fn encrypt(&self, id: Uuid, plain: &[u8], ctx: Option<&[u8]>) -> Result<Vec<u8>, KmsError> {
        self.read(|k, now| k.encrypt(id, plain, ctx, now))
    }

    fn decrypt(
        &self,
        id: Uuid,
        ciphertext: &[u8],
        ctx: Option<&[u8]>,
    ) -> Result<SecretBytes, KmsError> {
        self.read(|k, now| k.decrypt(id, ciphertext, ctx, now))
    }

    fn generate_data_key(
        &self,
        id: Uuid,
        spec: DataKeySpec,
        ctx: Option<&[u8]>,
    ) -> Result<DataKey, KmsError> {
        self.read(|k, now| k.generate_data_key(id, spec, ctx, now))
    }

    fn re_encrypt(
        &self,
        source: Uuid,
        ciphertext: &[u8],
        source_ctx: Option<&[u8]>,
        destination: Uuid,
        destination_ctx: Option<&[u8]>,
    ) -> Result<Vec<u8>, KmsError> {
        self.read(|k, now| {
            k.re_encrypt(
                source,
                ciphertext,
                source_ctx,
                destination,
                destination_ctx,
                now,
            )
        })
    }
}

/// An operation of [`KeyService`], to count calls and aim faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `create-kms-key`
    CreateKey,
    /// `list-kms-keys`
    ListKeys,
    /// `get-kms-key`
    GetKey,
    /// `rotate-kms-key`
    RotateKey,
    /// `enable-kms-key`
    EnableKey,
    /// `disable-kms-key`
    DisableKey,
    /// `enable-kms-key-rotation`
    EnableRotation,
    /// `disable-kms-key-rotation`
    DisableRotation,
    /// `schedule-kms-key-deletion`
    ScheduleDeletion,
    /// `cancel-kms-key-deletion`
    CancelDeletion,
    /// `list-kms-key-rotations`
    ListRotations,
    /// `encrypt`
    Encrypt,
    /// `decrypt`
    Decrypt,
    /// `generate-data-key`
    GenerateDataKey,
    /// `re-encrypt`
    ReEncrypt,
}

const OPS: usize = 15;

/// One call as a fault's predicate sees it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The operation.
    pub op: Op,
    /// The key it names (the source key of `re-encrypt`), if any.
    pub key_id: Option<Uuid>,
    /// The ciphertext it opens (`decrypt`, `re-encrypt`), if any.
    pub ciphertext: Option<&'a [u8]>,
}

/// The error a fault makes a call fail with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The KMS cannot be reached (a retry may succeed).
    Unavailable,
    /// The key is disabled.
    KeyDisabled,
    /// There is no such key.
    KeyNotFound,
    /// The ciphertext does not open under this key and context.
    InvalidCiphertext,
    /// The credentials are refused.
    Forbidden,
}

/// The one place a fault becomes a [`KmsError`].
fn injected(fault: Fault) -> KmsError {
    let detail = "injected by the test";
    match fault {
        Fault::Unavailable => KmsError::Unreachable {
            what: detail.into(),
            sent: false,
            source: Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        },
        Fault::KeyDisabled => KmsError::refused(Refusal::KeyDisabled, detail),
        Fault::KeyNotFound => KmsError::refused(Refusal::KeyNotFound, detail),
        Fault::InvalidCiphertext => KmsError::InvalidCiphertext,
        Fault::Forbidden => KmsError::Unauthorized {
            detail: detail.into(),
        },
    }
}

/// A gate that holds the calls a [`FaultyKms::hang_when`] rule catches until the test
/// releases it.
#[derive(Default)]
pub struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    released: bool,
    held: u64,
}

impl Gate {
    /// Lets every held call and every later one through.
    pub fn release(&self) {
        locked(&self.state).released = true;
        self.changed.notify_all();
    }

    /// Calls held (or let through since) so far.
    pub fn held(&self) -> u64 {
        locked(&self.state).held
    }

    /// Waits until at least `count` calls were held, at most `timeout`; true if they were.
    pub fn wait_held(&self, count: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = locked(&self.state);
        while state.held < count {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    fn hold(&self) {
        let mut state = locked(&self.state);
        state.held += 1;
        self.changed.notify_all();
        while !state.released {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

type Predicate = Box<dyn Fn(&Call<'_>) -> bool + Send + Sync>;

enum Action {
    Fail(Fault),
    Hang(Arc<Gate>),
}

struct Rule {
    matches: Predicate,
    action: Action,
}

#[derive(Default)]
struct Faults {
    delay: Duration,
    rules: Vec<Rule>,
    every: Option<(u64, Fault)>,
}

/// A [`KeyService`] that passes each call to `inner` unless a fault the test set catches it.
///
/// Each call, in order: is counted; waits the delay; is held by the first matching hang rule
/// until its gate opens; fails with the first matching fail rule's error, or with the
/// every-Nth error when its number (counting every call, from 1) is a multiple of N; else goes
/// to `inner`.
pub struct FaultyKms<K> {
    inner: K,
    faults: Mutex<Faults>,
    calls: [AtomicU64; OPS],
    total: AtomicU64,
}

impl<K: KeyService> FaultyKms<K> {
    /// `inner` with no fault yet.
    pub fn new(inner: K) -> Self {
        FaultyKms {
            inner,
            faults: Mutex::new(Faults::default()),
            calls: std::array::from_fn(|_| AtomicU64::new(0)),
            total: AtomicU64::new(0),
        }
    }

    /// The wrapped KMS.
    pub fn inner(&self) -> &K {
        &self.inner
    }

    /// Delays every call by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        locked(&self.faults).delay = delay;
    }

    /// Fails every call of `op` with `fault`.
    pub fn fail(&self, op: Op, fault: Fault) {
        self.fail_when(move |call| call.op == op, fault);
    }

    /// Fails every call `matches` accepts with `fault`.
    pub fn fail_when(
        &self,
        matches: impl Fn(&Call<'_>) -> bool + Send + Sync + 'static,
        fault: Fault,
    ) {
        let rule = Rule {
            matches: Box::new(matches),
            action: Action::Fail(fault),
        };
        locked(&self.faults).rules.push(rule);
    }

    /// Fails every `n`th call (`n` ≥ 1) with `fault`.
    pub fn fail_every(&self, n: u64, fault: Fault) {
        assert!(n >= 1, "BUG: a test asks to fail every 0th call");
        locked(&self.faults).every = Some((n, fault));
    }

    /// Holds every call `matches` accepts until the returned gate is released.
    pub fn hang_when(
        &self,
        matches: impl Fn(&Call<'_>) -> bool + Send + Sync + 'static,
    ) -> Arc<Gate> {
        let gate = Arc::new(Gate::default());
        let rule = Rule {
            matches: Box::new(matches),
            action: Action::Hang(gate.clone()),
        };
        locked(&self.faults).rules.push(rule);
        gate
    }

    /// Removes every fault and the delay (gates already handed out stay as they are).
    pub fn heal(&self) {
        *locked(&self.faults) = Faults::default();
    }

    /// Calls of `op` so far, those that failed included.
    pub fn calls(&self, op: Op) -> u64 {
        self.calls[op as usize].load(Ordering::SeqCst)
    }

    /// Calls of every operation so far.
    pub fn total_calls(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }

    /// Counts the call, then applies the faults in the order of the type's documentation.
    fn enter(&self, call: Call<'_>) -> Result<(), KmsError> {
        self.calls[call.op as usize].fetch_add(1, Ordering::SeqCst);
        let number = self.total.fetch_add(1, Ordering::SeqCst) + 1;
        let (delay, gate) = {
            let faults = locked(&self.faults);
            let gate = faults.rules.iter().find_map(|rule| match &rule.action {
                Action::Hang(gate) if (rule.matches)(&call) => Some(gate.clone()),
                _ => None,
            });
            (faults.delay, gate)
        };
        std::thread::sleep(delay);
        if let Some(gate) = gate {
            gate.hold();
        }
        let faults = locked(&self.faults);
        let failed = faults.rules.iter().find_map(|rule| match rule.action {
            Action::Fail(fault) if (rule.matches)(&call) => Some(fault),
            _ => None,
        });
        let every = faults
            .every
            .filter(|(n, _)| number.is_multiple_of(*n))
            .map(|(_, fault)| fault);
        match failed.or(every) {
            Some(fault) => Err(injected(fault)),
            None => Ok(()),
        }
    }

    fn on(&self, op: Op, key_id: Option<Uuid>) -> Result<(), KmsError> {
        self.enter(Call {
            op,
            key_id,
            ciphertext: None,
        })
    }
}

impl<K: KeyService> KeyService for FaultyKms<K> {
    fn create_key(&self, request: &wire::CreateKeyRequest) -> Result<KmsKey, KmsError> {
        self.on(Op::CreateKey, None)?;
        self.inner.create_key(request)
    }

    fn list_keys(&self) -> Result<Vec<KmsKey>, KmsError> {
        self.on(Op::ListKeys, None)?;
        self.inner.list_keys()
    }

    fn get_key(&self, id: Uuid) -> Result<KmsKey, KmsError> {
        self.on(Op::GetKey, Some(id))?;
        self.inner.get_key(id)
    }

    fn rotate_key(&self, id: Uuid) -> Result<RotationConfig, KmsError> {
        self.on(Op::RotateKey, Some(id))?;
        self.inner.rotate_key(id)
    }

    fn enable_key(&self, id: Uuid) -> Result<Applied, KmsError> {
        self.on(Op::EnableKey, Some(id))?;
        self.inner.enable_key(id)
    }

    fn disable_key(&self, id: Uuid) -> Result<Applied, KmsError> {
        self.on(Op::DisableKey, Some(id))?;
        self.inner.disable_key(id)
    }

    fn enable_rotation(&self, id: Uuid, days: Option<i64>) -> Result<RotationConfig, KmsError> {
        self.on(Op::EnableRotation, Some(id))?;
        self.inner.enable_rotation(id, days)
    }

    fn disable_rotation(&self, id: Uuid) -> Result<RotationConfig, KmsError> {
        self.on(Op::DisableRotation, Some(id))?;
        self.inner.disable_rotation(id)
    }

    fn schedule_deletion(&self, id: Uuid, days: Option<i64>) -> Result<OffsetDateTime, KmsError> {
        self.on(Op::ScheduleDeletion, Some(id))?;
        self.inner.schedule_deletion(id, days)
    }

    fn cancel_deletion(&self, id: Uuid) -> Result<Applied, KmsError> {
        self.on(Op::CancelDeletion, Some(id))?;
        self.inner.cancel_deletion(id)
    }

    fn list_rotations(&self, id: Uuid) -> Result<Vec<RotationEntry>, KmsError> {
        self.on(Op::ListRotations, Some(id))?;
        self.inner.list_rotations(id)
    }

    fn encrypt(&self, id: Uuid, plain: &[u8], ctx: Option<&[u8]>) -> Result<Vec<u8>, KmsError> {
        self.on(Op::Encrypt, Some(id))?;
        self.inner.encrypt(id, plain, ctx)
    }

    fn decrypt(
        &self,
        id: Uuid,
        ciphertext: &[u8],
        ctx: Option<&[u8]>,
    ) -> Result<SecretBytes, KmsError> {
        self.enter(Call {
            op: Op::Decrypt,
            key_id: Some(id),
            ciphertext: Some(ciphertext),
        })?;
        self.inner.decrypt(id, ciphertext, ctx)
    }

    fn generate_data_key(
        &self,
        id: Uuid,
        spec: DataKeySpec,
        ctx: Option<&[u8]>,
    ) -> Result<DataKey, KmsError> {
        self.on(Op::GenerateDataKey, Some(id))?;
        self.inner.generate_data_key(id, spec, ctx)
    }

    fn re_encrypt(
        &self,
        source: Uuid,
        ciphertext: &[u8],
        source_ctx: Option<&[u8]>,
        destination: Uuid,
        destination_ctx: Option<&[u8]>,
    ) -> Result<Vec<u8>, KmsError> {
        self.enter(Call {
            op: Op::ReEncrypt,
            key_id: Some(source),
            ciphertext: Some(ciphertext),
        })?;
        self.inner
            .re_encrypt(source, ciphertext, source_ctx, destination, destination_ctx)
    }

    fn housekeeping(&self) -> Result<Option<String>, KmsError> {
        self.inner.housekeeping()
    }

    fn release_connections(&self) {
        self.inner.release_connections();
    }

    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }
}

#[cfg(test)]
mod tests;
